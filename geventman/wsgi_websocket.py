"""WebSockets for WSGI applications in WebServer: ``environ["wsgi.websocket"]``.

gevent-websocket's ``WebSocketHandler`` answers the opening handshake, then calls
the WSGI application with ``environ["wsgi.websocket"]`` set to a WebSocket object;
the application keeps its greenlet for the life of the WebSocket and talks through
``receive()`` / ``send()``. Whole stacks are built on that object: gevent-websocket's
``Resource`` / ``WebSocketApplication``, Flask-Sockets, and python-engineio's gevent
driver (Flask-SocketIO with ``async_mode="gevent"``). This module gives a WSGI entry
of WebServer the same object, with frames from geventman's own codec: the handshake
is websocket://'s (``websocket.upgrade``: the same checks, permessage-deflate), the
frames are cut and checked by ``_wsframe`` as on any websocket:// connection.

How it runs: the connection reads as every connection does; the application runs in
a greenlet of its own and takes messages with ``receive()``. A message the connection
completes is handed over and the connection stops reading until the application has
taken it, as gevent-websocket reads only inside ``receive()``: what follows a message
(a bad frame, a close) is seen after the application answered that message (Autobahn
3.x/4.x strict, not "fail fast"), and at most one message waits in memory. ``send()``
waits while the connection's send buffer is full, as ``sendall`` would under
gevent-websocket: memory stays bounded on both sides. Returning from the application
closes the WebSocket (1000).
"""
import collections

from gevent import get_hub, getcurrent, spawn_raw
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import Client
from geventwebsocket.logging import create_logger
from geventwebsocket.websocket import MSG_ALREADY_CLOSED, MSG_SOCKET_DEAD

from geventman.log import log, log_exception
from geventman.protocols import websocket
from geventman.protocols._wsframe import BINARY, CLOSE, FIN, OPEN, PING, RSV1, TEXT, build
from geventman.protocols.http import wsgi
from geventman.protocols.http.protocol import Http
from geventman.runtime import CALLBACK_ERRORS, call, statistics

VERSION = "13"             # wsgi.websocket_version: the only one websocket:// speaks


def wants_websocket(request):
    """A request that asks for ``Upgrade: websocket``; the handshake checks the rest."""
    return "websocket" in websocket.header_tokens(request.header("upgrade", ""))


def serve(connection, request, application):
    """Answer the handshake of ``request`` on ``connection`` (an http:// one) and run
    ``application`` with ``environ["wsgi.websocket"]`` in a greenlet of its own.
    A refused handshake is answered (400, 426...) and closes, as on websocket://."""
    environ = wsgi.environ(request)
    server = server_of(application)
    protocol = _app_protocol(application, environ)
    if protocol:
        connection.headers = {"Sec-WebSocket-Protocol": protocol}
    socket = WSGIWebSocket(connection, environ, Handler(server, connection, environ))
    websocket.upgrade(connection, _raw_head(request))
    if connection.websocket.phase is not OPEN:
        return None  # refused: the answer is on its way, the connection closes
    socket.attach()
    # The connection speaks WebSocket from now on: end its HTTP state as a close would
    # (timeout watch, temporary files) and drop it with its Request, 1.8 KB per
    # WebSocket (measured: RSS per idle connection in benchmarks/ws_bench.py).
    Http.on_close(connection)
    connection.__dict__.pop("_http", None)
    environ["wsgi.websocket_version"] = VERSION
    environ["wsgi.websocket"] = socket
    spawn_raw(_run, application, socket)
    return None


def _raw_head(request):
    """The request head as it came (request line, field lines, blank line)."""
    head = request._head
    line = b"%s %s HTTP/%s" % (head.method.encode("latin-1"), head.target,
                               head.version.encode("latin-1"))
    return line + head.head + b"\r\n"


