"""http://'s fast path in the connection core (_core.py: _feed_http and _hello).

A read that is one whole request already parsed byte for byte (the head cache of
protocol.py) is served by the core without Http.input and Http.decode, and a str sent
on a keep-alive request that set nothing else is answered without Http.encode. Each
must answer exactly as the protocol alone: these tests run against the compiled core
and the pure one (tests/run.sh)."""
import os
import random
import re

import pytest

from geventman.connection.tcp import State
from geventman.protocols import http
from geventman.protocols.http import Http, Response, forms, response
from websocket_support import server_connection

GET = b"GET /fast HTTP/1.1\r\nHost: example.com\r\n\r\n"


def normal(data):
    """Responses with their Date fields blanked (two runs may straddle a second)."""
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", data)


def http_connection(handler, **attributes):
    connection = server_connection(Http, **attributes)
    connection.on_message = handler
    return connection


def hello(connection, request):
    connection.send("Hello, World!")


@pytest.fixture
def calls(monkeypatch):
    """How often each of Http.input, Http.decode and Http.encode was called."""
    counted = {"input": 0, "decode": 0, "encode": 0}
    for name in counted:
        original = getattr(Http, name)

        def counting(data, connection, original=original, name=name):
            counted[name] += 1
            return original(data, connection)
        monkeypatch.setattr(Http, name, staticmethod(counting))
    return counted


def test_a_repeated_request_skips_input_decode_and_encode(calls):
    connection = http_connection(hello)
    connection._feed(GET)                       # parsed, checked, remembered
    first = connection.sink.take()
    assert calls == {"input": 1, "decode": 1, "encode": 0}
    for _ in range(3):
        connection._feed(GET)                   # the same bytes: the core serves them
        assert normal(connection.sink.take()) == normal(first)
    assert calls == {"input": 1, "decode": 1, "encode": 0}
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\nHello, World!")


def test_the_fast_answer_renews_its_head_when_the_second_changes(calls):
    connection = http_connection(hello)
    connection._feed(GET)
    connection.sink.take()
    # As if the second of the prebuilt heads were over: the next answer makes new ones
    # (and so leaves them right for the tests after this one).
    response._hello[:] = [0.0, b"stale keep-alive head: ", b"stale close head: "]
    connection._feed(GET)
    answer = connection.sink.take()
    assert calls["encode"] == 0
    assert answer.startswith(b"HTTP/1.1 200 OK\r\nServer: geventman\r\nDate: "), answer
    assert b"Date: %s\r\n" % response.date() in answer


def test_the_fast_request_is_the_request_decode_would_give(calls):
    seen = []

    def look(connection, request):
        seen.append((request.method, request.uri, request.get, request.body,
                     request.keep_alive, request.header("host"), request.connection))
        assert http.request() is request        # the current request, as decode sets it
        connection.send("ok")
    post = (b"POST /form?a=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/"
            b"x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\nb=2")
    connection = http_connection(look)
    connection._feed(post)
    connection._feed(post)
    assert calls["decode"] == 1                  # the second one came the fast way
    assert seen[0] == seen[1] == ("POST", "/form?a=1", {"a": "1"}, b"b=2", True, "h",
                                  connection)


def test_the_uploads_of_the_last_request_go_when_a_fast_one_comes(monkeypatch, calls):
    monkeypatch.setattr(forms, "spool_size", 1000)
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\n"
            b"\r\n" + os.urandom(5000) + b"\r\n--zz--\r\n")
    uploads = []

    def keep_uploads(connection, request):
        uploads.extend(request.files)
        hello(connection, request)
    connection = http_connection(keep_uploads)
    connection._feed(GET)
    connection._feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; "
                     b"boundary=zz\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert os.path.exists(uploads[0]["tmp_name"])
    decoded = calls["decode"]
    connection._feed(GET)
    assert calls["decode"] == decoded            # the fast way, which ends the upload too
    assert not os.path.exists(uploads[0]["tmp_name"])


