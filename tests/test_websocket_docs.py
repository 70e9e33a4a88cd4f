"""The examples of docs/websocket.md, run as written.

An example is a ```python block after a marker line
``<!-- websocket-example: NAME port=2346,2347 -->``; the test writes it as
applications/NAME/start.py of a throwaway project, replaces each documented port by a
free one and 0.0.0.0 by 127.0.0.1, starts it, and asks what the chapter says it answers.
"""
import os
import re

import pytest
import websocket as websocket_client          # websocket-client

from conftest import REPO, LineClient, free_port

DOC = os.path.join(REPO, "docs", "websocket.md")
MARKER = re.compile(r"^<!-- websocket-example: (?P<name>[\w-]+) port=(?P<ports>[\d,]+) -->\n"
                    r"```python\n(?P<code>.*?)^```", re.M | re.S)


def examples():
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    return {m.group("name"): ([int(p) for p in m.group("ports").split(",")], m.group("code"))
            for m in MARKER.finditer(text)}


EXAMPLES = examples()


def start(project, name):
    documented, code = EXAMPLES[name]
    ports = [free_port() for _ in documented]
    for old, new in zip(documented, ports):
        code = code.replace(str(old), str(new))
    code = code.replace("0.0.0.0", "127.0.0.1")
    project.app(name.replace("-", "_"), code)
    project.start(ports=ports)
    return ports


def test_the_chapter_has_its_examples():
    assert set(EXAMPLES) == {"hello", "connect-hook", "relay"}


def test_hello(project):
    port, = start(project, "hello")
    project.wait_children(4)
    ws = websocket_client.create_connection("ws://127.0.0.1:%d" % port, timeout=10)
    ws.send("tom")
    assert ws.recv() == "hello tom"
    ws.close()


def test_connect_hook(project):
    port, = start(project, "connect-hook")
    with pytest.raises(websocket_client.WebSocketBadStatusException) as refused:
        websocket_client.create_connection("ws://127.0.0.1:%d/?token=wrong" % port, timeout=10)
    assert refused.value.status_code == 403
    ws = websocket_client.create_connection("ws://127.0.0.1:%d/?token=secret1" % port,
                                            timeout=10, subprotocols=["chat"])
    assert ws.getsubprotocol() == "chat"
    assert ws.recv() == '{"type":"welcome","user":"tom"}'
    ws.send("hi")
    assert ws.recv() == "tom said hi"
    ws.close()
    assert "Traceback" not in project.log()


def test_relay(project):
    ws_port, text_port = start(project, "relay")
    with LineClient(text_port, timeout=10) as client:
        assert client.ask("tom") == "hello tom"
        assert client.ask("jerry") == "hello jerry"
    assert "Traceback" not in project.log()
