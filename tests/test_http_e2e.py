"""http:// end to end: ``python start.py start`` on loopback, real clients
(requests, http.client, raw sockets)."""
import hashlib
import http.client
import json
import socket

import pytest
import requests

from conftest import free_port, wait_until

APP = """
import hashlib, json
from geventman import Worker
from geventman.protocols import http
from geventman.protocols.http import Response, Session

Session.save_path = %(sessions)r
worker = Worker("http://127.0.0.1:%(port)d")
worker.count = 2

def on_message(connection, request):
    path = request.path
    if path == "/count":
        session = request.session
        session["n"] = session.get("n", 0) + 1
        return connection.send(str(session["n"]))
    if path == "/upload":
        files = [{"name": f["name"], "file_name": f["file_name"], "file_type": f["file_type"],
                  "file_size": f["file_size"], "md5": hashlib.md5(f["file_data"]).hexdigest(),
                  "spooled": "tmp_name" in f} for f in request.files]
        return connection.send(Response(200, {"Content-Type": "application/json"},
                                        json.dumps({"files": files, "post": request.post})))
    if path == "/echo":
        return connection.send(Response(200, {"Content-Type": "application/octet-stream"},
                                        request.body))
    if path == "/cookie":
        http.set_cookie("flavour", request.get.get("set", "none"), path="/")
        return connection.send("cookie=" + request.cookie.get("flavour", "-"))
    if path == "/boom":
        raise ValueError("handler failed on purpose")
    connection.send("%%s %%s %%s" %% (request.method, request.uri, request.get.get("n", "")))

worker.on_message = on_message
"""


@pytest.fixture
def server(project, tmp_path):
    port = free_port()
    project.app("web", APP % {"port": port, "sessions": str(tmp_path / "sessions")})
    project.start(ports=[port])
    yield port
    project.stop()


def raw(port, data, timeout=10):
    """Send ``data`` on a new connection; return everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock, buffered=b""):
    """One Content-Length response from ``sock``: (status, head, body, rest)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before a response head: %r" % data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a body"
        rest += chunk
    return int(head.split()[1]), head, rest[:length], rest[length:]


def test_keep_alive_serves_many_requests_on_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    connection.connect()
    local = connection.sock.getsockname()
    for n in range(20):
        connection.request("GET", "/k?n=%d" % n)
        answer = connection.getresponse()
        assert answer.status == 200 and answer.read() == b"GET /k?n=%d %d" % (n, n)
        assert answer.getheader("Connection") == "keep-alive"
    assert connection.sock.getsockname() == local
    connection.close()


def test_pipelined_requests_are_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(b"".join(b"GET /p?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n
                              for n in range(50)))
        rest = b""
        for n in range(50):
            status, head, body, rest = read_response(sock, rest)
            assert (status, body) == (200, b"GET /p?n=%d %d" % (n, n))


def test_http10_and_connection_close_are_closed_by_the_server(server):
    for request in (b"GET /a HTTP/1.0\r\n\r\n",
                    b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        answer = raw(server, request)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"GET /a ")
        assert b"\r\nConnection: close\r\n" in answer


