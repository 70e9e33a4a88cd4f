"""One client must never cost a process more than its limits, nor forge its log.

End to end, one child per worker: a WebSocket message of many tiny fragments is
closed with 1009 while the child's memory stays bounded; a flood of empty lines
before an HTTP request line gets 431 at once; a WebSocket handshake sent a byte at a
time gets 408 after ``request_timeout``; control bytes in every client value that a
refusal logs are escaped, one line per refusal.
"""
import os
import re
import socket
import struct
import threading
import time

import psutil

from conftest import app_source, free_port, wait_until
from websocket_support import RawClient, close_code, handshake


def peak_rss(pid):
    """The process's peak resident size in bytes (VmHWM), else its current RSS."""
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss


def send_in_background(sock, data):
    """sendall in a thread: the server closes while we send, which is the point."""
    def run():
        try:
            sock.sendall(data)
        except OSError:
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_close_frame(client, timeout=10):
    """The status code of the close frame the server sends (other frames skipped)."""
    client.sock.settimeout(timeout)
    while True:
        first, payload = client.recv_frame()
        if first == 0x88:
            return close_code(payload)


def log_lines_about(project, port):
    pattern = re.compile(r"127\.0\.0\.1:%d\b" % port)
    return [line for line in project.log().splitlines() if pattern.search(line)]


# -- WebSocket fragments -------------------------------------------------------------

WS_APP = """
    from geventman import Worker

    worker = Worker("websocket://127.0.0.1:PORT")
    worker.count = 1
    SETTINGS

    worker.on_message = lambda connection, data: connection.send(data)
"""

MASK = b"\x00\x00\x00\x00"   # a zero mask: the payload goes as it is


def start_ws(project, settings=""):
    port = free_port()
    project.app("ws", app_source(WS_APP, port).replace("SETTINGS", settings))
    project.start(ports=[port])
    child = project.wait_children(1)[0]
    return port, child


def fragments(count, payload=b""):
    """A binary message opened and continued by ``count`` frames of ``payload``, never
    finished: every frame masked, 6 bytes of header each."""
    continuation = bytes((0x00, 0x80 | len(payload))) + MASK + payload
    return bytes((0x02, 0x80 | len(payload))) + MASK + payload + continuation * count


def test_many_empty_fragments_are_closed_with_1009(project):
    """2,000,000 empty continuation frames (12 MB, no payload at all): before, the
    limit counted only payload and never fired; now the message meets the fragment
    bound (and its wire bytes count), 1009, and the child's memory hardly moves."""
    port, child = start_ws(project)
    client = RawClient(port)
    before = peak_rss(child)
    started = time.monotonic()
    send_in_background(client.sock, fragments(2000000))
    assert read_close_frame(client) == 1009
    assert client.closed_by_peer(timeout=10)
    assert time.monotonic() - started < 8
    grown = peak_rss(child) - before
    assert grown < 16 << 20, "the child grew by %d bytes" % grown
    lines = log_lines_about(project, client.sock.getsockname()[1])
    assert len(lines) == 1 and "1009" in lines[0] and "fragments" in lines[0], lines
    with RawClient(port) as other:          # the child serves on
        assert other.ask("still here") == "still here"


