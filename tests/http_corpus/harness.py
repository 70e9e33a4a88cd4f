"""A socket-free stand-in for TcpConnection, to drive the Http protocol with bytes.

``FakeConnection.feed(data)`` cuts packages exactly as TcpConnection._feed_packages
does (input -> length -> decode -> on_message), and records what the protocol sends
and whether it closed the connection.
"""
from geventman.protocols import NOTHING
from geventman.protocols.http import Http


class _State:
    def __init__(self, name):
        self.name = name


class FakeConnection:
    max_package_size = 10 << 20
    max_send_buffer_size = 1 << 20
    request_timeout = 0  # no timer in the test process: timeouts are tested end to end

    def __init__(self, on_message=None, worker=None, protocol=Http):
        self.protocol = protocol
        self.worker = worker
        self.on_message = on_message or (lambda connection, request: None)
        self.on_buffer_drain = None
        self.state = _State("ESTABLISHED")
        self.buffer = b""
        self.sent = []
        self.closed = False
        self.bad = False
        self.messages = []
        self.paused = False

    # -- the connection API the protocol uses ----------------------------------------

    def send(self, data, raw=False):
        if self.closed:
            return False
        if not raw:
            data = self.protocol.encode(data, self)
            if not data:
                return None
        self.sent.append(data if isinstance(data, bytes) else data.encode())
        return True

    def close(self, data=None, raw=False):
        if self.closed:
            return
        if data is not None:
            self.send(data, raw)
        self.destroy()

    def destroy(self):
        if not self.closed:
            self.closed = True
            self.state = _State("CLOSED")
            on_close = getattr(self.protocol, "on_close", None)
            if on_close is not None:
                on_close(self)

    def pause_recv(self):
        self.paused = True

    def resume_recv(self):
        self.paused = False
        self.feed(b"")

    def get_send_buffer_size(self):
        return 0

    def get_remote_ip(self):
        return "127.0.0.1"

    def get_remote_port(self):
        return 50000

    def get_local_port(self):
        return 8080

    # -- driving it ----------------------------------------------------------------------

    def feed(self, data):
        """Append ``data`` and cut every complete package; returns the new messages."""
        self.buffer += data
        delivered = []
        while self.buffer and not self.closed and not self.paused:
            length = self.protocol.input(self.buffer, self)
            if self.closed:
                break
            if length is False or (length and length < 0):
                self.bad = True
                self.destroy()
                break
            if not length or len(self.buffer) < length:
                break
            package, self.buffer = self.buffer[:length], self.buffer[length:]
            message = self.protocol.decode(package, self)
            if message is not NOTHING:
                delivered.append(message)
                self.messages.append(message)
                self.on_message(self, message)
        return delivered

    def output(self):
        return b"".join(self.sent)


def parse(data, **settings):
    """Feed one raw request; returns (requests, connection)."""
    connection = FakeConnection()
    for name, value in settings.items():
        setattr(connection, name, value)
    return connection.feed(data), connection


def status_of(data):
    """The status code of the first response in ``data`` (bytes)."""
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
