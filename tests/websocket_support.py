"""Helpers for the WebSocket tests: frames made and read by hand, a byte sink in place of
a socket for the unit tests (bytes in, bytes out through the real TcpConnection), and
a raw blocking client for the end-to-end tests that need to send bad frames."""
import base64
import os
import socket
import struct

from conftest import SocketClient
from geventman.connection.tcp import TcpConnection
from geventman.protocols._wsframe import apply_mask
from geventman.protocols.websocket import Websocket, accept_key


class Sink:
    """Stands where the socket of a connection would be: keeps what is written."""

    def __init__(self):
        self.data = bytearray()
        self.closed = False

    def send(self, data):
        self.data += data
        return len(data)

    def fileno(self):
        return -1

    def getsockname(self):
        return ("127.0.0.1", 2346)

    def close(self):
        self.closed = True

    def take(self):
        data, self.data = bytes(self.data), bytearray()
        return data


def server_connection(protocol=Websocket, **attributes):
    """A TcpConnection over a Sink that records messages (``.messages``) and closes."""
    sink = Sink()
    connection = TcpConnection(sink, ("127.0.0.1", 50000), None, protocol)
    connection.sink = sink
    connection.messages = []
    connection.closes = 0

    def on_close(conn):
        conn.closes += 1

    connection.on_message = lambda conn, data: conn.messages.append(data)
    connection.on_close = on_close
    for name, value in attributes.items():
        setattr(connection, name, value)
    return connection


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def handshake(key=None, path="/", extra=(), version="13", host="localhost"):
    lines = ["GET %s HTTP/1.1" % path]
    if host:
        lines.append("Host: " + host)
    lines += ["Upgrade: websocket", "Connection: Upgrade",
              "Sec-WebSocket-Key: " + (key or new_key())]
    if version:
        lines.append("Sec-WebSocket-Version: " + version)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_connection(**attributes):
    """A server connection past the handshake, the 101 already taken from its sink."""
    connection = server_connection(**attributes)
    connection._feed(handshake())
    head = connection.sink.take()
    assert head.startswith(b"HTTP/1.1 101 "), head
    return connection


def frame(first, payload=b"", mask=True, length_code=None):
    """A frame as a client sends it (masked unless ``mask`` is False); ``first`` is the
    whole first byte (0x81: FIN + text)."""
    if isinstance(payload, str):
        payload = payload.encode()
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if length_code == 127 or size > 65535:
        header = struct.pack("!BBQ", first, 127 | mask_bit, size)
    elif length_code == 126 or size > 125:
        header = struct.pack("!BBH", first, 126 | mask_bit, size)
    else:
        header = struct.pack("!BB", first, size | mask_bit)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


def parse_frames(data):
    """[(first byte, payload)] of the frames in ``data``; unmasks masked ones."""
    frames = []
    position = 0
    while position < len(data):
        first, second = data[position], data[position + 1]
        size = second & 0x7F
        position += 2
        if size == 126:
            size = struct.unpack("!H", data[position:position + 2])[0]
            position += 2
        elif size == 127:
            size = struct.unpack("!Q", data[position:position + 8])[0]
            position += 8
        key = None
        if second & 0x80:
            key = data[position:position + 4]
            position += 4
        payload = data[position:position + size]
        if len(payload) != size:
            raise ValueError("truncated frame")
        position += size
        frames.append((first, apply_mask(payload, key) if key else payload))
    return frames


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class RawClient(SocketClient):
    """A blocking WebSocket client that sends whatever bytes it is given, for tests."""

    def __init__(self, port, path="/", extra=(), timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        key = new_key()
        self.sock.sendall(handshake(key, path, extra, host="127.0.0.1:%d" % port))
        head = self._read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 ") or accept_key(key).encode() not in head:
            raise AssertionError("handshake failed: %r" % head)
        self.head = head

    def _read_until(self, marker):
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed; buffered %r" % self.buffer)
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def _read_exactly(self, size):
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed; buffered %r" % self.buffer)
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, first, payload=b"", mask=True):
        self.sock.sendall(frame(first, payload, mask))

    def recv_frame(self):
        """(first byte, payload) of the next frame from the server (never masked)."""
        first, second = self._read_exactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._read_exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._read_exactly(8))[0]
        assert not second & 0x80, "the server masked a frame"
        return first, self._read_exactly(size)

    def ask(self, text):
        self.send(0x81, text)
        first, payload = self.recv_frame()
        assert first == 0x81, hex(first)
        return payload.decode()
