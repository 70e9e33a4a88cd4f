"""UdpConnection: made for each datagram a udp worker receives.

``send`` answers the datagram's sender with one datagram and returns True when the
whole of it was handed to the kernel; ``close(data)`` only sends. There is no
connection state, no buffering and no on_close, as in Workerman.
"""
from geventman.runtime import statistics


class UdpConnection:
    transport = "udp"
    max_package_size = 65535  # a datagram cannot be longer

    def __init__(self, sock, remote_address, worker=None, protocol=None):
        self._sock = sock
        self._remote_address = remote_address
        self.worker = worker
        self.protocol = protocol

    def send(self, data, raw=False):
        if not raw and self.protocol is not None:
            data = self.protocol.encode(data, self)
            if not data:
                return None
        if isinstance(data, str):
            data = data.encode()
        try:
            return self._sock.sendto(data, self._remote_address) == len(data)
        except OSError:
            statistics["send_fail"] += 1
            return False

    def close(self, data=None, raw=False):
        if data is not None:
            self.send(data, raw)
        return True

    def get_remote_ip(self):
        return self._remote_address[0]

    def get_remote_port(self):
        return self._remote_address[1]

    def get_remote_address(self):
        return "%s:%s" % self._remote_address[:2]

    def get_local_ip(self):
        return self._sock.getsockname()[0]

    def get_local_port(self):
        return self._sock.getsockname()[1]
