"""Flask-SocketIO behind WebServer, in a real browser: headless Chromium (Debian's
package) loads a page from the WebServer, with the socket.io JavaScript client from
the npm registry (tests/vendor/socket.io-client, served by the same WebServer:
nothing comes from outside this machine). The client starts on long-polling, as
browsers do by default, upgrades to WebSocket (environ["wsgi.websocket"]), sends an
event and shows the answer."""
import os
import shutil

import pytest

from conftest import free_port
from test_websocket_browser import browser  # noqa: F401  (the Chromium fixture)
from test_wsgi_websocket import SOCKETIO_APP, SOCKETIO_INDEX, START

pytest.importorskip("flask_socketio")

VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor",
                      "socket.io-client", "socket.io.min.js")

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>geventman socket.io</title>
<script src="/static/socket.io.min.js"></script>
<p>transport: <b id="transport"></b></p>
<p>answer: <b id="answer"></b></p>
<p>room: <b id="room"></b></p>
<script>
const socket = io();
socket.io.on("open", () => {
  const engine = socket.io.engine;
  document.getElementById("transport").textContent = engine.transport.name;
  engine.on("upgrade", (transport) => {
    document.getElementById("transport").textContent = transport.name;
  });
});
socket.on("echo", (data) => {
  document.getElementById("answer").textContent = data.text;
});
socket.on("joined", (room) => socket.emit("say", {room: room, text: "hello " + room}));
socket.on("said", (text) => {
  document.getElementById("room").textContent = text;
});
window.send = (text) => socket.emit("echo", {text: text});
window.join = (room) => socket.emit("join", room);
window.transport = () => socket.io.engine.transport.name;
</script>
"""


def test_socketio_page_in_chromium(project, browser, tmp_path):  # noqa: F811
    port = free_port()
    project.app("site", START % {"port": port}, www__index_py=SOCKETIO_INDEX,
                www__chat_py=SOCKETIO_APP)
    project.write("applications/site/www/index.html", PAGE)
    static = project.path("applications", "site", "www", "static")
    os.makedirs(static)
    shutil.copy(VENDOR, static)
    project.start(ports=[port])
    page = browser.new_page()
    requests_seen = []
    page.on("request", lambda request: requests_seen.append(request.url))
    page.on("console", lambda message: print("console:", message.text))
    page.goto("http://127.0.0.1:%d/" % port)
    page.wait_for_function("document.getElementById('transport').textContent === 'websocket'",
                           timeout=15000)
    page.evaluate("send('héllo from chromium')")
    page.wait_for_function(
        "document.getElementById('answer').textContent === 'héllo from chromium'",
        timeout=10000)
    page.evaluate("join('lobby')")
    page.wait_for_function("document.getElementById('room').textContent === 'hello lobby'",
                           timeout=10000)
    assert page.evaluate("transport()") == "websocket"
    page.screenshot(path=str(tmp_path / "socketio.png"))
    page.close()
    local = "http://127.0.0.1:%d/" % port, "ws://127.0.0.1:%d/" % port
    assert requests_seen and all(url.startswith(local) for url in requests_seen), \
        requests_seen
    assert "Traceback" not in project.log()
