"""The examples of docs/http.md and docs/webserver.md run as documented."""
import os
import re

import requests

from conftest import REPO, free_port

DOCS = os.path.join(REPO, "docs")
MARKED = re.compile(r"^<!-- http-example: (?P<name>[\w-]+) port=(?P<port>\d+) -->\n"
                    r"```python\n(?P<code>.*?)^```", re.M | re.S)
BLOCK = re.compile(r"^```python\n# (?P<path>\S+)\n(?P<code>.*?)^```", re.M | re.S)


def read(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


def example(name, doc):
    for match in MARKED.finditer(read(doc)):
        if match["name"] == name:
            port = free_port()
            code = match["code"].replace("0.0.0.0", "127.0.0.1")
            return code.replace(match["port"], str(port)), port
    raise AssertionError("no example %s in %s" % (name, doc))


def files_of(doc):
    return {match["path"]: match["code"] for match in BLOCK.finditer(read(doc))}


def test_hello_world(project):
    code, port = example("hello", "http.md")
    project.app("hello", code)
    project.start(ports=[port])
    answer = requests.get("http://127.0.0.1:%d/" % port, timeout=10)
    assert answer.text == "hello world"
    assert answer.headers["Content-Type"] == "text/html;charset=utf-8"
    assert answer.headers["Server"] == "geventman"
    assert answer.headers["Connection"] == "keep-alive"


def test_webserver_page_and_flask(project):
    code, port = example("webserver", "webserver.md")
    # The session files go under tmp_path, not <tempdir>/geventman-sessions.
    project.app("site", "from geventman.protocols.http import Session\n"
                "Session.save_path = %r\n" % project.path("sessions") + code)
    pages = files_of("webserver.md")
    www = project.path("applications", "site", "www")
    os.makedirs(www)
    with open(os.path.join(www, "hello.py"), "w") as handle:
        handle.write(pages["www/hello.py"])
    for name in ("index.py", "app.py"):
        with open(os.path.join(www, name), "w") as handle:
            handle.write(pages["applications/site/www/" + name])
    project.start(ports=[port])
    url = "http://127.0.0.1:%d" % port
    client = requests.Session()
    first = client.get(url + "/hello.py?name=ann", timeout=10)
    assert first.text == "hello ann\nvisit number 1\n"
    assert first.headers["Content-Type"] == "text/plain"
    assert client.get(url + "/hello.py?name=ann", timeout=10).text.endswith("number 2\n")
    assert os.listdir(project.path("sessions"))
    assert client.get(url + "/hello.py?name=nobody", timeout=10).text == (
        "nobody is not welcome\n")
    assert requests.get(url + "/", timeout=10).text == "hello from Flask"
    assert requests.get(url + "/api/bob?page=3", timeout=10).json() == {
        "name": "bob", "page": "3"}
