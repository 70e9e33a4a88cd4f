"""ws:// and wss:// : the client side of RFC 6455, for
``AsyncTcpConnection("ws://host:port/path")``. ``wss://`` is the same over TLS (the
connection's transport "ssl"; ``ws://`` with ``transport = "ssl"`` as in Workerman too).

Right after the TCP connect, ``Ws.on_connect`` sends the opening handshake (section
4.1): a random 16-byte key, ``connection.headers`` (dict, list of lines or pairs, or
a string), ``connection.websocket_origin``, and the subprotocols in
``connection.websocket_client_protocol`` (a string or a list). The answer must be a
101 with the matching ``Sec-WebSocket-Accept`` (and only an extension or subprotocol
that was offered); otherwise ``on_error(connection, 1, reason)`` runs and the
connection closes, so an ``on_close`` that calls ``reconnect()`` tries again. Then
``on_websocket_connect(connection, response)`` runs and what was sent before is
flushed. Frames out are masked with a fresh random key each; frames in must not be.
``connection.websocket_ping_interval`` (seconds) sends a ping that often;
``connection.websocket_deflate = True`` offers permessage-deflate.
"""
import base64
import os

from geventman.log import log
from geventman.protocols import NOTHING, _wsdeflate, split_address
from geventman.protocols._wsframe import (
    BINARY_TYPE_ARRAYBUFFER, BINARY_TYPE_BLOB, CLOSING, HANDSHAKE, NORMAL, OPEN, PING, Session,
    build, call_hook, close_frame, flush_pending, frame_length, message_frame,
    queue_before_open, receive)
from geventman.protocols.websocket import (MAX_HEAD_SIZE, SERVER, accept_key, header_lines,
                                           header_tokens)
from geventman.runtime import call
from geventman.timer import Timer

CONNECT_FAIL = 1  # on_error code, as geventman.connection.tcp.CONNECT_FAIL (Workerman's)


def _session(connection):
    session = getattr(connection, "websocket", None)
    if session is None:
        session = connection.websocket = Session(client=True)
        if getattr(connection, "websocket_type", None) is None:
            connection.websocket_type = None
    return session


class Ws:
    """The ws:// client protocol (static methods, Workerman's contract)."""

    BINARY_TYPE_BLOB = BINARY_TYPE_BLOB
    BINARY_TYPE_ARRAYBUFFER = BINARY_TYPE_ARRAYBUFFER

    @staticmethod
    def on_connect(connection):
        """Runs right after the TCP connect, before the application's on_connect."""
        session = _session(connection)
        if session.phase is not HANDSHAKE:  # left over from an earlier connection
            session = connection.websocket = Session(client=True)
        session.key = base64.b64encode(os.urandom(16)).decode()
        connection.send(handshake_request(connection, session.key), True)

    @staticmethod
    def input(buffer, connection):
        session = _session(connection)
        if session.phase is OPEN:
            return frame_length(buffer, connection, session)
        if session.phase is HANDSHAKE:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                return end + 4
            if len(buffer) > MAX_HEAD_SIZE:
                _handshake_failed(connection, "handshake response over %d bytes"
                                  % MAX_HEAD_SIZE)
        return 0

    @staticmethod
    def decode(package, connection):
        session = connection.websocket
        if session.phase is OPEN:
            return receive(package, connection, session)
        if session.phase is HANDSHAKE:
            return _handshake_response(package, connection, session)
        return NOTHING

    @staticmethod
    def encode(data, connection):
        session = _session(connection)
        if session.phase is OPEN:
            return message_frame(data, connection, session)
        if session.phase is HANDSHAKE:
            return queue_before_open(data, connection, session)
        return b""

    @staticmethod
    def before_close(connection):
        session = getattr(connection, "websocket", None)
        if session is not None and session.phase is OPEN and not session.close_sent:
            session.close_sent = True
            session.phase = CLOSING
            connection.send(close_frame(NORMAL, "", True), True)

    @staticmethod
    def on_close(connection):
        """Forget this connection's handshake, so that ``reconnect()`` starts afresh;
        what was queued for a handshake that never completed waits for the next one."""
        old = getattr(connection, "websocket", None)
        fresh = connection.websocket = Session(client=True)
        if old is None:
            return
        _stop_ping(old)
        if old.phase is HANDSHAKE:
            fresh.pending, fresh.pending_size = old.pending, old.pending_size