def test_head_request(server):
    answer = requests.head("http://127.0.0.1:%d/h" % server, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Length"] == "8"
    assert answer.content == b""


def test_uploads_small_and_spooled(server):
    big = bytes(range(256)) * 8192          # 2 MiB: over the 1 MiB spool size
    answer = requests.post(
        "http://127.0.0.1:%d/upload" % server, data={"title": "two files"},
        files={"small": ("notes.txt", b"hello upload", "text/plain"),
               "big": ("data.bin", big, "application/octet-stream")}, timeout=20)
    assert answer.status_code == 200
    result = answer.json()
    assert result["post"] == {"title": "two files"}
    files = {f["name"]: f for f in result["files"]}
    assert files["small"] == {"name": "small", "file_name": "notes.txt",
                              "file_type": "text/plain", "file_size": 12,
                              "md5": hashlib.md5(b"hello upload").hexdigest(),
                              "spooled": False}
    assert files["big"]["file_size"] == len(big) and files["big"]["spooled"]
    assert files["big"]["md5"] == hashlib.md5(big).hexdigest()


def test_chunked_upload_from_a_generator(server):
    parts = [b"part-%d;" % n for n in range(100)]
    answer = requests.post("http://127.0.0.1:%d/echo" % server, data=iter(parts), timeout=10)
    assert answer.content == b"".join(parts)


def test_expect_100_continue(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 5\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        status, head, body, rest = read_response(sock)
        assert (status, body) == (200, b"hello")


def test_cookies_and_sessions_across_requests(server):
    client = requests.Session()
    url = "http://127.0.0.1:%d" % server
    assert [client.get(url + "/count", timeout=10).text for _ in range(5)] == [
        "1", "2", "3", "4", "5"]
    assert requests.get(url + "/count", timeout=10).text == "1"   # another browser
    set_by_server = client.get(url + "/cookie?set=mint", timeout=10)
    assert set_by_server.text == "cookie=-"
    assert client.get(url + "/cookie", timeout=10).text == "cookie=mint"


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                    # no Host
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),           # obs-fold
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),                # smuggling pair
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),               # TLS hello
])
def test_bad_requests_are_answered_and_closed_others_go_on(server, project,
                                                             request_bytes, status):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as good:
        good.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(good)[2] == b"GET /before "
        answer = raw(server, request_bytes)
        assert answer.startswith(b"HTTP/1.1 %d " % status)
        assert b"\r\nConnection: close\r\n" in answer
        good.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(good)[2] == b"GET /after "
    wait_until(lambda: "http: %d " % status in project.log(), message="the log line")


def test_handler_exception_closes_nothing_else(server, project):
    url = "http://127.0.0.1:%d" % server
    failed = requests.get(url + "/boom", timeout=10)
    assert failed.status_code == 500
    assert requests.get(url + "/fine", timeout=10).text == "GET /fine "
    wait_until(lambda: "handler failed on purpose" in project.log(), message="traceback")


def test_no_keep_alive_request_fails_during_reload(server, project):
    """While a worker reloads, each answer says Connection: close, and idle connections
    are closed only after a grace: keep-alive clients never see a dropped request."""
    import threading
    stop = threading.Event()
    answered, failures = [], []

    def client():
        session = requests.Session()
        while not stop.is_set():
            try:
                assert session.get("http://127.0.0.1:%d/r" % server, timeout=10).ok
                answered.append(1)
            except Exception as error:  # noqa: BLE001 - any failure is what we count
                failures.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            before = set(project.children())
            wait_until(lambda: len(answered) > 200, message="traffic")
            assert project.command("reload").returncode == 0
            wait_until(lambda: len(set(project.children()) - before) == 2, timeout=20,
                       message="both children replaced")
            answered.clear()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
    assert failures == []


def test_curl_upload_with_expect_continue_and_http10(server, tmp_path):
    """curl sends big uploads with Expect: 100-continue (and chunked with -T -)."""
    import shutil
    import subprocess
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    data = tmp_path / "upload.bin"
    data.write_bytes(bytes(range(256)) * 8192)             # 2 MiB
    url = "http://127.0.0.1:%d/echo" % server
    posted = subprocess.run(["curl", "-sS", "--data-binary", "@%s" % data, "-H",
                             "Expect: 100-continue", url], capture_output=True, timeout=30)
    assert posted.returncode == 0 and posted.stdout == data.read_bytes()
    chunked = subprocess.run(["curl", "-sS", "-T", "-", "-X", "POST", url],
                             input=b"streamed body", capture_output=True, timeout=30)
    assert chunked.stdout == b"streamed body"
    old = subprocess.run(["curl", "-sS", "-i", "--http1.0", url + "?x"], capture_output=True,
                         timeout=30)
    assert old.stdout.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in old.stdout
