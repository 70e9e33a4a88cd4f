"""Request timeouts of http:// (protocols/timeout.py), end to end on loopback.

The app's request_timeout is 0.6 s: a head must be whole 0.6 s after its first byte,
a body may not stall 0.6 s. Every wait below is bounded by the sockets' timeouts.
"""
import select
import socket
import time

import pytest
import requests

from conftest import free_port
from geventman.connection.tcp import ESTABLISHED
from geventman.protocols import timeout
from geventman.protocols.http import Http
from test_http_e2e import read_response

APP = """
import gevent

from geventman import Worker

worker = Worker("http://127.0.0.1:%d")
worker.count = 1
worker.request_timeout = 0.6


def on_message(connection, request):
    if request.path == "/slow":
        gevent.sleep(1.5)  # longer than the timeout: the application's time
    connection.send("%%s %%s %%d" %% (request.method, request.path, len(request.body)))


worker.on_message = on_message
"""

HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture
def port(project):
    port = free_port()
    project.app("timed", APP % port)
    project.start(ports=[port])
    return port


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def answer_then_close(sock):
    """(status, seconds waited) of the one response before the server closes."""
    started = time.monotonic()
    status, _, _, rest = read_response(sock)
    assert sock.recv(1) == b"" and rest == b""
    return status, time.monotonic() - started


def test_heads_that_never_end_get_408_and_others_are_served(port, project):
    with connect(port) as first, connect(port) as second:
        first.sendall(HEAD)   # no blank line: the head never ends
        second.sendall(HEAD)
        assert requests.get("http://127.0.0.1:%d/other" % port, timeout=10).text == \
            "GET /other 0"
        for sock in (first, second):
            status, waited = answer_then_close(sock)
            assert status == 408 and waited < 5
    assert project.log().count("http: 408 request head not complete") == 2


def test_a_head_sent_a_byte_at_a_time_still_times_out(port):
    header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200
    with connect(port) as sock:
        started = time.monotonic()
        for byte in header:  # 0.05 s apart: 10 s for the whole head
            sock.sendall(bytes((byte,)))
            if select.select([sock], [], [], 0.05)[0]:
                break
        status, _, _, _ = read_response(sock)
        assert status == 408
        assert time.monotonic() - started < 5   # long before the head was sent


def test_a_stalled_body_times_out(port):
    with connect(port) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        status, waited = answer_then_close(sock)
    assert status == 408 and waited < 5


def test_a_slow_body_that_keeps_moving_is_served(port):
    with connect(port) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
        for byte in b"abcdefghijkl":  # 2.4 s in all, 0.2 s between bytes
            time.sleep(0.2)
            sock.sendall(bytes((byte,)))
        status, _, body, _ = read_response(sock)
    assert (status, body) == (200, b"POST /up 12")


def test_the_handlers_time_and_idle_keep_alive_do_not_count(port):
    with connect(port) as sock:
        # /slow's handler runs 1.5 s while the next head waits half-sent behind it.
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + HEAD)
        status, _, body, rest = read_response(sock)
        assert (status, body, rest) == (200, b"GET /slow 0", b"")
        sock.sendall(b"\r\n")
        status, _, body, _ = read_response(sock)
        assert (status, body) == (200, b"GET / 0")
        time.sleep(1.5)  # idle between requests: not a request that stalls
        sock.sendall(HEAD + b"\r\n")
        status, _, body, _ = read_response(sock)
        assert (status, body) == (200, b"GET / 0")


class Overdue:
    """A connection the sweep found overdue, without a socket: records what it is sent."""

    state = ESTABLISHED
    worker = None
    protocol = Http
    request_timeout = 0.6
    _busy = _paused = False
    bytes_read = 100
    closed_with = None

    def close(self, data, raw=False):
        self.closed_with = data

    def get_remote_ip(self):
        return "127.0.0.1"

    def get_remote_port(self):
        return 1


@pytest.mark.parametrize("meanwhile", ["nothing", "completed", "busy", "body moved"])
def test_an_overdue_request_is_looked_at_again_when_its_408_is_due(meanwhile):
    # The sweep runs on the hub and leaves the 408 to a greenlet. Input read in the
    # same turn of the loop may complete (and answer) the request before that
    # greenlet runs: it must not close a connection that is no longer late.
    connection = Overdue()
    entry = timeout._watched[connection] = ["body", float("inf"), connection.bytes_read]
    try:
        if meanwhile == "completed":
            timeout.done(connection)  # what decode() does with a whole request
        elif meanwhile == "busy":
            connection._busy = True
        elif meanwhile == "body moved":
            connection.bytes_read += 1
        timeout._time_out(connection, entry)
        if meanwhile == "nothing":
            assert connection.closed_with.startswith(b"HTTP/1.1 408 ")
            assert connection not in timeout._watched
        else:
            assert connection.closed_with is None
            assert entry[1] != float("inf") or meanwhile == "completed"
    finally:
        timeout.done(connection)
