"""WebSockets for WSGI applications in WebServer (environ["wsgi.websocket"], the object
gevent-websocket's WebSocketHandler gives): a gevent-websocket ``Resource`` app with
``WebSocketApplication`` echo and broadcast, plain WSGI apps on the object itself,
the handshake checks, limits, and the status counters. Clients are websocket-client
(PyPI) and raw sockets; the servers are real processes started with start.py."""
import base64
import json
import os
import socket

import pytest

from conftest import free_port, recv_exactly, wait_until

websocket_client = pytest.importorskip("websocket")
pytest.importorskip("geventwebsocket")

START = """
from geventman import WebServer

web = WebServer("http://127.0.0.1:%(port)d")
web.count = 1
web.add_root("localhost", "www")
"""

# gevent-websocket's own application API, unmodified: a Resource maps paths to a
# WebSocketApplication (per connection) or a plain WSGI app.
RESOURCE_APP = """
import json
from collections import OrderedDict

from geventwebsocket import Resource, WebSocketApplication
from geventwebsocket.protocols.base import BaseProtocol


class ChatProtocol(BaseProtocol):
    PROTOCOL_NAME = "chat.v1"


class Echo(WebSocketApplication):
    def on_message(self, message):
        if message is None:
            return
        self.ws.send(message)


class Chat(WebSocketApplication):
    protocol_class = ChatProtocol      # Resource.app_protocol() offers it

    def on_open(self):
        self.broadcast({"joined": self.ws.handler.client_address[1]})

    def on_message(self, message):
        if message is None:
            return
        self.broadcast({"from": self.ws.handler.client_address[1], "said": message})

    def broadcast(self, data):
        for client in list(self.ws.handler.server.clients.values()):
            if not client.ws.closed:
                client.ws.send(json.dumps(data))


def home(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain HTTP on the same app"]


application = Resource(OrderedDict([("^/echo", Echo), ("^/chat", Chat), ("^/", home)]))
"""

# The object itself, as a bare WSGI app uses it: what it exposes, receive() -> None
# when the client goes away, and what happens after the app returns.
RAW_APP = """
import json
import os

LOG = os.path.join(os.path.dirname(__file__), "events.log")


def note(line):
    with open(LOG, "a") as handle:
        handle.write(line + "\\n")


def application(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no websocket here"]
    path = environ["PATH_INFO"]
    if path == "/info":
        ws.send(json.dumps({
            "version": environ["wsgi.websocket_version"], "path": ws.path,
            "origin": ws.origin, "protocol": ws.protocol, "closed": ws.closed,
            "same_environ": ws.environ is environ, "handler": type(ws.handler).__name__,
            "has_stream_handler": ws.stream.handler is ws.handler,
            "query": environ["QUERY_STRING"]}))
        message = ws.receive()
        ws.send(message, binary=True)
        return []                            # returning closes the WebSocket (1000)
    if path == "/until-gone":
        while True:
            message = ws.receive()
            if message is None:
                note("receive gave None, closed=%s" % ws.closed)
                break
            ws.send(message)
        try:
            ws.receive()
        except Exception as error:
            note("then %s: %s" % (type(error).__name__, error))
        return []
    if path == "/timeout":
        import gevent
        with gevent.Timeout(0.05, False):    # a receive() given up on, then a real one
            ws.receive()
        ws.send("timed out")
        ws.send(ws.receive())
        return []
    if path == "/close":
        ws.close(4001, b"app says bye")
        return []
    if path == "/fail":
        ws.receive()
        raise RuntimeError("app failed on purpose")
    if path == "/flood":
        count = int(environ["QUERY_STRING"])
        for index in range(count):
            ws.send("x" * 65536)
        note("flood sent %d" % count)
        return []
    if path == "/slow":
        import gevent
        gevent.sleep(float(environ["QUERY_STRING"]))
        while True:
            message = ws.receive()
            if message is None:
                return []
            ws.send(message)
    return []
"""


def make_site(project, port, index):
    project.app("site", START % {"port": port}, www__index_py=index)
    project.start(ports=[port])


def url(port, path):
    return "ws://127.0.0.1:%d%s" % (port, path)