def handshake_request(connection, key):
    _, host, port = split_address(connection.remote_uri)
    rest = connection.remote_uri.partition("://")[2]
    slash = rest.find("/")
    target = rest[slash:] if slash >= 0 else "/"
    default_port = 443 if getattr(connection, "transport", "tcp") == "ssl" else 80
    lines = ["GET %s HTTP/1.1" % target]
    user = header_lines(getattr(connection, "headers", None))
    names = {line.partition(":")[0].strip().lower() for line in user}
    if "host" not in names:
        if ":" in host:
            host = "[%s]" % host
        lines.append("Host: " + (host if port == default_port else "%s:%d" % (host, port)))
    lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key,
              "Sec-WebSocket-Version: 13"]
    origin = getattr(connection, "websocket_origin", None)
    if origin:
        lines.append("Origin: " + origin)
    protocols = _offered_protocols(connection)
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    if getattr(connection, "websocket_deflate", False):
        lines.append("Sec-WebSocket-Extensions: " + _wsdeflate.OFFER)
    if "user-agent" not in names:
        lines.append("User-Agent: " + SERVER)
    lines += user
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _offered_protocols(connection):
    protocols = getattr(connection, "websocket_client_protocol", None)
    if not protocols:
        return []
    if isinstance(protocols, str):
        protocols = protocols.split(",")
    return [protocol.strip() for protocol in protocols if protocol.strip()]


class WebsocketResponse:
    """The server's handshake answer, as ``on_websocket_connect(connection, response)``
    sees it on a ws:// client: ``status``, ``reason``, ``headers`` (lower-case), ``raw``."""

    def __init__(self, status, reason, headers, raw):
        self.status, self.reason, self.headers, self.raw = status, reason, headers, raw

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    @classmethod
    def parse(cls, head):
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                name, value = name.strip().lower(), value.strip()
                headers[name] = headers[name] + ", " + value if name in headers else value
        return cls(int(code) if code.isdigit() else 0, reason, headers, head)

    def __repr__(self):
        return "<WebsocketResponse %d %s>" % (self.status, self.reason)


def _handshake_response(head, connection, session):
    """Section 4.1, the client's checks of the server's answer."""
    response = WebsocketResponse.parse(head)
    headers = response.headers
    if response.status != 101:
        return _handshake_failed(connection, "server answered %d %r" % (
            response.status, response.reason[:80]))
    if "websocket" not in header_tokens(headers.get("upgrade", "")) or \
            "upgrade" not in header_tokens(headers.get("connection", "")):
        return _handshake_failed(connection, "101 without Upgrade: websocket")
    if headers.get("sec-websocket-accept") != accept_key(session.key):
        return _handshake_failed(connection, "Sec-WebSocket-Accept does not match the key")
    extensions = headers.get("sec-websocket-extensions")
    if extensions:
        if not getattr(connection, "websocket_deflate", False):
            return _handshake_failed(connection, "extension %r was not offered" % extensions)
        try:
            session.deflate = _wsdeflate.accepted(extensions)
        except _wsdeflate.NegotiationError as error:
            return _handshake_failed(connection, str(error))
    subprotocol = headers.get("sec-websocket-protocol")
    if subprotocol and subprotocol not in _offered_protocols(connection):
        return _handshake_failed(connection, "subprotocol %r was not offered" % subprotocol)
    session.subprotocol = subprotocol
    session.response = response
    session.phase = OPEN
    call_hook(connection, "on_websocket_connect", response)
    if session.phase is not OPEN:
        return NOTHING
    if session.pending:
        flush_pending(connection, session)
    interval = getattr(connection, "websocket_ping_interval", 0)
    if interval and interval > 0:
        session.ping_timer = Timer.add(interval, _ping, (connection,))
    return NOTHING


def _handshake_failed(connection, reason):
    message = "websocket handshake with %s failed: %s" % (connection.remote_uri, reason)
    log(message)
    connection.websocket.phase = CLOSING
    call(connection.on_error, connection, CONNECT_FAIL, message)
    connection.destroy()
    return NOTHING


def _ping(connection):
    session = getattr(connection, "websocket", None)
    if session is None or session.phase is not OPEN:
        return
    connection.send(build(PING, b"", True), True)


def _stop_ping(session):
    if session.ping_timer is not None:
        Timer.delete(session.ping_timer)
        session.ping_timer = None
