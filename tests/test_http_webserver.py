"""WebServer end to end: static files, security, entry scripts, WSGI (Flask), reload."""
import email.utils
import hashlib
import os
import socket
from urllib.parse import quote

import pytest
import requests

from conftest import free_port, wait_until

START = """
from geventman import WebServer
from geventman.protocols.http import Session

Session.save_path = %(sessions)r
web = WebServer("http://127.0.0.1:%(port)d")
web.count = 2
web.add_root("site.test", "www")
web.add_root("other.test", %(other)r)
"""

SCRIPT_INDEX = """
print("entry", request.method, request.path)
if request.get.get("end"):
    http.end("stopped early")
if request.get.get("exit"):
    exit()
if request.get.get("fail"):
    raise RuntimeError("page failed on purpose")
if request.get.get("redirect"):
    http.header("Location: /moved")
print("after", request.get.get("q", ""), end="")
"""

PAGE = """
http.header("Content-Type: text/plain")
http.header("X-Page: yes")
session = http.session_start()
session["visits"] = session.get("visits", 0) + 1
print("visits", session["visits"])
print("post", request.post.get("name", ""))
"""

FLASK_APP = """
from flask import Flask, jsonify, request, send_file, make_response

app = Flask(__name__)

@app.route("/")
def home():
    return "flask home"

@app.route("/hello/<name>")
def hello(name):
    return jsonify(hello=name, q=request.args.get("q"))

@app.route("/form", methods=["POST"])
def form():
    upload = request.files.get("doc")
    return jsonify(name=request.form.get("name"), doc=upload.read().decode() if upload else None)

@app.route("/json", methods=["POST"])
def json_post():
    return jsonify(got=request.get_json())

@app.route("/cookie")
def cookie():
    response = make_response("seen=" + request.cookies.get("c", "-"))
    response.set_cookie("c", "flask")
    return response

@app.route("/download")
def download():
    return send_file(__file__.replace("flaskapp.py", "blob.bin"), mimetype="application/x-blob")
"""

WSGI_APP = """
def application(environ, start_response):
    body = ("%(REQUEST_METHOD)s %(PATH_INFO)s %(QUERY_STRING)s " % environ).encode()
    body += environ["wsgi.input"].read()
    start_response("202 Accepted", [("Content-Type", "text/plain"), ("X-Wsgi", "1")])
    return [body, b"!"]
"""


@pytest.fixture
def site(project, tmp_path):
    port = free_port()
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("other host")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET")
    project.app("site", START % {"port": port, "other": str(other),
                                 "sessions": str(tmp_path / "sessions")})
    www = project.path("applications", "site", "www")
    os.makedirs(os.path.join(www, "css"))
    files = {"index.py": SCRIPT_INDEX, "page.py": PAGE, "css/site.css": "body{}",
             "hello.txt": "hello static", ".env": "PASSWORD=1", "notes.PY": "x=1",
             "app.json": "{}"}
    for name, text in files.items():
        with open(os.path.join(www, name), "w") as handle:
            handle.write(text)
    with open(os.path.join(www, "big.bin"), "wb") as handle:
        handle.write(os.urandom(8 * 1024 * 1024 + 3))
    os.symlink(str(outside), os.path.join(www, "escape"))
    os.symlink(str(outside / "secret.txt"), os.path.join(www, "secret-link.txt"))
    project.start(ports=[port])
    return {"url": "http://127.0.0.1:%d" % port, "port": port, "www": www}


def get(site, path, **kwargs):
    kwargs.setdefault("timeout", 20)
    kwargs.setdefault("headers", {}).setdefault("Host", "site.test")
    return requests.get(site["url"] + path, **kwargs)


def raw_get(port, target, host=b"site.test"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, host))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_static_files_with_mime_types(site):
    answer = get(site, "/hello.txt")
    assert answer.text == "hello static"
    assert answer.headers["Content-Type"] == "text/plain;charset=utf-8"
    assert get(site, "/css/site.css").headers["Content-Type"] == "text/css;charset=utf-8"
    assert get(site, "/app.json").headers["Content-Type"].startswith("application/json")


def test_not_modified_and_etag(site):
    first = get(site, "/hello.txt")
    modified, etag = first.headers["Last-Modified"], first.headers["ETag"]
    assert get(site, "/hello.txt", headers={"If-Modified-Since": modified}).status_code == 304
    assert get(site, "/hello.txt", headers={"If-None-Match": etag}).status_code == 304
    older = email.utils.formatdate(0, usegmt=True)
    assert get(site, "/hello.txt", headers={"If-Modified-Since": older}).status_code == 200
    assert get(site, "/hello.txt", headers={"If-None-Match": '"other"'}).status_code == 200