def test_one_byte_fragments_are_bounded_by_their_wire_bytes(project):
    """With the fragment bound lifted, 1-byte fragments (7 bytes each on the wire) are
    stopped by max_package_size counting every wire byte: 1009 after about 4 MB, and
    the child grows by a small multiple of that at most (before: a list of 600,000
    bytes objects and no 1009 until 4 MB of payload, 28 MB of wire)."""
    limit = 4 << 20
    port, child = start_ws(project, "worker.websocket_max_fragments = 10 ** 8\n"
                           "    def on_connect(connection):\n"
                           "        connection.max_package_size = %d\n"
                           "    worker.on_connect = on_connect" % limit)
    client = RawClient(port)
    before = peak_rss(child)
    started = time.monotonic()
    send_in_background(client.sock, fragments(limit // 7 + 1000, b"x"))
    assert read_close_frame(client) == 1009
    assert time.monotonic() - started < 8
    grown = peak_rss(child) - before
    assert grown < 3 * limit, "the child grew by %d bytes" % grown
    lines = log_lines_about(project, client.sock.getsockname()[1])
    assert len(lines) == 1 and "max_package_size" in lines[0], lines


# -- HTTP: empty lines before a request line ----------------------------------------

HTTP_APP = """
    from geventman import Worker

    worker = Worker("http://127.0.0.1:PORT")
    worker.count = 1
    worker.on_message = lambda connection, request: connection.send("ok " + request.path)
"""


def http_get(port, path="/"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        return receive_all(sock)


def receive_all(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_ten_megabytes_of_empty_lines_get_431_at_once(project):
    """Before: 10,000,000 bytes of CRLF were skipped (each read stripping and joining
    the whole buffer), then the request was served: 200 after 2.4 s of CPU."""
    port = free_port()
    project.app("web", app_source(HTTP_APP, port))
    project.start(ports=[port])
    child = psutil.Process(project.wait_children(1)[0])
    cpu_before = sum(child.cpu_times()[:2])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sender = send_in_background(
            sock, b"\r\n" * 5000000 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = receive_all(sock)
        client_port = sock.getsockname()[1]
    sender.join(10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"ok /" not in answer
    assert sum(child.cpu_times()[:2]) - cpu_before < 1.0
    assert http_get(port, b"/after").endswith(b"ok /after")
    lines = log_lines_about(project, client_port)
    assert len(lines) == 1 and "431" in lines[0], lines


# -- the WebSocket handshake has request_timeout -------------------------------------

def test_a_slow_websocket_handshake_gets_408(project):
    port, _ = start_ws(project, "worker.request_timeout = 0.5")
    request = handshake(host="127.0.0.1:%d" % port)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as dribbling:
        stalled.sendall(request[:10])
        answer = b""
        for byte in request[:-1]:           # one byte every 50 ms: 10 s for all of it
            try:
                dribbling.sendall(bytes((byte,)))
            except OSError:
                break                       # closed under us: what we wait for
            dribbling.settimeout(0.05)
            try:
                answer = dribbling.recv(65536)
            except socket.timeout:
                continue
            break
        elapsed = time.monotonic() - started
        stalled.settimeout(10)
        assert receive_all(stalled).startswith(b"HTTP/1.1 408 ")
        dribbling.settimeout(10)
        answer += receive_all(dribbling)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.5 <= elapsed < 5
    with RawClient(port) as fine:            # a handshake in time is unaffected
        assert fine.ask("hi") == "hi"


# -- log injection -------------------------------------------------------------------

LOG_APP = """
    from geventman import Worker

    ws = Worker("websocket://127.0.0.1:WS_PORT")
    ws.count = 1
    web = Worker("http://127.0.0.1:HTTP_PORT")
    web.count = 1
    web.on_message = lambda connection, request: connection.send("ok")
"""

# No space in it, so that it stays one part of a request line (the version, say).
FORGED = b"\n2026-01-01\t00:00:00\tpid:1\tforged\r\x00\x1b[31m\x7f\x85"

HTTP_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
BAD_INPUTS = [
    ("ws", handshake(host="x").replace(b"HTTP/1.1", b"HTTP/1.1" + FORGED, 1)),  # version
    ("ws", handshake(host="x").replace(b"HTTP/1.1", b"HTTP/1.1\x85\x9b31m", 1)),  # C1 only
    ("ws", handshake(host="x").replace(b"GET / ", b"GET /" + FORGED + b" ", 1)),
    ("ws", handshake(host="x").replace(b"GET / ", b"GET / " + FORGED + b" ", 1)),
    ("ws", handshake(host="x").replace(b"Host:", b"H" + FORGED + b"ost:", 1)),
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100" + FORGED.replace(b"\n", b"")
     .replace(b"\r", b"").replace(b"\x00", b"").replace(b"\x1b", b"").replace(b"\x7f", b"")
     + b"\r\n\r\n"),
    ("http", HTTP_HEAD + b"5" + FORGED + b"\r\nhello\r\n0\r\n\r\n"),  # chunk size line
    ("http", HTTP_HEAD + b"5\r\nhello\r\n0\r\nX-T" + FORGED + b"\r\n\r\n"),  # trailer
    ("http", b"GET / HTTP/1.1 " + FORGED + b"\r\nHost: x\r\n\r\n"),
    ("http", b"GET /" + FORGED + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\nX" + FORGED + b": 1\r\n\r\n"),
]


def test_client_bytes_in_log_lines_are_escaped(project):
    """Each refusal writes exactly one line; no raw control byte reaches the log."""
    ports = {"ws": free_port(), "http": free_port()}
    project.app("log", LOG_APP.replace("WS_PORT", str(ports["ws"]))
                .replace("HTTP_PORT", str(ports["http"])))
    project.start(ports=list(ports.values()))
    client_ports = []
    for kind, data in BAD_INPUTS:
        with socket.create_connection(("127.0.0.1", ports[kind]), timeout=10) as sock:
            sock.sendall(data)
            answer = receive_all(sock)
            client_ports.append(sock.getsockname()[1])
        assert re.match(rb"HTTP/1\.1 4\d\d ", answer), (data, answer)
    for client_port in client_ports:
        wait_until(lambda: log_lines_about(project, client_port), message="a log line")
    log = project.log()
    for client_port, (kind, data) in zip(client_ports, BAD_INPUTS):
        assert len(log_lines_about(project, client_port)) == 1, (data, log)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", log), log
    for line in log.splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d pid:\d+ ", line), line
        assert not line.startswith("2026-01-01"), line
    assert "version 'HTTP/1.1\\x85\\x9b31m', not HTTP/1.1" in log, log   # escaped
