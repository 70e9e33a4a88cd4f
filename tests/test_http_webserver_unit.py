"""WebServer pieces without sockets: path resolution (security), static responses,
the WSGI environ, entry-file detection."""
import ast
import os

import pytest

from geventman.protocols.http import static, wsgi
from geventman.webserver import Refused, _top_level_names, resolve
from http_corpus.harness import parse


@pytest.fixture
def root(tmp_path):
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "a.txt").write_text("a")
    (www / "sub" / "b.css").write_text("b")
    (www / ".git").mkdir()
    (www / ".git" / "config").write_text("secret")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(str(tmp_path / "outside.txt"), str(www / "link-out.txt"))
    os.symlink(str(www / "a.txt"), str(www / "link-in.txt"))
    os.symlink(str(tmp_path), str(www / "dir-out"))
    return os.path.realpath(str(www))


@pytest.mark.parametrize("path, found", [
    ("/a.txt", "a.txt"), ("/sub/b.css", "sub/b.css"), ("/sub//b.css", "sub/b.css"),
    ("/%61.txt", "a.txt"), ("/link-in.txt", "a.txt"), ("/", ""), ("/sub/", "sub"),
    ("/missing", None), ("/sub/%2e/b.css", "404"),
])
def test_resolve_inside(root, path, found):
    if found == "404":
        with pytest.raises(Refused) as refused:
            resolve(root, path)
        assert refused.value.status == 404
        return
    expected = None if found is None else os.path.join(root, found) if found else root
    assert resolve(root, path) == expected


@pytest.mark.parametrize("path, status", [
    ("/../outside.txt", 403), ("/%2e%2e/outside.txt", 403), ("/%2E%2e%2Foutside.txt", 403),
    ("/sub/../../outside.txt", 403), ("/link-out.txt", 403), ("/dir-out/outside.txt", 403),
    ("/..", 403), ("/.git/config", 404), ("/%2egit/config", 404), ("/a.txt%00", 404),
    ("/%00", 404), ("*", 404), ("relative", 404), ("/%ff%fe", 404), ("/x.pyc", 404),
    ("/X.Py", 404), ("/__pycache__/x", 404), ("/page.py~", 404), ("/page.py.bak", 404),
    ("/page.py.orig", 404), ("/page.py.swp", 404), ("/.%23page.py", 404),
    ("/%23page.py%23", 404), ("/sub/page.PY.BAK", 404), ("/page.pyc.orig", 404),
    ("/page.py.bak~", 404), ("/%23notes%23", 404),
])
def test_resolve_refuses(root, path, status):
    with pytest.raises(Refused) as refused:
        resolve(root, path)
    assert refused.value.status == status


def request_with(*lines, method="GET", target="/"):
    data = "%s %s HTTP/1.1\r\nHost: h\r\n%s\r\n" % (method, target, "".join(
        line + "\r\n" for line in lines))
    return parse(data.encode("latin-1"))[0][0]


def test_static_validators_and_ranges(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"0123456789")
    first = static.file_response(request_with(), str(path))
    assert first.status == 200 and first.file == (str(path), 0, None)
    etag, modified = first.get_header("ETag"), first.get_header("Last-Modified")
    assert static.file_response(request_with("If-None-Match: W/" + etag), str(path)).status == 304
    assert static.file_response(request_with("If-Modified-Since: " + modified),
                                str(path)).status == 304
    cases = {"bytes=2-4": (2, 3), "bytes=7-": (7, 3), "bytes=-3": (7, 3),
             "bytes=8-100": (8, 2), "bytes=0-0": (0, 1)}
    for header, (offset, length) in cases.items():
        answer = static.file_response(request_with("Range: " + header), str(path))
        assert answer.status == 206 and answer.file == (str(path), offset, length)
        assert answer.get_header("Content-Range") == "bytes %d-%d/10" % (
            offset, offset + length - 1)
    for header in ("bytes=10-", "bytes=-0"):
        assert static.file_response(request_with("Range: " + header), str(path)).status == 416
    for header in ("bytes=1-2,4-5", "items=1-2", "bytes=5-2"):
        assert static.file_response(request_with("Range: " + header), str(path)).status == 200
    stale = static.file_response(request_with("Range: bytes=1-2", 'If-Range: "old"'), str(path))
    assert stale.status == 200


def test_wsgi_environ():
    request = request_with("Content-Type: text/plain", "Content-Length: 0", "X-A: b",
                           method="POST", target="/a%20b/%C3%A9?x=1")
    env = wsgi.environ(request)
    assert env["REQUEST_METHOD"] == "POST" and env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a b/\xc3\xa9"    # bytes as latin-1 (PEP 3333)
    assert env["QUERY_STRING"] == "x=1" and env["CONTENT_TYPE"] == "text/plain"
    assert env["HTTP_X_A"] == "b" and "HTTP_CONTENT_TYPE" not in env
    assert env["SERVER_NAME"] == "h" and env["SERVER_PORT"] == "8080"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.input"].read() == b""
    assert env["wsgi.file_wrapper"] is wsgi.FileWrapper


def test_wsgi_call_collects_write_and_iterable():
    def app(environ, start_response):
        write = start_response("201 Created", [("X-A", "1"), ("Connection", "close")])
        write(b"one ")
        return iter([b"two ", b"three"])
    answer = wsgi.call(app, request_with())
    assert (answer.status, answer.reason, answer.body) == (201, "Created", b"one two three")
    assert answer.headers == [("X-A", "1")]


@pytest.mark.parametrize("source, is_wsgi", [
    ("def application(environ, start_response): pass", True),
    ("application = make()", True),
    ("from app import app as application", True),
    ("import application", True),
    ("app, application = 1, 2", True),
    ("print('application')", False),
    ("def f():\n    application = 1", False),
    ("if x:\n    application = 1", False),
])
def test_entry_kind(source, is_wsgi):
    assert ("application" in _top_level_names(ast.parse(source))) is is_wsgi


def test_wsgi_start_response_with_the_first_chunk():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"late "
        yield b"start"
    assert wsgi.call(app, request_with()).body == b"late start"


def test_wsgi_without_start_response_is_an_error():
    with pytest.raises(RuntimeError):
        wsgi.call(lambda environ, start_response: [b"x"], request_with())