def test_ranges(site):
    answer = get(site, "/hello.txt", headers={"Range": "bytes=0-4"})
    assert (answer.status_code, answer.content) == (206, b"hello")
    assert answer.headers["Content-Range"] == "bytes 0-4/12"
    assert get(site, "/hello.txt", headers={"Range": "bytes=-6"}).content == b"static"
    assert get(site, "/hello.txt", headers={"Range": "bytes=6-"}).content == b"static"
    unsatisfiable = get(site, "/hello.txt", headers={"Range": "bytes=100-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == "bytes */12"
    with open(os.path.join(site["www"], "big.bin"), "rb") as handle:
        handle.seek(5_000_000)
        expected = handle.read(1_000_000)
    part = get(site, "/big.bin", headers={"Range": "bytes=5000000-5999999"})
    assert part.status_code == 206 and part.content == expected


def test_big_file_streams_whole(site):
    with open(os.path.join(site["www"], "big.bin"), "rb") as handle:
        digest = hashlib.md5(handle.read()).hexdigest()
    with requests.Session() as client:
        for _ in range(2):     # the second request proves the connection was kept
            answer = client.get(site["url"] + "/big.bin", headers={"Host": "site.test"},
                                timeout=30)
            assert answer.headers["Content-Type"] == "application/octet-stream"
            assert hashlib.md5(answer.content).hexdigest() == digest
    head = requests.head(site["url"] + "/big.bin", timeout=10)
    assert head.headers["Content-Length"] == str(8 * 1024 * 1024 + 3) and head.content == b""


def test_virtual_hosts(site):
    assert get(site, "/", headers={"Host": "other.test"}).text == "other host"
    assert get(site, "/", headers={"Host": "OTHER.test:8080"}).text == "other host"
    assert get(site, "/hello.txt", headers={"Host": "unknown.test"}).text == "hello static"


@pytest.mark.parametrize("target", [
    b"/../start.py", b"/%2e%2e/start.py", b"/%2E%2E/start.py", b"/..%2fstart.py",
    b"/%2e%2e%2fstart.py", b"/css/../../start.py", b"/css/%2e%2e/%2e%2e/start.py",
    b"/escape/secret.txt", b"/secret-link.txt", b"//etc/passwd", b"/%00/hello.txt",
    b"/hello.txt%00.py", b"/.env", b"/%2eenv", b"/notes.PY", b"/page.py%00",
    b"/..%5c..%5cstart.py", b"/%252e%252e/start.py", b"/css/..",
])
def test_never_serves_outside_the_root(site, target):
    answer = raw_get(site["port"], target)
    status = int(answer.split(b" ", 2)[1])
    assert status in (403, 404) or answer.split(b"\r\n\r\n", 1)[1].startswith(b"entry")
    for leak in (b"TOP SECRET", b"PASSWORD", b"import os", b"Worker.run_all", b"root:x:"):
        assert leak not in answer


BACKUPS = ["page.py~", "page.py.bak", "page.py.orig", "page.py.swp", ".#page.py",
           "#page.py#", "page.pyc", "sub/old.py.bak"]


def test_backup_and_swap_copies_of_python_files_are_never_sent(site):
    """Editors leave copies of entry files beside them; none is sent, whole, in part
    (Range) or compressed (Accept-Encoding: gzip), and plain copies of other files are."""
    os.makedirs(os.path.join(site["www"], "sub"), exist_ok=True)
    for name in BACKUPS + ["notes.txt.bak"]:
        with open(os.path.join(site["www"], name), "w") as handle:
            handle.write("import secret_source\n")
    for name in BACKUPS:
        target = "/" + quote(name)
        for headers in ({}, {"Range": "bytes=0-5"}, {"Accept-Encoding": "gzip"},
                        {"Range": "bytes=-6", "Accept-Encoding": "gzip"}):
            answer = get(site, target, headers=dict(headers))
            assert answer.status_code == 404, (name, headers, answer.status_code)
            assert b"secret_source" not in answer.content and b"import" not in answer.content
    assert get(site, "/notes.txt.bak").text == "import secret_source\n"


def test_python_files_run_and_are_never_sent_as_source(site):
    client = requests.Session()
    answer = client.post(site["url"] + "/page.py", data={"name": "ann"},
                         headers={"Host": "site.test"}, timeout=10)
    assert answer.text == "visits 1\npost ann\n"
    assert answer.headers["Content-Type"] == "text/plain" and answer.headers["X-Page"] == "yes"
    assert "HttpOnly" in answer.headers["Set-Cookie"]
    again = client.get(site["url"] + "/page.py", headers={"Host": "site.test"}, timeout=10)
    assert again.text == "visits 2\npost \n"
    assert "session_start" not in again.text


def test_entry_script_for_missing_paths(site, project):
    assert get(site, "/no/such/page?q=1").text == "entry GET /no/such/page\nafter 1"
    assert get(site, "/").text == "entry GET /\nafter "
    assert get(site, "/x?end=1").text == "entry GET /x\nstopped early"
    assert get(site, "/x?exit=1").text == "entry GET /x\n"
    moved = get(site, "/x?redirect=1", allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"] == "/moved"
    failed = get(site, "/x?fail=1")
    assert failed.status_code == 500
    assert get(site, "/still/alive").status_code == 200
    wait_until(lambda: "page failed on purpose" in project.log(), message="traceback in log")


def test_reload_refreshes_entry_scripts(site, project):
    assert get(site, "/page.py").text.startswith("visits 1")
    with open(os.path.join(site["www"], "page.py"), "w") as handle:
        handle.write('print("new code")\n')
    assert project.command("reload").returncode == 0
    wait_until(lambda: get(site, "/page.py").text == "new code\n", timeout=20,
               message="new code after reload")


# -- WSGI -----------------------------------------------------------------------------------

@pytest.fixture
def wsgi_site(project, tmp_path, request):
    port = free_port()
    project.app("site", START % {"port": port, "other": str(tmp_path),
                                 "sessions": str(tmp_path / "sessions")})
    www = project.path("applications", "site", "www")
    os.makedirs(www)
    for name, text in request.param.items():
        with open(os.path.join(www, name), "w") as handle:
            handle.write(text)
    with open(os.path.join(www, "blob.bin"), "wb") as handle:
        handle.write(b"B" * 300_000)
    with open(os.path.join(www, "static.txt"), "w") as handle:
        handle.write("static beside flask")
    project.start(ports=[port])
    return {"url": "http://127.0.0.1:%d" % port, "port": port, "www": www}


FLASK_ENTRY = {"index.py": "from flaskapp import app as application\n",
               "flaskapp.py": FLASK_APP}


@pytest.mark.parametrize("wsgi_site", [FLASK_ENTRY], indirect=True)
def test_flask_app_through_the_entry_file(wsgi_site):
    url = wsgi_site["url"]
    assert requests.get(url + "/", timeout=10).text == "flask home"
    assert requests.get(url + "/hello/w%C3%B6rld?q=2", timeout=10).json() == {
        "hello": "wörld", "q": "2"}
    form = requests.post(url + "/form", data={"name": "ann"},
                         files={"doc": ("d.txt", b"document")}, timeout=10)
    assert form.json() == {"name": "ann", "doc": "document"}
    assert requests.post(url + "/json", json={"a": 1}, timeout=10).json() == {"got": {"a": 1}}
    client = requests.Session()
    assert client.get(url + "/cookie", timeout=10).text == "seen=-"
    assert client.get(url + "/cookie", timeout=10).text == "seen=flask"
    download = requests.get(url + "/download", timeout=10)
    assert download.content == b"B" * 300_000
    assert download.headers["Content-Type"] == "application/x-blob"
    assert requests.get(url + "/missing", timeout=10).status_code == 404
    assert requests.get(url + "/static.txt", timeout=10).text == "static beside flask"
    assert requests.get(url + "/flaskapp.py", timeout=10).text != FLASK_APP


@pytest.mark.parametrize("wsgi_site", [{"index.py": WSGI_APP}], indirect=True)
def test_plain_wsgi_app(wsgi_site):
    answer = requests.post(wsgi_site["url"] + "/a/b%20c?x=1", data=b"body", timeout=10)
    assert answer.status_code == 202 and answer.headers["X-Wsgi"] == "1"
    assert answer.text == "POST /a/b c x=1 body!"
    chunked = requests.post(wsgi_site["url"] + "/c", data=iter([b"one", b"two"]), timeout=10)
    assert chunked.text == "POST /c  onetwo!"


def test_folder_urls(site, tmp_path):
    folder = os.path.join(site["www"], "docs")
    os.makedirs(os.path.join(folder, "empty"))
    with open(os.path.join(folder, "index.html"), "w") as handle:
        handle.write("docs index")
    moved = get(site, "//docs?x=1", allow_redirects=False)
    assert moved.status_code == 301 and moved.headers["Location"] == "/docs/?x=1"
    assert get(site, "/docs/").text == "docs index"
    assert get(site, "/docs/empty/").text == "entry GET /docs/empty/\nafter "


def test_websocket_upgrade_is_plain_http_on_a_webserver(site):
    answer = get(site, "/hello.txt", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert answer.status_code == 200 and answer.text == "hello static"


def test_client_leaving_in_the_middle_of_a_big_file(site, project):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", site["port"]), timeout=10) as sock:
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: site.test\r\n\r\n")
            received = 0
            while received < 300_000:
                received += len(sock.recv(65536))
    assert get(site, "/hello.txt").text == "hello static"
    assert "Traceback" not in project.log()
