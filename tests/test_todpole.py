"""applications/todpole without a browser: the repository's own app folder, started
with start.py on free ports, driven by websocket-client in workerman-todpole's JSON
formats (welcome, update, message, closed, ping/pong, and errors for bad messages)."""
import urllib.request

import pytest

from demo_support import running_demo


@pytest.fixture(scope="module")
def todpole(tmp_path_factory):
    with running_demo(tmp_path_factory, "todpole", "TODPOLE") as demo:
        yield demo


def join(demo):
    client = demo.client()
    welcome = client.recv_type("welcome")
    assert len(welcome["id"]) == 20
    client.id = welcome["id"]
    return client


def test_update_and_message_go_to_everyone_else(todpole):
    with join(todpole) as one, join(todpole) as two, join(todpole) as three:
        one.send({"type": "update", "x": 10.04, "y": -3.26, "angle": 1.23456,
                  "momentum": 2, "name": "Froggy"})
        expected = {"type": "update", "id": one.id, "angle": 1.235, "momentum": 2.0,
                    "x": 10.0, "y": -3.3, "life": 1, "name": "Froggy", "authorized": False}
        assert two.recv_type("update") == expected and three.recv_type("update") == expected
        one.send({"type": "message", "message": "hello <pond>"})
        for other in (two, three):
            assert other.recv_type("message") == {"type": "message", "id": one.id,
                                                  "message": "hello <pond>"}
        two.send({"type": "update", "x": 1, "y": 2, "angle": 0, "momentum": 0})
        # one's own update never came back to it: the next one it gets is two's.
        assert one.recv_type("update")["name"] == "Guest." + two.id[-4:]
        assert three.recv_type("update")["id"] == two.id


def test_closed_goes_to_everyone(todpole):
    with join(todpole) as stays:
        leaves = join(todpole)
        leaves.close()
        while True:   # (the port probe of the test's start was a client too)
            closed = stays.recv_type("closed")
            if closed["id"] == leaves.id:
                break


BAD = [
    ("{", "a message must be JSON"),
    ("42", "a message must be a JSON object"),
    ('{"type": "swim"}', 'unknown message type "swim"'),
    ('{"type": "update", "x": 1, "y": 2, "angle": 0}', "momentum must be a number"),
    ('{"type": "update", "x": NaN, "y": 2, "angle": 0, "momentum": 0}', "x must be a number"),
    ('{"type": "update", "x": 1, "y": 1e300, "angle": 0, "momentum": 0}',
     "y must be a number"),
    ('{"type": "update", "x": true, "y": 2, "angle": 0, "momentum": 0}', "x must be a number"),
    ('{"type": "update", "x": 1, "y": 2, "angle": "0", "momentum": 0}',
     "angle must be a number"),
    ('{"type": "update", "x": 1, "y": 2, "angle": 0, "momentum": 0, "name": ["a"]}',
     "name must be text of at most 32 characters"),
    ('{"type": "message"}', "message is missing"),
    ('{"type": "message", "message": "%s"}' % ("m" * 201),
     "message is longer than 200 characters"),
]


def test_bad_messages_get_an_error_and_go_nowhere(todpole):
    with join(todpole) as sender, join(todpole) as other:
        for message, expected in BAD:
            sender.send(message)
            assert sender.recv_type("error")["message"] == expected, message
        sender.send({"type": "login"})     # workerman-todpole's pages send it: ignored
        sender.send({"type": "message", "message": "after the bad ones"})
        assert other.recv_type("message") == {"type": "message", "id": sender.id,
                                              "message": "after the bad ones"}


def test_the_page_learns_the_gateway_port(todpole):
    with urllib.request.urlopen(todpole.url + "config.js", timeout=10) as answer:
        assert answer.read().decode() == "window.GATEWAY_PORT = %d;\n" % todpole.gateway_port
    with urllib.request.urlopen(todpole.url, timeout=10) as answer:
        assert b"<canvas" in answer.read()
    assert "Traceback" not in todpole.project.log()


def test_ping_and_a_silent_tadpole_leaves_the_pond(tmp_path_factory):
    env = {"TODPOLE_PING_INTERVAL": 0.5}   # the app's default is 10 s
    with running_demo(tmp_path_factory, "todpole", "TODPOLE", env) as pond:
        with join(pond) as polite, join(pond) as silent:
            silent.answer_pings = False
            assert polite.recv_type("ping") == {"type": "ping"}   # answered with a pong
            while True:   # dropped after two silent intervals: everyone hears it
                closed = polite.recv_type("closed")
                if closed["id"] == silent.id:
                    break
            with join(pond) as newcomer:   # the polite one is still in the pond
                polite.send({"type": "message", "message": "still swimming"})
                assert newcomer.recv_type("message")["id"] == polite.id
