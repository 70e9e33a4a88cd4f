"""websocket:// : the server side of RFC 6455, as Workerman's Websocket protocol.

The first package of a connection is the opening handshake (section 4.2): a GET with
``Upgrade: websocket``, ``Connection: Upgrade``, a 16-byte ``Sec-WebSocket-Key`` and
``Sec-WebSocket-Version: 13``. ``on_websocket_connect(connection, request)`` runs
before the 101 answer; it may close the connection (the client then gets 403) or set
``connection.headers`` to add response headers. What the application sends before the
101 is queued and sent right after it. A plain browser GET gets a short HTML page; any
other request gets 400 (426 for another protocol version) and the connection closes.

After the handshake every frame is a package (see ``_wsframe``): ``on_message`` gets
``str`` for text messages and ``bytes`` for binary ones, reassembled from fragments;
pings are answered; close frames are answered with the peer's code. ``send(str)`` is
a text frame, ``send(bytes)`` a binary frame, ``send(dict | list)`` JSON text.

``upgrade(connection, head)`` lets the http:// protocol hand a connection over when a
request asks for a WebSocket upgrade.
"""
import base64
import hashlib
import re
from urllib.parse import parse_qsl

from geventman.log import log
from geventman.protocols import NOTHING, _wsdeflate
from geventman.protocols import timeout
from geventman.protocols._wsframe import (
    BINARY_TYPE_ARRAYBUFFER, BINARY_TYPE_BLOB, CLOSED, CLOSING, GOING_AWAY, HANDSHAKE, NORMAL,
    OPEN, PING, Session, build, call_hook, close_frame, flush_pending, frame_length,
    message_frame, queue_before_open, receive, session_of)
from geventman.version import __version__

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # section 1.3
#: What may not stand in a handshake (RFC 9112 2.2, 5.5): control bytes other than
#: HTAB, a CR that does not end a line, a bare LF. (A tab in the request target makes
#: a bad request line.)
_BAD_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
#: Largest opening handshake accepted; a longer head gets 431.
MAX_HEAD_SIZE = 16384
SERVER = "geventman/%s" % __version__

_BROWSER_PAGE = (b"<!doctype html><title>WebSocket</title>"
                 b"<p>This is a WebSocket server: connect with "
                 b"<code>new WebSocket(\"ws://host:port/\")</code>.</p>\n")
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 426: "Upgrade Required",
            431: "Request Header Fields Too Large"}


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (section 4.2.2, step 5.4)."""
    if isinstance(key, str):
        key = key.encode("latin-1")
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


class Websocket:
    """The websocket:// protocol (static methods, Workerman's contract)."""

    BINARY_TYPE_BLOB = BINARY_TYPE_BLOB               # connection.websocket_type: text frames
    BINARY_TYPE_ARRAYBUFFER = BINARY_TYPE_ARRAYBUFFER  # binary frames

    @staticmethod
    def input(buffer, connection):
        session = getattr(connection, "websocket", None)  # None: no Session yet
        if session is None:
            session = session_of(connection)
        if session.phase is OPEN:
            return frame_length(buffer, connection, session)
        if session.phase is HANDSHAKE:
            return _head_length(buffer, connection)
        return 0

    @staticmethod
    def decode(package, connection):
        session = connection.websocket
        if session.phase is OPEN:
            return receive(package, connection, session)
        if session.phase is HANDSHAKE:
            return handshake(package, connection, session)
        return NOTHING

    @staticmethod
    def encode(data, connection):
        session = getattr(connection, "websocket", None)  # None: no Session yet
        if session is None:
            session = session_of(connection)
        if session.phase is OPEN:
            return message_frame(data, connection, session)
        if session.phase is HANDSHAKE:
            return queue_before_open(data, connection, session)
        return b""

    @staticmethod
    def before_close(connection):
        """``connection.close()`` on an open WebSocket sends a close frame first (1000,
        or 1001 while the worker stops); during the handshake it refuses with 403."""
        session = getattr(connection, "websocket", None)
        if session is None or session.close_sent:
            return
        if session.phase is OPEN:
            session.close_sent = True
            session.phase = CLOSING
            worker = connection.worker
            stopping = worker is not None and getattr(worker, "_stopping", False)
            connection.send(close_frame(GOING_AWAY if stopping else NORMAL), True)
        elif session.phase is HANDSHAKE and session.request is not None:
            session.phase = CLOSING
            if _written(connection) == session.mark:  # the application answered nothing
                connection.send(_http_answer(403, b"Forbidden\n"), True)

    @staticmethod
    def timed_out(connection):
        """The answer to a handshake not complete within request_timeout (timeout.py)."""
        return _http_answer(408, b"Request Timeout\n")

    @staticmethod
    def broadcast_key(connection):
        """Connections whose frame for one message is the same bytes share this key, so
        a broadcast builds one frame for all of them; None: this one encodes for itself
        (compressed with context takeover, or not open yet)."""
        session = getattr(connection, "websocket", None)
        if session is None or session.phase is not OPEN or session.deflate is not None:
            return None
        return ("websocket", connection.websocket_type)

    @staticmethod
    def on_close(connection):
        session = getattr(connection, "websocket", None)
        if session is not None:
            timeout.done(connection)   # a handshake that never completed was timed
            session.phase = CLOSED
            session.deflate = None
            session.pending = []


