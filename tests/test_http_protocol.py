"""http:// without sockets: requests in, response bytes out (tests/http_corpus/harness.py)."""
import gzip
import json
import os
import tracemalloc

import gevent
import pytest

from geventman.protocols import http
from geventman.protocols.http import Http, Response, Session, forms, response
from http_corpus.harness import FakeConnection, parse, status_of

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def split_response(data):
    """(status, {lower name: [values]}, body) of one response in ``data``."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        fields.setdefault(name.lower(), []).append(value)
    return int(lines[0].split()[1]), fields, body


def serve(handler, data, **attributes):
    connection = FakeConnection(handler)
    for name, value in attributes.items():
        setattr(connection, name, value)
    connection.feed(data)
    return connection


# -- the manual's examples ----------------------------------------------------------

def test_manual_hello_world_is_200_text_html():
    """Manual, example one: ``$connection->send('hello world')`` on an http:// worker."""
    connection = serve(lambda c, request: c.send("hello world"), GET)
    status, fields, body = split_response(connection.output())
    assert status == 200 and body == b"hello world"
    assert fields["content-type"] == ["text/html;charset=utf-8"]
    assert fields["content-length"] == ["11"]
    assert fields["connection"] == ["keep-alive"]
    assert fields["server"] == ["geventman"] and fields["date"][0].endswith(" GMT")
    assert not connection.closed


