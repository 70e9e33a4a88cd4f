"""applications/chat without a browser: the repository's own app folder, started with
start.py on free ports, driven by websocket-client in workerman-chat's JSON formats
(login, say to all or to one, logout, ping/pong, and the errors for bad messages)."""
import json
import urllib.request

import pytest
import websocket as websocket_client   # websocket-client

from demo_support import running_demo



@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    with running_demo(tmp_path_factory, "chat", "CHAT") as demo:
        yield demo


def login(demo, name, room="1"):
    """A client logged in to ``room``; its id and the user list it got."""
    client = demo.client()
    client.send({"type": "login", "client_name": name, "room_id": room})
    welcome = client.recv_type("login")
    while "client_list" not in welcome:
        # The room's news of an earlier login, come late: it left another business
        # process before this client joined, and reached this client's gateway after
        # the join (two processes' packets carry no order; docs/gateway.md, "Order").
        welcome = client.recv_type("login")
    assert welcome["client_name"] == name
    client.id, client.users = welcome["client_id"], welcome["client_list"]
    return client


def test_login_tells_the_room_and_gives_the_newcomer_the_list(chat):
    with login(chat, "alice", "lobby") as alice:
        assert alice.users == {alice.id: "alice"}
        with login(chat, "bob", "lobby") as bob:
            assert bob.users == {alice.id: "alice", bob.id: "bob"}
            news = alice.recv_type("login")
            assert (news["client_id"], news["client_name"]) == (bob.id, "bob")
            assert "client_list" not in news and len(news["time"]) == 19


def test_say_to_all_and_to_one(chat):
    with login(chat, "ann", "r1") as ann, login(chat, "ben", "r1") as ben, \
            login(chat, "cid", "r1") as cid, login(chat, "dan", "r2") as dan:
        ann.send({"type": "say", "to_client_id": "all", "content": "hi all"})
        for client in (ann, ben, cid):
            said = client.recv_type("say")
            assert said["content"] == "hi all" and said["to_client_id"] == "all"
            assert (said["from_client_id"], said["from_client_name"]) == (ann.id, "ann")
        ann.send({"type": "say", "to_client_id": ben.id, "content": "just for ben"})
        for client in (ann, ben):
            said = client.recv_type("say")
            assert (said["content"], said["to_client_id"]) == ("just for ben", ben.id)
        # What ann says next comes to cid after the private message would have.
        ann.send({"type": "say", "to_client_id": "all", "content": "marker"})
        assert cid.recv_type("say")["content"] == "marker"
        dan.send({"type": "say", "to_client_id": "all", "content": "room two"})
        assert dan.recv_type("say")["content"] == "room two"
        assert dan.nothing_more(0.3)   # nothing of room r1 came


def test_logout_goes_to_the_room(chat):
    with login(chat, "eve", "r3") as eve:
        fay = login(chat, "fay", "r3")
        eve.recv_type("login")
        fay.close()
        gone = eve.recv_type("logout")
        assert (gone["from_client_id"], gone["from_client_name"]) == (fay.id, "fay")


BAD = [
    ("not json {", "a message must be JSON"),
    ('["login"]', "a message must be a JSON object"),
    ('{"type": "dance"}', 'unknown message type "dance"'),
    ('{"content": "no type"}', "unknown message type null"),
    ('{"type": "say", "to_client_id": "all", "content": "x"}', "log in first"),
    ('{"type": "login", "room_id": "1"}', "client_name is missing"),
    ('{"type": "login", "client_name": "   ", "room_id": "1"}', "client_name is missing"),
    ('{"type": "login", "client_name": "%s", "room_id": "1"}' % ("n" * 33),
     "client_name is longer than 32 characters"),
    ('{"type": "login", "client_name": "x", "room_id": ["1"]}', "room_id is missing"),
]


def test_bad_messages_get_a_clear_error_and_the_client_stays(chat):
    with chat.client() as client:
        for message, expected in BAD:
            client.send(message)
            assert client.recv() == {"type": "error", "message": expected}, message
        client.send({"type": "login", "client_name": "gus", "room_id": 7})  # a number is fine
        assert client.recv_type("login")["client_list"]
        client.send({"type": "login", "client_name": "gus", "room_id": "7"})
        assert client.recv() == {"type": "error", "message": "already logged in"}
        client.send({"type": "say", "to_client_id": "all", "content": "c" * 2001})
        assert client.recv() == {"type": "error",
                                 "message": "content is longer than 2000 characters"}
        client.send({"type": "say", "to_client_id": "0" * 20, "content": "hello?"})
        assert client.recv() == {"type": "error", "message":
                                 'no such user in this room: "%s"' % ("0" * 20)}
        client.send({"type": "say", "to_client_id": "all", "content": "still here"})
        assert client.recv_type("say")["content"] == "still here"


def test_private_message_stays_in_the_room(chat):
    with login(chat, "hal", "r4") as hal, login(chat, "ivy", "r5") as ivy:
        hal.send({"type": "say", "to_client_id": ivy.id, "content": "across rooms"})
        assert hal.recv_type("error")["message"].startswith("no such user in this room")


def test_names_and_contents_keep_their_characters(chat):
    name = "<script>alert(1)</script>"
    with login(chat, name, "r6") as client:
        client.send({"type": "say", "to_client_id": "all", "content": "<b>ü & 你好</b>"})
        said = client.recv_type("say")
        assert (said["from_client_name"], said["content"]) == (name, "<b>ü & 你好</b>")


def test_heartbeat_keeps_who_answers_and_drops_who_does_not(tmp_path_factory):
    env = {"CHAT_PING_INTERVAL": 0.5}   # the app's default is 10 s
    with running_demo(tmp_path_factory, "chat", "CHAT", env) as chat:
        with chat.client() as silent, chat.client() as polite:
            silent.answer_pings = False
            polite.send({"type": "login", "client_name": "polite", "room_id": "hb"})
            polite.recv_type("login")
            for _ in range(4):   # past the limit of two silent intervals
                assert polite.recv(skip_pings=False)["type"] == "ping"
            with pytest.raises(websocket_client.WebSocketConnectionClosedException):
                while True:      # the silent one was dropped meanwhile
                    silent.recv(skip_pings=False)
            polite.send({"type": "say", "to_client_id": "all", "content": "alive"})
            assert polite.recv_type("say")["content"] == "alive"


def test_the_page_learns_the_gateway_port(chat):
    with urllib.request.urlopen(chat.url + "config.js", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("application/javascript")
        assert answer.read().decode() == "window.GATEWAY_PORT = %d;\n" % chat.gateway_port
    with urllib.request.urlopen(chat.url, timeout=10) as answer:
        page = answer.read().decode()
    assert "config.js" in page and "http://" not in page.replace(chat.url, "")
    assert "Traceback" not in chat.project.log()