def upgrade(connection, head):
    """Switch ``connection`` (an http:// one) to WebSocket, for a request whose head
    (request line and headers through the blank line, ``bytes``) asks for the upgrade.

    The HTTP protocol calls this from its ``decode`` and returns what it returns
    (NOTHING). The handshake then runs as on a websocket:// worker: the same checks,
    ``on_websocket_connect``, the 101, and ``on_message`` gets WebSocket messages from
    then on. The bytes after the head are read as WebSocket frames.
    """
    connection.protocol = Websocket
    session = connection.websocket = Session()
    if getattr(connection, "websocket_type", None) is None:
        connection.websocket_type = getattr(connection.worker, "websocket_type", None)
    return handshake(bytes(head), connection, session)


def close(connection, code=NORMAL, reason=""):
    """Close with a given status code (4000-4999 are for applications)."""
    session = session_of(connection)
    if session.phase is OPEN and not session.close_sent:
        session.close_sent = True
        session.phase = CLOSING
        return connection.close(close_frame(code, reason), True)
    return connection.close()


def ping(connection, data=b""):
    """Send a ping (server or client side); the peer's pong calls on_websocket_pong.
    False if the connection is not open."""
    session = session_of(connection)
    if session.phase is not OPEN:
        return False
    if isinstance(data, str):
        data = data.encode("utf-8")
    return connection.send(build(PING, data[:125], session.client), True)


# -- the opening handshake -------------------------------------------------------


class HandshakeError(Exception):
    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def _head_length(buffer, connection):
    """``input`` during the handshake. The search for the blank line resumes where the
    last read left it; a handshake that is not whole in one read is timed like an HTTP
    request head (``request_timeout``, see protocols/timeout.py: 408 and closed), so a
    client sending it a byte at a time cannot hold the connection for ever."""
    session = connection.websocket
    end = buffer.find(b"\r\n\r\n", max(0, session.scanned - 3))
    if end < 0:
        session.scanned = len(buffer)
        if len(buffer) >= 4 and not buffer.startswith(b"GET "):
            _refuse_head(connection, 400, "not a GET request")
        elif len(buffer) > MAX_HEAD_SIZE:
            _refuse_head(connection, 431, "handshake over %d bytes" % MAX_HEAD_SIZE)
        else:
            timeout.watch(connection, "head")
        return 0
    session.scanned = 0
    if end + 4 > MAX_HEAD_SIZE:
        _refuse_head(connection, 431, "handshake over %d bytes" % MAX_HEAD_SIZE)
        return 0
    timeout.done(connection)
    return end + 4


def handshake(head, connection, session):
    """Answer the opening handshake ``head``; NOTHING for on_message."""
    try:
        request = WebsocketRequest.parse(head, connection)
        if request.is_plain_get():
            _refuse(connection, session, 200, _BROWSER_PAGE, "text/html; charset=utf-8")
            return NOTHING
        key = request.check()
    except HandshakeError as error:
        log("websocket handshake from %s:%s refused: %s" % (
            connection.get_remote_ip(), connection.get_remote_port(), error.reason))
        _refuse(connection, session, error.status, error.reason.encode() + b"\n",
                headers=error.headers)
        return NOTHING
    session.request = request
    extensions = request.headers.get("sec-websocket-extensions")
    if extensions and _deflate_enabled(connection):
        offer, session.deflate = _wsdeflate.accept(extensions)
    else:
        offer = None
    session.mark = _written(connection)
    call_hook(connection, "on_websocket_connect", request)
    # Not kept: about 2.5 KB per connection (measured with tracemalloc), more than the
    # rest of the WebSocket state. Applications keep what they need on the connection.
    session.request = None
    if session.phase is not HANDSHAKE:
        return NOTHING  # on_websocket_connect closed the connection
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Accept: " + accept_key(key)]
    if offer:
        lines.append("Sec-WebSocket-Extensions: " + offer)
    lines += _user_headers(connection, session)
    connection.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), True)
    session.phase = OPEN
    if session.pending:
        flush_pending(connection, session)
    return NOTHING


def _deflate_enabled(connection):
    enabled = getattr(connection, "websocket_deflate", None)
    if enabled is None:
        enabled = getattr(connection.worker, "websocket_deflate", True)
    return enabled


def header_lines(headers):
    """``connection.headers`` as lines: it may be a dict, a list of "Name: value" lines
    or (name, value) pairs, or one string of lines. CR and LF inside are dropped."""
    if not headers:
        return []
    if isinstance(headers, str):
        headers = headers.split("\r\n")
    elif isinstance(headers, dict):
        headers = list(headers.items())
    lines = []
    for item in headers:
        line = "%s: %s" % item if isinstance(item, tuple) else str(item)
        line = line.replace("\r", "").replace("\n", "")
        if line:
            lines.append(line)
    return lines