def test_resource_echo_broadcast_and_plain_http(project):
    port = free_port()
    make_site(project, port, RESOURCE_APP)
    echo = websocket_client.create_connection(url(port, "/echo"), timeout=5)
    echo.send("hello")
    assert echo.recv() == "hello"
    echo.send_binary(b"\x00\xffbin")
    assert echo.recv() == b"\x00\xffbin"
    big = "é" * 100000
    echo.send(big)
    assert echo.recv() == big

    first = websocket_client.create_connection(url(port, "/chat"), timeout=5,
                                               subprotocols=["other", "chat.v1"])
    assert first.getsubprotocol() == "chat.v1"
    first_port = first.sock.getsockname()[1]
    assert json.loads(first.recv()) == {"joined": first_port}
    second = websocket_client.create_connection(url(port, "/chat"), timeout=5)
    second_port = second.sock.getsockname()[1]
    assert json.loads(first.recv()) == {"joined": second_port}
    assert json.loads(second.recv()) == {"joined": second_port}
    second.send("hi all")
    expected = {"from": second_port, "said": "hi all"}
    assert json.loads(first.recv()) == expected
    assert json.loads(second.recv()) == expected
    second.close()
    first.send("still here")           # the broadcast skips the client that left
    assert json.loads(first.recv()) == {"from": first_port, "said": "still here"}

    import requests
    answer = requests.get("http://127.0.0.1:%d/" % port, timeout=5)
    assert answer.text == "plain HTTP on the same app"
    for ws in (echo, first):
        ws.close()
    assert "Traceback" not in project.log()


def test_the_object_and_a_clean_close_when_the_app_returns(project):
    port = free_port()
    make_site(project, port, RAW_APP)
    ws = websocket_client.create_connection(url(port, "/info?x=1"), timeout=5,
                                            origin="http://page.test",
                                            header=["Sec-WebSocket-Protocol: chat"])
    info = json.loads(ws.recv())
    assert info == {"version": "13", "path": "/info", "origin": "http://page.test",
                    "protocol": "chat", "closed": False, "same_environ": True,
                    "handler": "Handler", "has_stream_handler": True, "query": "x=1"}
    ws.send("text in")
    assert ws.recv_data() == (websocket_client.ABNF.OPCODE_BINARY, b"text in")
    opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket_client.ABNF.OPCODE_CLOSE
    assert payload[:2] == (1000).to_bytes(2, "big")   # the app returned: 1000

    ws = websocket_client.create_connection(url(port, "/timeout"), timeout=5)
    assert ws.recv() == "timed out"
    ws.send("after the timeout")
    assert ws.recv() == "after the timeout"

    ws = websocket_client.create_connection(url(port, "/close"), timeout=5)
    opcode, payload = ws.recv_data(control_frame=True)
    assert (opcode, payload) == (websocket_client.ABNF.OPCODE_CLOSE,
                                 (4001).to_bytes(2, "big") + b"app says bye")


def test_receive_gives_none_when_the_client_goes(project):
    port = free_port()
    make_site(project, port, RAW_APP)
    events = project.path("applications", "site", "www", "events.log")
    ws = websocket_client.create_connection(url(port, "/until-gone"), timeout=5)
    ws.send("one")
    assert ws.recv() == "one"
    ws.sock.close()                    # no close frame: the TCP connection just ends
    wait_until(lambda: os.path.exists(events) and "then" in open(events).read(),
               message="the app to see the end")
    assert open(events).read() == ("receive gave None, closed=True\n"
                                   "then WebSocketError: Connection is already closed\n")

    os.remove(events)
    ws = websocket_client.create_connection(url(port, "/until-gone"), timeout=5)
    ws.close(status=1000)              # a close frame: answered, then the same None
    wait_until(lambda: os.path.exists(events) and "then" in open(events).read(),
               message="the app to see the close")
    assert open(events).read().startswith("receive gave None, closed=True\n")
    status = wait_until(lambda: (lambda s: s if s["connections"] == 0 else None)(
        _process_status(project)), message="no connection left")
    assert status["connections"] == 0


def _process_status(project):
    return [row for row in project.status_json()["processes"]
            if row.get("name") == "WebServer"][0]


def raw_handshake(port, path="/until-gone", extra=b"", version=b"13"):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\n"
                 b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")
    return sock


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_raw_head_is_the_head_as_sent():
    from geventman.protocols.http import parser
    from geventman.protocols.http.request import Request
    from geventman.wsgi_websocket import _raw_head, wants_websocket
    sent = (b"GET /chat?room=1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: WebSocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n")
    request = Request(parser.read_head(sent + b"\x81\x80", parser.ParseState()), None)
    assert _raw_head(request) == sent
    assert wants_websocket(request)


def test_handshake_checks_as_websocket_scheme(project):
    port = free_port()
    project.write("applications/site/www/page.txt", "a static file\n")
    make_site(project, port, RAW_APP)
    # Upgrade to a static file: no WebSocket there, the file is served as HTTP.
    sock = raw_handshake(port, "/page.txt")
    answer = read_head(sock)
    while not answer.endswith(b"a static file\n"):
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    sock.close()
    sock = raw_handshake(port, version=b"8")
    assert read_head(sock).startswith(b"HTTP/1.1 426 ")
    sock.close()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /until-gone HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: short\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert read_head(sock).startswith(b"HTTP/1.1 400 ")
    sock.close()
    assert "bad Sec-WebSocket-Key" in project.log()
    # A bad frame after a good handshake: 1002 and closed, as on websocket://.
    sock = raw_handshake(port)
    assert read_head(sock).startswith(b"HTTP/1.1 101 ")
    sock.sendall(b"\x81\x05hello")                 # not masked
    frame = recv_exactly(sock, 4)
    assert (frame[0], frame[2:4]) == (0x88, (1002).to_bytes(2, "big"))
    sock.close()
    assert "unmasked frame from the client" in project.log()