def test_manual_files_loop_saves_uploads(tmp_path):
    """Manual, WebServer chapter: ``foreach($_FILES as $file_info) file_put_contents(...)``."""
    body = (b"--b\r\nContent-Disposition: form-data; name=\"logo\"; filename=\"logo.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNG-data\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"file.tar.gz\"\r\n"
            b"\r\nTARDATA\r\n--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhi\r\n--b--\r\n")
    requests, _ = parse(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; "
                        b"boundary=b\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    request = requests[0]
    for file_info in request.files:
        (tmp_path / file_info["file_name"]).write_bytes(file_info["file_data"])
    assert (tmp_path / "logo.png").read_bytes() == b"\x89PNG-data"
    assert (tmp_path / "file.tar.gz").read_bytes() == b"TARDATA"
    logo = request.files["logo"]
    assert (logo["name"], logo["file_type"], logo["file_size"]) == ("logo", "image/png", 9)
    assert request.files[1]["file_type"] == "application/octet-stream"
    assert request.post == {"title": "hi"}


# -- requests ------------------------------------------------------------------------------

def test_superglobals():
    requests, _ = parse(b"POST /p/a%20b?x=1&y[]=2&y[]=3&x=4 HTTP/1.1\r\nHost: h.example:8080\r\n"
                        b"Cookie: sid=abc; name=J%C3%B6rg\r\nX-Custom: v\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: 15\r\n\r\nq=hello+world&e")
    request = requests[0]
    assert request.method == "POST" and request.path == "/p/a%20b"
    assert request.get == {"x": "4", "y": ["2", "3"]}
    assert request.post == {"q": "hello world", "e": ""}
    assert request.cookie == {"sid": "abc", "name": "Jörg"}
    assert request.header("x-CUSTOM") == "v" and request.header("missing", 1) == 1
    server = request.server
    assert server["REQUEST_METHOD"] == "POST"
    assert server["REQUEST_URI"] == "/p/a%20b?x=1&y[]=2&y[]=3&x=4"
    assert server["QUERY_STRING"] == "x=1&y[]=2&y[]=3&x=4"
    assert server["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (server["SERVER_NAME"], server["SERVER_PORT"]) == ("h.example", "8080")
    assert server["HTTP_HOST"] == "h.example:8080" and server["HTTP_X_CUSTOM"] == "v"
    assert server["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert server["CONTENT_LENGTH"] == "15"
    assert (server["REMOTE_ADDR"], server["REMOTE_PORT"]) == ("127.0.0.1", 50000)
    assert request.body == b"q=hello+world&e"
    assert request["get"] is request.get and request["server"] is server  # Workerman 3.x
    with pytest.raises(KeyError):
        request["body"]


def test_json_body_is_post():
    payload = json.dumps({"a": [1, 2], "b": "ü"}).encode()
    requests, _ = parse(b"PUT /j HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    assert requests[0].post == {"a": [1, 2], "b": "ü"}


def test_big_upload_gets_a_temporary_file(monkeypatch):
    monkeypatch.setattr(forms, "spool_size", 1000)
    data = os.urandom(5000)
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../../x.bin\"\r\n"
            b"\r\n" + data + b"\r\n--zz--\r\n")
    connection = FakeConnection()
    connection.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; "
                    b"boundary=zz\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    upload = connection.messages[0].files[0]
    assert upload["file_name"] == "x.bin" and upload["file_size"] == 5000
    with open(upload["tmp_name"], "rb") as handle:
        assert handle.read() == data == upload["file_data"]
    connection.feed(GET)    # the next request ends the last one: its temp files go
    assert not os.path.exists(upload["tmp_name"])


def test_chunked_body_and_expect_continue():
    connection = FakeConnection()
    connection.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
    assert connection.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    connection.feed(b"3\r\nabc\r\n")
    assert connection.messages == []
    connection.feed(b"0\r\n\r\n")
    assert connection.messages[0].body == b"abc"


def test_no_continue_when_the_body_is_already_there():
    connection = FakeConnection()
    connection.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 2\r\n\r\nok")
    assert connection.sent == [] and connection.messages[0].body == b"ok"


def test_oversized_body_is_413_before_it_is_sent():
    connection = FakeConnection()
    connection.max_package_size = 1000
    connection.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 2000\r\n\r\n")
    assert status_of(connection.output()) == 413 and connection.closed


def test_chunked_body_over_max_package_size_is_413():
    connection = FakeConnection()
    connection.max_package_size = 1000
    connection.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(20):
        connection.feed(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert status_of(connection.output()) == 413 and connection.closed


# -- responses ------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order():
    connection = serve(lambda c, request: c.send(request.path), b"".join(
        b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % n for n in range(5)))
    bodies = [part.split(b"\r\n\r\n")[1] for part in
              connection.output().split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/0", b"/1", b"/2", b"/3", b"/4"]


def test_connection_close_and_http10_close_after_the_answer():
    for request in (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                    b"GET / HTTP/1.0\r\n\r\n"):
        connection = serve(lambda c, r: c.send("bye"), request + GET)
        status, fields, body = split_response(connection.output())
        assert (status, fields["connection"], body) == (200, ["close"], b"bye")
        assert connection.closed and len(connection.messages) == 1


def test_http10_keep_alive_stays_open():
    connection = serve(lambda c, r: c.send("x"),
                       b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert split_response(connection.output())[1]["connection"] == ["keep-alive"]
    assert not connection.closed


def test_head_has_length_but_no_body():
    connection = serve(lambda c, r: c.send("twelve bytes"),
                       b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    status, fields, body = split_response(connection.output())
    assert fields["content-length"] == ["12"] and body == b""


def test_response_object():
    answer = Response(201, {"Content-Type": "application/json", "X-Id": "7"}, '{"id": 7}')
    connection = serve(lambda c, r: c.send(answer), GET)
    status, fields, body = split_response(connection.output())
    assert (status, body) == (201, b'{"id": 7}')
    assert fields["content-type"] == ["application/json"] and fields["x-id"] == ["7"]
    assert fields["content-length"] == ["9"]


def test_header_set_cookie_and_location():
    def handler(connection, request):
        http.header("X-Powered-By: geventman")
        http.header("X-Multi: 1")
        http.header("X-Multi: 2", replace=False)
        http.set_cookie("name", "a b", max_age=60, path="/", http_only=True)
        http.header("Location: /elsewhere")
        connection.send("moved")
    status, fields, body = split_response(serve(handler, GET).output())
    assert status == 302 and fields["location"] == ["/elsewhere"]
    assert fields["x-powered-by"] == ["geventman"] and fields["x-multi"] == ["1", "2"]
    cookie = fields["set-cookie"][0]
    assert cookie.startswith("name=a%20b; Max-Age=60; Expires=") and cookie.endswith(
        "; Path=/; HttpOnly")


def test_status_line_from_header_and_headers_reset_per_response():
    def handler(connection, request):
        if request.path == "/a":
            http.header("HTTP/1.1 404 Not Found")
            http.header("X-Only: a")
        connection.send(request.path)
    output = serve(handler, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" + GET).output()
    first, second = output.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"404 Not Found") and b"X-Only: a" in first
    assert second.startswith(b"200 OK") and b"X-Only" not in second


def test_header_refuses_response_splitting():
    def handler(connection, request):
        with pytest.raises(ValueError):
            http.header("X-Evil: a\r\nSet-Cookie: x=1")
        connection.send("ok")
    assert b"x=1" not in serve(handler, GET).output()


def test_helpers_outside_a_request_raise():
    done = []

    def elsewhere():
        with pytest.raises(RuntimeError):
            http.header("X-A: b")
        done.append(True)
    gevent.spawn(elsewhere).join()
    assert done


def test_gzip_when_accepted_and_enabled():
    text = "geventman " * 500

    def handler(connection, request):
        connection.send(text)
    plain = serve(handler, b"GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n")
    assert b"Content-Encoding" not in plain.output()
    zipped = serve(handler, b"GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip, br\r\n\r\n",
                   gzip=6)
    status, fields, body = split_response(zipped.output())
    assert fields["content-encoding"] == ["gzip"] and fields["vary"] == ["Accept-Encoding"]
    assert gzip.decompress(body).decode() == text
    assert int(fields["content-length"][0]) == len(body) < len(text)
    unasked = serve(handler, GET, gzip=6)
    assert b"Content-Encoding" not in unasked.output()


def test_file_response_small_and_streamed(tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"small file")
    big = tmp_path / "big.bin"
    content = os.urandom(3 * 1024 * 1024 + 17)
    big.write_bytes(content)
    connection = serve(lambda c, r: c.send(Response().with_file(str(small))), GET)
    status, fields, body = split_response(connection.output())
    assert body == b"small file" and fields["content-type"] == ["text/plain;charset=utf-8"]
    connection = serve(lambda c, r: c.send(Response().with_file(str(big))),
                       GET + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert connection.paused and len(connection.messages) == 1  # reading waits for the file
    gevent.sleep(0.5)
    status, fields, body = split_response(connection.output())
    assert int(fields["content-length"][0]) == len(content)
    assert body[:len(content)] == content
    assert body[len(content):].startswith(b"HTTP/1.1 200 OK")   # then the next answer
    assert len(connection.messages) == 2
    assert not connection.paused and not connection.closed


def test_send_of_bytes_and_date_is_cached_per_second():
    first = response.hello_head(True)
    assert response.hello_head(True) is first or b"Date: " in first
    connection = serve(lambda c, r: c.send(b"\x00\x01"), GET)
    assert split_response(connection.output())[2] == b"\x00\x01"


def test_end_raises_end_request():
    with pytest.raises(http.EndRequest) as raised:
        http.end("stop here")
    assert raised.value.message == "stop here"


# -- sessions -------------------------------------------------------------------------

@pytest.fixture
def sessions(tmp_path, monkeypatch):
    monkeypatch.setattr(Session, "save_path", str(tmp_path / "sessions"))
    monkeypatch.setattr(Session, "gc_probability", 0)
    return tmp_path / "sessions"


def counter(connection, request):
    session = http.session_start()
    session["n"] = session.get("n", 0) + 1
    connection.send(str(session["n"]))


def test_session_cookie_and_data_across_requests(sessions):
    status, fields, body = split_response(serve(counter, GET).output())
    cookie = fields["set-cookie"][0]
    assert cookie.startswith(Session.name + "=") and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie and "Path=/" in cookie
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert len(session_id) == 43 and (sessions / ("sess_" + session_id)).exists()
    again = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: %s=%s\r\n\r\n" % (
        Session.name.encode(), session_id.encode())
    status, fields, body = split_response(serve(counter, again).output())
    assert body == b"2" and "set-cookie" not in fields


def test_session_ids_are_not_chosen_by_the_client(sessions):
    for forged in ("../../etc/passwd", "a" * 43, "x"):
        request = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: %s=%s\r\n\r\n" % (
            Session.name.encode(), forged.encode())
        status, fields, body = split_response(serve(counter, request).output())
        given = fields["set-cookie"][0].split(";")[0].split("=", 1)[1]
        assert body == b"1" and given != forged and len(given) == 43
    assert all(len(p.name) == 48 for p in sessions.iterdir())


def test_session_expires_and_gc(sessions, monkeypatch):
    status, fields, body = split_response(serve(counter, GET).output())
    session_id = fields["set-cookie"][0].split(";")[0].split("=", 1)[1]
    path = sessions / ("sess_" + session_id)
    os.utime(path, (1, 1))
    again = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: %s=%s\r\n\r\n" % (
        Session.name.encode(), session_id.encode())
    assert split_response(serve(counter, again).output())[2] == b"1"
    os.utime(path, (1, 1))
    Session.store.gc(Session.lifetime)
    assert not path.exists()


def test_empty_session_sets_no_cookie(sessions):
    def look(connection, request):
        connection.send(str(request.session.get("user")))
    assert b"Set-Cookie" not in serve(look, GET).output()


def test_bad_input_does_not_reach_on_message():
    calls = []
    connection = serve(lambda c, r: calls.append(r), b"GET / HTTP/1.1\r\n\r\n")
    assert calls == [] and status_of(connection.output()) == 400 and connection.closed


def test_http_module_exports():
    assert http.Http is Http
    for name in ("header", "set_cookie", "session_start", "end"):
        assert callable(getattr(http, name))


# -- limits on what one client may cost ----------------------------------------------


def test_a_few_empty_lines_before_a_request_line_are_ignored():
    connection = serve(lambda c, request: c.send(request.path), b"\r\n\n" * 100 + GET)
    assert status_of(connection.output()) == 200 and not connection.closed


def test_empty_lines_before_a_request_line_count_against_the_head_limit():
    """Before, they were not counted: 10 MB of CRLF and then a request got 200."""
    data = b"\r\n" * 8000 + b"GET / HTTP/1.1\r\nHost: x\r\nX-Fill: " + b"a" * 400 + b"\r\n\r\n"
    assert len(data) > http.Http.header_limit
    connection = serve(lambda c, request: c.send("served"), data)
    assert status_of(connection.output()) == 431 and connection.closed
    assert b"served" not in connection.output()


def test_ten_megabytes_of_crlf_are_refused_after_the_head_limit():
    connection = FakeConnection(lambda c, request: c.send("served"))
    fed = 0
    while not connection.closed and fed < 10 << 20:
        connection.feed(b"\r\n" * 32768)
        fed += 65536
    assert fed <= 65536 and status_of(connection.output()) == 431


def test_empty_lines_dribbled_are_skipped_once():
    """The parser remembers how far the empty lines went: each read looks at its new
    bytes only (before, every read stripped and re-joined the whole buffer)."""
    connection = FakeConnection()
    for _ in range(1000):
        connection.feed(b"\n")
    assert connection._http.parse.start == 1000
    for byte in GET:
        connection.feed(bytes((byte,)))
    assert [request.path for request in connection.messages] == ["/"]


def chunked(chunks):
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) \
        + b"0\r\n\r\n"


def test_chunk_size_lines_count_against_the_body_limit():
    """2,000 one-byte chunks are 2,000 bytes of body but 12,000 on the wire."""
    served = serve(lambda c, request: c.send(request.body), chunked([b"x"] * 1000),
                   max_package_size=10000)
    assert split_response(served.output())[2] == b"x" * 1000
    refused = serve(lambda c, request: c.send("served"), chunked([b"x"] * 2000),
                    max_package_size=10000)
    assert status_of(refused.output()) == 413 and refused.closed


def test_a_body_of_tiny_chunks_costs_memory_about_its_wire_size():
    """Before: every chunk was kept as its own bytes object (measured here: a peak of
    12.5 MB for these 700 KB)."""
    data = chunked([b"ab"] * 100000)                          # 700 KB on the wire
    bodies = []
    connection = FakeConnection(lambda c, request: bodies.append(len(request.body)))
    tracemalloc.start()
    try:
        connection.feed(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bodies == [200000]
    assert peak < 3 * len(data), "peak %d for %d bytes" % (peak, len(data))


# -- the cache of parsed request heads --------------------------------------------------

@pytest.fixture
def head_cache(monkeypatch):
    """An empty cache, and a count of the heads actually parsed."""
    from geventman.protocols.http import parser, protocol
    monkeypatch.setattr(protocol, "_heads", {})
    parsed = []
    real = parser.read_head

    def counting(buffer, state, limit=parser.HEADER_LIMIT):
        parsed.append(bytes(buffer))
        return real(buffer, state, limit)

    monkeypatch.setattr(parser, "read_head", counting)
    return protocol._heads, parsed


def echo_request(connection, request):
    connection.send("%s %s %s %s %r" % (request.method, request.uri, request.keep_alive,
                                         request.header("host"), request.body))


def test_a_repeated_request_is_not_parsed_again(head_cache):
    heads, parsed = head_cache
    first = serve(echo_request, GET).output()
    again = serve(echo_request, GET)              # another connection, the same bytes
    assert parsed == [GET] and list(heads) == [GET]
    assert split_response(again.output())[2] == split_response(first)[2] == \
        b"GET / True example.com b''"
    body = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    for _ in range(3):
        assert split_response(serve(echo_request, body).output())[2] == \
            b"POST /p True h b'abc'"
    assert parsed.count(body) == 1


def test_cached_heads_keep_every_per_connection_check(head_cache):
    heads, _ = head_cache
    serve(echo_request, GET)
    small = serve(echo_request, GET, max_package_size=len(GET) - 1)
    assert status_of(small.output()) == 413 and small.closed


def test_only_whole_plain_requests_are_cached(head_cache):
    heads, _ = head_cache
    for request in (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n",
                    b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 1\r\n\r\nx",
                    b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
                    b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: h\r\n\r\n"):
        serve(echo_request, request)
    # Not chunked, Expect, a large one, nor the buffer of two pipelined requests: only
    # the second of those, once it is the whole buffer.
    assert list(heads) == [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]
    connection = FakeConnection(echo_request)
    for byte in GET:                               # dribbled in: parsed each time
        connection.feed(bytes([byte]))
    assert status_of(connection.output()) == 200


def test_the_cache_is_bounded(head_cache):
    from geventman.protocols.http import protocol
    heads, _ = head_cache
    for number in range(protocol.HEAD_CACHE_SIZE + 50):
        serve(echo_request, b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % number)
    assert len(heads) == protocol.HEAD_CACHE_SIZE
    assert b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n" not in heads   # the oldest left first
