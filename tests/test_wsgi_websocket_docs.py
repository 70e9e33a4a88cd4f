"""The examples of docs/webserver.md, "WebSockets in WSGI applications", run as
documented: the same start.py serves a gevent-websocket Resource app, a
Flask-SocketIO app and a Flask-Sockets-style app, each driven by a real client."""
import json
import os

import pytest
import requests

from conftest import wait_until
from test_http_docs import example, files_of

websocket_client = pytest.importorskip("websocket")
pytest.importorskip("geventwebsocket")


def serve(project, kind):
    code, port = example("wsgi-websocket", "webserver.md")
    project.app("site", code)
    prefix = kind + "/"
    files = {path[len(prefix):]: text for path, text in files_of("webserver.md").items()
             if path.startswith(prefix)}
    assert files, "no %s example" % kind
    for path, text in files.items():
        target = project.path("applications", "site", path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as handle:
            handle.write(text)
    project.start(ports=[port])
    return port


def connect(port, path):
    return websocket_client.create_connection("ws://127.0.0.1:%d%s" % (port, path),
                                              timeout=5)


def close_code(ws):
    opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket_client.ABNF.OPCODE_CLOSE
    return int.from_bytes(payload[:2], "big")


def test_resource_example(project):
    port = serve(project, "resource")
    echo = connect(port, "/echo")
    echo.send("hello")
    assert echo.recv() == "hello"
    first, second = connect(port, "/chat"), connect(port, "/chat")
    second.send("hi")
    assert json.loads(first.recv()) == json.loads(second.recv()) == {"said": "hi"}
    assert json.loads(echo.recv()) == {"said": "hi"}   # clients: every WebSocket of the app
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == (
        "plain HTTP from the same Resource\n")
    project.command("reload", check=True)   # idle WebSockets are closed with 1001
    assert {close_code(ws) for ws in (echo, first, second)} == {1001}
    assert "Traceback" not in project.log()


def test_flask_socketio_example(project):
    socketio = pytest.importorskip("socketio")
    pytest.importorskip("flask_socketio")
    port = serve(project, "socketio")
    events = []
    client = socketio.Client(reconnection=False)
    client.on("echo", lambda data: events.append(("echo", data)))
    client.on("joined", lambda room: events.append(("joined", room)))
    client.connect("http://127.0.0.1:%d" % port, transports=["websocket"], wait_timeout=5)
    try:
        assert client.transport() == "websocket"
        client.emit("echo", {"text": "hello"})
        client.emit("join", "lobby")
        wait_until(lambda: len(events) == 2, message="echo and joined")
        assert events == [("echo", {"text": "hello"}), ("joined", "lobby")]
    finally:
        client.disconnect()
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == (
        "the Socket.IO server is at /socket.io/")
    assert "Traceback" not in project.log()


def test_flask_sockets_style_example(project):
    port = serve(project, "sockets")
    ws = connect(port, "/echo")
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send_binary(b"\x01\x02")
    assert ws.recv() == b"\x01\x02"
    ws.close()
    assert close_code(connect(port, "/nowhere")) == 1008
    assert requests.get("http://127.0.0.1:%d/" % port, timeout=5).text == "HTTP as usual"
    assert "Traceback" not in project.log()