def test_limits_and_counters(project):
    port = free_port()
    make_site(project, port, RAW_APP)
    # A message over max_package_size (10 MiB default): 1009, as on websocket://.
    sock = raw_handshake(port)
    assert read_head(sock).startswith(b"HTTP/1.1 101 ")
    sock.sendall(b"\x82\xff" + (11 << 20).to_bytes(8, "big") + b"mask")
    frame = recv_exactly(sock, 4)
    assert (frame[0], frame[2:4]) == (0x88, (1009).to_bytes(2, "big"))
    sock.close()
    # The app sends 400 x 64 KiB to a client that does not read: send() waits on the
    # full send buffer (1 MiB), so the server's memory stays bounded; then the client
    # reads everything and the app finishes.
    events = project.path("applications", "site", "www", "events.log")
    slow = raw_handshake(port, "/flood?400")
    head = read_head(slow)
    assert head.startswith(b"HTTP/1.1 101 ")
    other = websocket_client.create_connection(url(port, "/until-gone"), timeout=5)
    other.send("others are served meanwhile")
    assert other.recv() == "others are served meanwhile"
    assert not os.path.exists(events) or "flood" not in open(events).read()
    received = len(head) - head.index(b"\r\n\r\n") - 4   # frames read with the head
    slow.settimeout(10)
    while received < 400 * (65536 + 4):
        chunk = slow.recv(1 << 20)
        assert chunk, "closed early"
        received += len(chunk)
    wait_until(lambda: "flood sent 400" in open(events).read(), message="the flood's end")
    slow.close()
    other.close()
    # The app that raised is counted in throw_exception, logged once with its traceback.
    failing = websocket_client.create_connection(url(port, "/fail"), timeout=5)
    failing.send("go")
    opcode, _ = failing.recv_data(control_frame=True)
    assert opcode == websocket_client.ABNF.OPCODE_CLOSE
    wait_until(lambda: "app failed on purpose" in project.log(), message="the log line")
    status = _process_status(project)
    assert status["throw_exception"] == 1
    assert status["total_request"] >= 6


# -- Flask-SocketIO (python-engineio's gevent driver on environ["wsgi.websocket"]) ----

SOCKETIO_APP = """
from flask import Flask, request
from flask_socketio import SocketIO, emit, join_room

app = Flask(__name__)
socketio = SocketIO(app, async_mode="gevent")


@socketio.on("echo")
def echo(data):
    emit("echo", data)


@socketio.on("join")
def join(room):
    join_room(room)
    emit("joined", room)


@socketio.on("say")
def say(data):
    emit("said", data["text"], to=data["room"])


@socketio.on("transport")
def transport():
    # The environ of this Socket.IO connection: the WebSocket request's, if it is one.
    return "websocket" if request.environ.get("wsgi.websocket") else "polling"
"""

SOCKETIO_INDEX = """
from chat import app as application
"""


def socketio_client(port, events):
    socketio = pytest.importorskip("socketio")
    client = socketio.Client(reconnection=False)
    for name in ("echo", "joined", "said"):
        client.on(name, (lambda name: lambda data: events.append((name, data)))(name))
    client.connect("http://127.0.0.1:%d" % port, transports=["websocket"], wait_timeout=5)
    return client


def test_flask_socketio_over_websocket(project):
    pytest.importorskip("flask_socketio")
    port = free_port()
    project.app("site", START % {"port": port}, www__index_py=SOCKETIO_INDEX,
                www__chat_py=SOCKETIO_APP)
    project.start(ports=[port])
    first_events, second_events, third_events = [], [], []
    first = socketio_client(port, first_events)
    second = socketio_client(port, second_events)
    third = socketio_client(port, third_events)
    try:
        assert first.transport() == "websocket"
        assert first.call("transport", timeout=5) == "websocket"
        first.emit("echo", {"n": 1, "text": "héllo"})
        wait_until(lambda: first_events, message="the echo")
        assert first_events == [("echo", {"n": 1, "text": "héllo"})]
        for client, events in ((first, first_events), (second, second_events)):
            client.emit("join", "room1")
            wait_until(lambda: ("joined", "room1") in events, message="joined")
        second.emit("say", {"room": "room1", "text": "to the room"})
        wait_until(lambda: ("said", "to the room") in first_events
                   and ("said", "to the room") in second_events, message="the room")
        third.emit("echo", "third")          # not in the room: only its own echo
        wait_until(lambda: third_events, message="third's echo")
        assert third_events == [("echo", "third")]
    finally:
        for client in (first, second, third):
            client.disconnect()
    wait_until(lambda: _process_status(project)["connections"] == 0,
               message="the WebSockets closed")
    assert "Traceback" not in project.log()