def test_what_the_fast_send_leaves_to_encode(calls):
    def answer(connection, request):
        if request.uri == "/header":
            http.header("X-Kind: set")
        connection.send("text")
    requests = [b"HEAD /fast HTTP/1.1\r\nHost: h\r\n\r\n",
                b"GET /header HTTP/1.1\r\nHost: h\r\n\r\n",
                b"GET /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n"]
    for request in requests:
        for gzip in (0, 6):
            connection = http_connection(answer, gzip=gzip)
            connection._feed(request)
            assert calls["encode"], request      # none of them is the plain case
            calls["encode"] = 0
    bytes_answer = http_connection(lambda c, r: c.send(b"raw"))
    bytes_answer._feed(GET)
    assert calls["encode"] == 1                  # only a str is answered by the core


def test_a_stopping_worker_closes_after_the_answer_on_the_fast_path_too():
    class Stopping:
        def __init__(self):
            self._stopping = True   # as Worker.stop sets it
    connection = http_connection(hello)
    connection._feed(GET)
    connection.sink.take()
    connection.worker = Stopping()
    connection._feed(GET)
    assert b"\r\nConnection: close\r\n" in connection.sink.take()
    assert connection.state is State.CLOSED


def test_a_request_while_paused_waits_for_resume():
    def pause(connection, request):
        connection.send("first")
        connection.pause_recv()
    connection = http_connection(pause)
    connection._feed(GET)
    connection._feed(GET)
    connection.sink.take()
    connection._paused = False
    connection.on_message = hello
    connection._feed(b"")                        # what resume_recv does: the kept bytes
    assert connection.sink.take().count(b"HTTP/1.1 200 OK") == 1


def random_requests(rng):
    """Requests of every kind the fast path must tell apart, repeated so that most
    of them are in the head cache, now and then a bad one."""
    kinds = [
        GET,
        b"GET /fast?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"HEAD /fast HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /header HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /response HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /bytes HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /pause HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
        b"GET /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n",
        b"\r\nGET /blank HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
    bad = [b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
           b"BREW / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000 + b"\r\n"]
    requests = []
    for _ in range(rng.randrange(1, 6)):
        requests.append(rng.choice(kinds) if rng.randrange(12) else rng.choice(bad))
    return requests


def answer(connection, request):
    """A handler that reads the request and answers in each way a handler may."""
    uri = request.uri
    if uri == "/fail":
        raise ValueError("a failing handler: 500")
    if uri == "/header":
        http.header("X-Seen: %s" % request.header("host"))
    if uri == "/pause":
        connection.pause_recv()
    text = "%s %s %r %r" % (request.method, uri, request.get, request.body)
    if uri == "/response":
        connection.send(Response(201, {"X-Kind": "object"}, text))
    elif uri == "/bytes":
        connection.send(text.encode())
    elif connection.fast:
        connection.send(text)
    else:
        connection.send(Http.encode(text, connection), raw=True)  # encode alone


def test_the_fast_path_answers_as_the_protocol_alone_for_any_mix_and_any_cut(capsys):
    rng = random.Random(17)
    for case in range(300):
        requests = random_requests(rng)
        fast = http_connection(answer, fast=True, max_package_size=rng.choice((60, 10 << 20)))
        general = http_connection(answer, fast=False, max_package_size=fast.max_package_size)
        for request in requests:
            # Mostly one whole request per read, as a keep-alive client sends them;
            # now and then cut, or pipelined twice in one read.
            pieces = [request]
            kind = rng.randrange(8)
            if kind < 2 and len(request) > 1:
                cut = rng.randrange(1, len(request))
                pieces = [request[:cut], request[cut:]]
            elif kind == 2:
                pieces = [request + request]
            for piece in pieces:
                for connection, feed in ((fast, fast._feed), (general, general._feed_packages)):
                    if connection.state is State.ESTABLISHED:
                        feed(piece)
                        if connection._paused:   # resume_recv, by hand: no hub here
                            connection._paused = False
                            connection._feed(b"") if connection.fast else \
                                connection._feed_packages(b"")
        assert normal(fast.sink.take()) == normal(general.sink.take()), (case, requests)
        assert fast.state is general.state, case
    capsys.readouterr()   # the logged lines of the bad requests and failed handlers