def _user_headers(connection, session):
    """The application's headers for the 101, plus Server unless given."""
    lines = header_lines(getattr(connection, "headers", None))
    names = {line.partition(":")[0].strip().lower(): line for line in lines}
    if "sec-websocket-protocol" in names:
        session.subprotocol = names["sec-websocket-protocol"].partition(":")[2].strip()
    if "server" not in names:
        lines.append("Server: " + SERVER)
    return lines


def _written(connection):
    return connection.bytes_written + connection.get_send_buffer_size()


def _http_answer(status, body, content_type="text/plain; charset=utf-8", headers=()):
    head = ["HTTP/1.1 %d %s" % (status, _REASONS[status]), "Content-Type: " + content_type,
            "Content-Length: %d" % len(body), "Connection: close", "Server: " + SERVER]
    head += list(headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _refuse(connection, session, status, body, content_type="text/plain; charset=utf-8",
            headers=()):
    session.phase = CLOSING
    connection.close(_http_answer(status, body, content_type, headers), True)


def _refuse_head(connection, status, reason):
    log("websocket handshake from %s:%s refused: %s" % (
        connection.get_remote_ip(), connection.get_remote_port(), reason))
    _refuse(connection, session_of(connection), status, reason.encode() + b"\n")


class WebsocketRequest:
    """The opening handshake, as ``on_websocket_connect(connection, request)`` sees it.

    ``method``, ``uri``, ``path``, ``query_string``, ``version``; ``headers`` (lower-case
    names; repeated headers joined with ", "); ``get`` (query parameters), ``cookie``,
    ``server`` (PHP's $_SERVER keys: REQUEST_METHOD, REQUEST_URI, QUERY_STRING,
    SERVER_PROTOCOL, HTTP_HOST, HTTP_*, REMOTE_ADDR, REMOTE_PORT...); ``raw`` (bytes).
    """

    def __init__(self, method, uri, version, headers, raw):
        self.method, self.uri, self.version = method, uri, version
        self.path, _, self.query_string = uri.partition("?")
        self.headers = headers
        self.raw = raw
        self.get = dict(parse_qsl(self.query_string, keep_blank_values=True))
        self.cookie = _parse_cookie(headers.get("cookie", ""))
        self.server = {}

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    @classmethod
    def parse(cls, head, connection=None):
        if _BAD_BYTES.search(head):
            raise HandshakeError(400, "control byte in the handshake")
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1] or "\t" in parts[1]:
            raise HandshakeError(400, "bad request line")
        method, uri, version = parts
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                raise HandshakeError(400, "bad header line")
            name = name.lower()
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        request = cls(method, uri, version, headers, head)
        request.server = request._server_vars(connection)
        return request

    def _server_vars(self, connection):
        server = {"REQUEST_METHOD": self.method, "REQUEST_URI": self.uri,
                  "QUERY_STRING": self.query_string, "SERVER_PROTOCOL": self.version,
                  "SERVER_SOFTWARE": SERVER}
        host = self.headers.get("host", "")
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        server["SERVER_NAME"], server["SERVER_PORT"] = name or host, port
        for key, value in self.headers.items():
            server["HTTP_" + key.upper().replace("-", "_")] = value
        if connection is not None:
            server["REMOTE_ADDR"] = connection.get_remote_ip()
            server["REMOTE_PORT"] = connection.get_remote_port()
        return server

    def is_plain_get(self):
        """A GET with no upgrade in it: a browser that opened the address as a page."""
        return (self.method == "GET" and "upgrade" not in self.headers
                and "sec-websocket-key" not in self.headers)

    def check(self):
        """Section 4.2.1: the client's handshake; returns the key, or HandshakeError."""
        if self.method != "GET":
            # Client bytes in a log line are escaped (%r): a bare "\n" in them would
            # otherwise start a forged line.
            raise HandshakeError(400, "method %r, not GET" % self.method[:40])
        if self.version != "HTTP/1.1":
            raise HandshakeError(400, "version %r, not HTTP/1.1" % self.version[:16])
        if "host" not in self.headers:
            raise HandshakeError(400, "no Host header")
        if "websocket" not in header_tokens(self.headers.get("upgrade", "")):
            raise HandshakeError(400, "no Upgrade: websocket")
        if "upgrade" not in header_tokens(self.headers.get("connection", "")):
            raise HandshakeError(400, "no Connection: Upgrade")
        key = self.headers.get("sec-websocket-key", "")
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid = False
        if not valid:
            raise HandshakeError(400, "bad Sec-WebSocket-Key")
        if self.headers.get("sec-websocket-version") != "13":
            raise HandshakeError(426, "Sec-WebSocket-Version must be 13",
                                 ["Sec-WebSocket-Version: 13"])
        return key

    def __repr__(self):
        return "<WebsocketRequest %s %s>" % (self.method, self.uri)


def header_tokens(value):
    """The comma-separated tokens of a header value, lower-case (RFC 7230 section 7)."""
    return {token.strip().lower() for token in value.split(",")}


def _parse_cookie(value):
    cookies = {}
    for pair in value.split(";"):
        name, sep, content = pair.strip().partition("=")
        if sep and name:
            cookies[name] = content.strip().strip('"')
    return cookies