def _app_protocol(application, environ):
    """gevent-websocket's subprotocol choice: ``application.app_protocol(path)``
    (``Resource`` has it) if the client asked for that protocol."""
    chooser = getattr(application, "app_protocol", None)
    if chooser is None:
        return None
    chosen = chooser(environ["PATH_INFO"])
    requested = websocket.header_tokens(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", ""))
    return chosen if chosen and chosen.lower() in requested else None


def _run(application, socket):
    """The application's greenlet: call it as WebSocketHandler.run_websocket does, then
    close the WebSocket if the application left it open."""
    handler = socket.handler
    clients = handler.server.clients
    clients[handler.client_address] = handler.active_client
    try:
        result = application(socket.environ, _ignore_response)
        try:
            for _ in result or ():
                pass
        finally:
            if hasattr(result, "close"):
                result.close()
    except WebSocketError as error:
        if not socket.closed:
            _failed(socket)
        else:  # the usual way a gevent-websocket app learns that its peer left
            log("WSGI WebSocket %r: %s after the close" % (socket.path, error))
    except CALLBACK_ERRORS:
        _failed(socket)
    finally:
        clients.pop(handler.client_address, None)
        socket.close()
        socket.environ = None


def _failed(socket):
    statistics["throw_exception"] += 1
    log_exception("WSGI WebSocket application failed on %r" % socket.path)


def _ignore_response(status, headers, exc_info=None):
    """start_response for a WebSocket: the 101 is sent already; what the application
    answers as HTTP is dropped (as under gevent-websocket)."""
    return _ignore_write


def _ignore_write(data):
    return None


# -- what gevent-websocket applications reach through ws.handler ------------------


class Server:
    """Stands for gevent-websocket's ``WebSocketServer`` (``ws.handler.server``): one per
    WSGI application and process; ``clients`` maps (ip, port) to ``Client(address, ws)``
    for every WebSocket the application serves, which is how gevent-websocket apps
    broadcast."""

    pre_start_hook = None

    def __init__(self, application):
        self.application = application
        self.clients = {}
        self._logger = None

    @property
    def logger(self):
        if self._logger is None:
            self._logger = create_logger(__name__)
        return self._logger


_servers = {}   # id(application) -> (application, Server); per process


def server_of(application):
    entry = _servers.get(id(application))
    if entry is None or entry[0] is not application:
        entry = _servers[id(application)] = (application, Server(application))
    return entry[1]


class Handler:
    """Stands for gevent-websocket's ``WebSocketHandler`` (``ws.handler``)."""

    def __init__(self, server, connection, environ):
        self.server = server
        self.application = server.application
        self.environ = environ
        self.client_address = (connection.get_remote_ip(), connection.get_remote_port())
        self.websocket = None
        self.active_client = None

    @property
    def logger(self):
        return self.server.logger


class Stream:
    """``ws.stream``: gevent-websocket reads and writes frames through it; here the
    connection does, so it carries only ``handler``."""

    __slots__ = ("handler",)

    def __init__(self, handler):
        self.handler = handler

    def read(self, size=None):
        raise WebSocketError("frames are read by geventman: use receive()")

    def write(self, data):
        raise WebSocketError("frames are written by geventman: use send()")


# -- the WebSocket object ------------------------------------------------------------


class _NoApp:
    def on_close(self, *args):
        pass


class WSGIWebSocket:
    """``environ["wsgi.websocket"]``: gevent-websocket's ``WebSocket`` interface.

    ``receive()`` blocks the calling greenlet until a message comes: ``str`` for text,
    ``bytes`` for binary; ``None`` once the WebSocket is closed (the client left or
    closed it); after that ``WebSocketError``, as gevent-websocket. ``send(message,
    binary=None)`` sends one message (binary unless it is a ``str``); on a closed
    WebSocket it raises ``WebSocketError``. ``close(code=1000, message=b"")``.
    ``closed`` is True once either side closed or the connection is gone.
    """

    OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY = 0x0, TEXT, BINARY
    OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = CLOSE, PING, 0xA

    def __init__(self, connection, environ, handler):
        self.connection = connection
        self.environ = environ
        self.handler = handler
        self.stream = Stream(handler)
        self.closed = False
        handler.websocket = self
        handler.active_client = Client(handler.client_address, self)
        self._inbox = collections.deque()   # messages not yet taken (one, as a rule)
        self._waiters = []          # greenlets parked in receive() or in send()
        self._wake_queued = False
        self._gone = False          # the connection is closed
        self._none_given = False    # receive() returned its None
        self._paused = False        # we paused the connection's reading (a message waits)
        self._on_close = self._on_drain = None

    def attach(self):
        """Take the connection's messages and its end (the handshake is done)."""
        connection = self.connection
        self._on_close = connection.on_close
        self._on_drain = connection.on_buffer_drain
        connection.on_message = self._message
        connection.on_close = self._closed
        connection.on_buffer_drain = self._drain

    # -- gevent-websocket's interface ------------------------------------------------

    @property
    def origin(self):
        return self.environ.get("HTTP_ORIGIN") if self.environ else None

    @property
    def protocol(self):
        return self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL") if self.environ else None

    @property
    def version(self):
        return self.environ.get("HTTP_SEC_WEBSOCKET_VERSION") if self.environ else None

    @property
    def path(self):
        return self.environ.get("PATH_INFO") if self.environ else None

    @property
    def logger(self):
        return self.handler.logger

    @property
    def current_app(self):
        """As gevent-websocket: the server application's ``current_app``, if any."""
        return getattr(self.handler.server.application, "current_app", None) or _NoApp()

    def receive(self):
        if self.closed and self._none_given:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        inbox = self._inbox
        while not inbox:
            if self._gone or self.closed:
                self.closed = self._none_given = True
                return None
            self._park()
        message = inbox.popleft()
        if self._paused and not inbox:
            self._paused = False
            self.connection.resume_recv()
        return message

    read_message = receive

    def send(self, message, binary=None):
        if binary is None:
            binary = not isinstance(message, str)
        self.send_frame(message, BINARY if binary else TEXT)

    def send_frame(self, message, opcode):
        if self.closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        payload = _payload(message)
        session = self.connection.websocket
        deflate = session.deflate
        if opcode in (TEXT, BINARY) and deflate is not None and len(payload) >= \
                deflate.threshold:
            frame = build(opcode | FIN | RSV1, deflate.compress(payload))
        else:
            frame = build(opcode, payload)
        self._write(frame)

    def close(self, code=1000, message=b""):
        """Send a close frame (once) and close the connection after it."""
        already = self.closed and self._none_given
        self.closed = self._none_given = True
        self._wake()
        if already or self._gone:
            return
        if isinstance(message, str):
            message = message.encode("utf-8")
        # A close frame carries at most 123 bytes of reason (RFC 6455 section 5.5).
        reason = bytes(message or b"")[:123].decode("utf-8", "ignore")
        websocket.close(self.connection, code, reason)

    # -- the connection's side -------------------------------------------------------

    def _write(self, frame):
        """Send one frame; wait while the send buffer is full (back-pressure)."""
        connection = self.connection
        while connection.get_send_buffer_size() >= connection.max_send_buffer_size \
                and not self._gone:
            self._park()
        if self._gone or connection.send(frame, True) is False:
            self.closed = True
            self.current_app.on_close(MSG_SOCKET_DEAD)
            raise WebSocketError(MSG_SOCKET_DEAD)

    # Parked greenlets are woken from the hub, all at once; each looks again at what
    # it waits for (a message, room in the send buffer, the end) and parks again if it
    # is not there. Measured against a gevent Event per direction: about 1 µs less per
    # echo (WebSocket echo benchmark, server CPU per message).

    def _park(self):
        current = getcurrent()
        self._waiters.append(current)
        try:
            get_hub().switch()
        finally:
            if current in self._waiters:  # a timeout or a kill woke it, not _wake_all
                self._waiters.remove(current)

    def _wake(self):
        if self._waiters and not self._wake_queued:
            self._wake_queued = True
            get_hub().loop.run_callback(self._wake_all)

    def _wake_all(self):
        """In the hub."""
        self._wake_queued = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.dead:
                waiter.switch()

    def _message(self, connection, message):
        """on_message: hand it to receive(); read no further until it is taken."""
        self._inbox.append(message)
        if not self._paused:
            self._paused = True
            connection.pause_recv()
        self._wake()

    def _closed(self, connection):
        self._gone = True
        self.closed = True
        self._wake()
        call(self._on_close, connection)

    def _drain(self, connection):
        self._wake()
        call(self._on_drain, connection)

    def __repr__(self):
        return "<WSGIWebSocket %s %s>" % (self.path, "closed" if self.closed else "open")


def _payload(message):
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    return str(message if message is not None else "").encode("utf-8")
