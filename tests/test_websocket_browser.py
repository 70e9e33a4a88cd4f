"""The manual's websocket example in a real browser: headless Chromium (Debian's
package, /usr/bin/chromium) driven by Playwright loads a small page that connects,
sends "tom" and shows the reply. Chromium offers permessage-deflate, so the same
run checks deflate against a browser."""
import http.server
import os
import threading

import pytest

from conftest import free_port

CHROMIUM = "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; without the background-networking flags it keeps
# trying to reach Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>geventman websocket</title>
<input id="name" value="tom"> <button id="send">send</button>
<p>reply: <b id="reply"></b></p>
<p>binary: <b id="binary"></b></p>
<p>closed: <b id="closed"></b></p>
<script>
const ws = new WebSocket("ws://127.0.0.1:%(port)d/?user=browser");
ws.binaryType = "arraybuffer";
ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    document.getElementById("reply").textContent = event.data;
  } else {
    const bytes = Array.from(new Uint8Array(event.data));
    document.getElementById("binary").textContent = bytes.join(",");
  }
};
ws.onclose = (event) => {
  document.getElementById("closed").textContent = event.code + " " + event.reason;
};
document.getElementById("send").onclick = () => ws.send(document.getElementById("name").value);
window.sendBinary = () => ws.send(new Uint8Array([1, 2, 255]).buffer);
window.extensions = () => ws.extensions;
</script>
"""

APP = """
    from geventman import Worker
    from geventman.protocols import websocket

    worker = Worker("websocket://127.0.0.1:%d")
    worker.count = 2

    def on_message(connection, data):
        if isinstance(data, bytes):
            return connection.send(data[::-1])
        if data == "bye":
            return websocket.close(connection, 4001, "see you")
        connection.send("hello " + data)

    worker.on_message = on_message
"""


@pytest.fixture
def page_server(tmp_path):
    """Serves index.html from tmp_path over HTTP; yields the page URL factory."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args):
            super().__init__(*args, directory=str(tmp_path))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, "http://127.0.0.1:%d/index.html" % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: tests/run.sh installs Debian's chromium")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_hello_tom_in_chromium(project, page_server, browser, tmp_path):
    port = free_port()
    project.app("hello", APP % port)
    project.start(ports=[port])
    root, url = page_server
    (root / "index.html").write_text(PAGE % {"port": port})
    page = browser.new_page()
    page.goto(url)
    page.click("#send")
    page.wait_for_function("document.getElementById('reply').textContent === 'hello tom'",
                           timeout=10000)
    assert page.evaluate("extensions()").startswith("permessage-deflate")
    page.fill("#name", "wörld " * 200)              # long enough to be worth compressing
    page.click("#send")
    page.wait_for_function("document.getElementById('reply').textContent.length > 1000",
                           timeout=10000)
    assert page.inner_text("#reply").startswith("hello wörld wörld")
    page.evaluate("sendBinary()")
    page.wait_for_function("document.getElementById('binary').textContent === '255,2,1'",
                           timeout=10000)
    page.screenshot(path=str(tmp_path / "websocket.png"))
    page.fill("#name", "bye")
    page.click("#send")
    page.wait_for_function("document.getElementById('closed').textContent !== ''",
                           timeout=10000)
    assert page.inner_text("#closed") == "4001 see you"
    assert "Traceback" not in project.log()
