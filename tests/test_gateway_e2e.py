"""Gateway/BusinessWorker end to end: real processes started with start.py, websocket-client
(and plain sockets) as the clients, on 127.0.0.1.

The application under test answers JSON requests: ``{"op": "call", "name": ..., "args":
[...]}`` runs that Gateway API call in the handler and replies with its result, so each
test drives the whole API from the client side and checks what every client received.
Every project keeps its gateway list in a store folder of its own (Store.path)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import websocket as websocket_client          # websocket-client

from conftest import LineClient, WebSocketClient, free_port, port_open, wait_until
from geventman.client import GatewayClient, GatewayError
from geventman.gateway import wire
from geventman.gateway.wire import Cmd, pack

START = """
    import os
    from geventman.gateway import BusinessWorker, Gateway, Store, router

    Store.path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store")


    def hopping(links, client, cmd=None, data=None):
        \"\"\"The default router, but a message that starts with "hop " goes to another
        business worker than the client's own.\"\"\"
        link = router.sticky(links, client, cmd, data)
        if data and data.startswith(b"hop "):
            others = [other for key, other in sorted(links.items()) if other is not link]
            return others[0] if others else link
        return link


    gateway = Gateway("websocket://127.0.0.1:PORT")
    gateway.count = GATEWAYS
    gateway.start_port = INNER
    gateway.router = hopping
    gateway.secret_key = SECRET

    worker = BusinessWorker()
    worker.count = WORKERS
    worker.process_timeout = 1
    worker.secret_key = SECRET
"""

EVENTS = """
    import json
    import os
    import time

    from geventman.gateway.business import BusinessWorker
    from geventman.lib import Context, Gateway

    HERE = os.path.dirname(os.path.abspath(__file__))


    def note(name, line):
        with open(os.path.join(HERE, name), "a") as handle:
            handle.write(line + "\\n")


    def reply(**fields):
        fields.update(pid=os.getpid(), worker=BusinessWorker.current.name)
        Gateway.send_to_current_client(json.dumps(fields))


    def on_connect(client_id):
        note("connected.log", "%s %s %d" % (client_id, BusinessWorker.current.name,
                                            os.getpid()))
        reply(welcome=client_id)


    def on_close(client_id):
        note("closed.log", client_id)


    def on_websocket_connect(client_id, data):
        if data["path"] == "/":
            return
        Context.session["ws"] = {"get": data["get"], "path": data["path"],
                                 "cookie": data["cookie"],
                                 "agent": data["headers"].get("user-agent"),
                                 "uri": data["server"].get("REQUEST_URI")}


    def on_message(client_id, message):
        if not isinstance(message, (str, dict)) or message == "hb":
            return  # a client's own heartbeat
        if isinstance(message, str) and message.startswith("hop "):
            message = message[4:]
        request = json.loads(message) if isinstance(message, str) else message
        op = request["op"]
        if op == "call":
            result = getattr(Gateway, request["name"])(*request.get("args", ()),
                                                       **request.get("kwargs", {}))
            if request["name"] not in ("close_current_client", "destroy_current_client"):
                reply(result=result, id=request.get("id"))
        elif op == "set":
            Context.session[request["key"]] = request["value"]
            reply(session=Context.session)
        elif op == "session":
            reply(session=Context.session, client_id=Context.client_id)
        elif op == "server":
            reply(server=Context.server)
        elif op == "block":
            Context.session["mine"] = client_id
            seen = Context.client_id
            started = time.monotonic()
            time.sleep(request.get("seconds", 1))      # patched: other clients go on
            reply(before=seen, after=Context.client_id, session=Context.session,
                  started=started, ended=time.monotonic())
        elif op == "raise":
            raise RuntimeError("boom from %s" % client_id)
        elif op == "slow":
            slow_handler(request["seconds"])
            reply(done=True)
        elif op == "bad session":
            Context.session = request["value"] if "value" in request else {"s": {1, 2}}
            for _ in range(3):
                reply(sent=True)
        elif op == "binary":
            Gateway.send_to_current_client(b"\\x00\\xffone")
            Gateway.send_to_all(b"\\x00\\xffall")
            Gateway.send_to_group("bin", b"\\x00\\xffgroup")
            reply(done=True)
        elif op == "echo":
            reply(echo=request["value"])


    def slow_handler(seconds):
        time.sleep(seconds)
"""


def start_app(project, gateways=1, workers=2, secret="", extra_start="", ports=(),
              more_gateways=(), **files):
    """Start the app; wait until its gateways (and ``more_gateways``, offsets of inner
    ports from INNER that ``extra_start`` adds) are listed and every worker links to
    each. ``extra_start`` may use INNER; ``ports`` are more client ports to wait for."""
    offsets = list(range(gateways)) + list(more_gateways)
    port, inner = free_port(), free_port()
    while not all(free(inner + offset) for offset in offsets):
        inner = free_port()
    source = (START.replace("PORT", str(port)).replace("GATEWAYS", str(gateways))
              .replace("WORKERS", str(workers)).replace("SECRET", repr(secret))
              + extra_start).replace("INNER", str(inner))
    project.app("chat", source, events_py=EVENTS, **files)
    project.start(ports=[port, *ports])
    app = App(project, port, inner, gateways)
    app.wait_linked([inner + offset for offset in offsets], workers)
    return app


def free(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count):
    """``count`` consecutive free ports; the first is returned."""
    first = free_port()
    while not all(free(first + k) for k in range(count)):
        first = free_port()
    return first


class App:
    def __init__(self, project, port, inner, gateways):
        self.project, self.port, self.inner, self.gateways = project, port, inner, gateways
        self.store = project.path("applications", "chat", "store")

    def lines(self, name):
        """Lines of a file the app wrote in its folder ([] before it exists)."""
        try:
            with open(self.project.path("applications", "chat", name)) as handle:
                return handle.read().splitlines()
        except FileNotFoundError:
            return []

    def file(self, name):
        """The first word of each line (the client ids of closed.log...)."""
        return [line.split()[0] for line in self.lines(name) if line.strip()]

    def wait_linked(self, inner_ports, workers):
        """Until each gateway is listed in the store and each business worker has a
        link to each (counted on the gateways' side)."""
        wait_until(lambda: len(self.listed()) == len(inner_ports), message="gateways listed")
        wait_until(lambda: self.linked(inner_ports) >= workers * len(inner_ports),
                   message="%d links" % (workers * len(inner_ports)))

    def listed(self):
        folder = os.path.join(self.store, "chat")
        return os.listdir(folder) if os.path.isdir(folder) else []

    def linked(self, ports):
        """Links to the gateways, from the gateway side (established connections to
        the inner ``ports``)."""
        count = 0
        for pid in self.project.children():
            try:
                for conn in psutil.Process(pid).net_connections("tcp"):
                    if conn.status == "ESTABLISHED" and conn.laddr.port in ports:
                        count += 1
            except psutil.NoSuchProcess:
                pass
        return count

    def client(self, path="/"):
        return WsClient(self.port, path)


class WsClient(WebSocketClient):
    """A websocket-client connection that knows its client_id (from the welcome) and
    keeps what it received that was not a reply (pushes)."""

    def __init__(self, port, path="/"):
        self.ws = websocket_client.create_connection("ws://127.0.0.1:%d%s" % (port, path),
                                                     timeout=10)
        self.pushes = []
        welcome = self.reply()
        self.id, self.pid, self.worker = welcome["welcome"], welcome["pid"], welcome["worker"]

    def recv(self):
        return self.ws.recv()

    def reply(self):
        """The next reply of the events handler; pushes met meanwhile are kept."""
        while True:
            data = self.recv()
            try:
                message = json.loads(data)
            except ValueError:
                message = None
            if isinstance(message, dict) and "pid" in message:
                return message
            self.pushes.append(data)

    def ask(self, op, prefix="", **fields):
        fields["op"] = op
        self.ws.send(prefix + json.dumps(fields))
        return self.reply()

    def call(self, name, *args, **kwargs):
        return self.ask("call", name=name, args=args, kwargs=kwargs)["result"]

    def pushes_until(self, marker):
        """Pushes received up to ``marker`` (a push), marker left out."""
        while marker not in self.pushes:
            self.pushes.append(self.recv())
        index = self.pushes.index(marker)
        found, self.pushes = self.pushes[:index], self.pushes[index + 1:]
        return found

    def closed_by_peer(self, timeout=5.0):
        self.ws.settimeout(timeout)
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=False)
                if opcode == websocket_client.ABNF.OPCODE_CLOSE:
                    return True
                self.pushes.append(data.decode("utf-8", "replace"))
        except (websocket_client.WebSocketConnectionClosedException, ConnectionError):
            return True
        except websocket_client.WebSocketTimeoutException:
            return False


def log_lines(project, text):
    return [line for line in project.log().splitlines() if text in line]


# -- every call of the API -----------------------------------------------------------

def test_every_api_call_through_two_gateways_and_two_business_workers(project):
    app = start_app(project, gateways=2, workers=2)
    a, b, c = app.client(), app.client(), app.client()
    ids = sorted([a.id, b.id, c.id])
    try:
        # clients and counts
        assert sorted(a.call("get_all_client_ids")) == ids
        assert sorted(b.call("get_online_status")) == ids
        assert c.call("get_all_client_count") == 3
        assert a.call("is_online", b.id) is True
        assert a.call("is_online", wire.client_id("127.0.0.1", app.inner, 999999)) is False

        # send_to_all, with exclude and with client_ids; send_to_client
        a.call("send_to_all", "x1")
        a.call("send_to_all", "x2", exclude=[b.id])
        a.call("send_to_all", "x3", client_ids=[a.id, b.id])
        a.call("send_to_all", {"json": 1})
        a.call("send_to_client", c.id, "x4")
        a.call("send_to_all", "m1")
        assert a.pushes_until("m1") == ["x1", "x2", "x3", '{"json":1}']
        assert b.pushes_until("m1") == ["x1", "x3", '{"json":1}']
        assert c.pushes_until("m1") == ["x1", "x2", '{"json":1}', "x4"]

        # uids
        assert a.call("bind_uid", a.id, "u1") is True
        b.call("bind_uid", b.id, "u1")
        c.call("bind_uid", c.id, 7)
        assert a.call("is_uid_online", "u1") is True
        assert a.call("is_uid_online", "nobody") is False
        assert sorted(a.call("get_client_ids_by_uid", "u1")) == sorted([a.id, b.id])
        assert a.call("get_uid_by_client_id", c.id) == "7"
        assert a.call("get_all_uids") == ["7", "u1"]
        assert a.call("get_all_uid_count") == 2
        a.call("send_to_uid", "u1", "y1")
        a.call("send_to_uid", ["u1", 7], "y2")
        b.call("unbind_uid", b.id, "u1")
        assert a.call("get_client_ids_by_uid", "u1") == [a.id]
        assert a.call("get_uid_by_client_id", b.id) is None
        a.call("send_to_uid", "u1", "y3")
        a.call("send_to_all", "m2")
        assert a.pushes_until("m2") == ["y1", "y2", "y3"]
        assert b.pushes_until("m2") == ["y1", "y2"]
        assert c.pushes_until("m2") == ["y2"]

        # groups
        a.call("join_group", a.id, "g1")
        a.call("join_group", b.id, "g1")
        a.call("join_group", c.id, "g2")
        a.call("join_group", a.id, "g2")
        assert sorted(a.call("get_client_ids_by_group", "g1")) == sorted([a.id, b.id])
        assert a.call("get_client_count_by_group", "g2") == 2
        assert a.call("get_uids_by_group", "g1") == ["u1"]
        assert a.call("get_uid_count_by_group", "g2") == 2
        assert a.call("get_all_groups") == ["g1", "g2"]
        assert a.call("get_all_group_client_counts") == {"g1": 2, "g2": 2}
        assert a.call("get_all_group_uid_counts") == {"g1": 1, "g2": 2}
        a.call("send_to_group", "g1", "z1")
        a.call("send_to_group", ["g1", "g2"], "z2", exclude=[a.id])
        a.call("leave_group", a.id, "g1")
        assert a.call("get_client_ids_by_group", "g1") == [b.id]
        a.call("send_to_group", "g1", "z3")
        a.call("ungroup", "g2")
        assert a.call("get_all_groups") == ["g1"]
        assert a.call("get_client_count_by_group", "g2") == 0
        a.call("send_to_group", "g2", "z4")
        a.call("send_to_all", "m3")
        assert a.pushes_until("m3") == ["z1"]
        assert b.pushes_until("m3") == ["z1", "z2", "z3"]
        assert c.pushes_until("m3") == ["z2"]

        # sessions
        a.call("set_session", b.id, {"k": 1, "d": {"x": 1}})
        assert a.call("get_session", b.id) == {"k": 1, "d": {"x": 1}}
        a.call("update_session", b.id, {"d": {"y": 2}, "n": None})
        assert a.call("get_session", b.id) == {"k": 1, "d": {"x": 1, "y": 2}, "n": None}
        assert b.ask("session")["session"] == {"k": 1, "d": {"x": 1, "y": 2}, "n": None}
        assert a.call("get_client_sessions_by_group", "g1") == {
            b.id: {"k": 1, "d": {"x": 1, "y": 2}, "n": None}}
        sessions = a.call("get_all_client_sessions")
        assert sorted(sessions) == ids and sessions[c.id] == {}
        assert a.call("get_all_client_sessions", "g1") == {
            b.id: {"k": 1, "d": {"x": 1, "y": 2}, "n": None}}
        assert a.call("get_session", wire.client_id("127.0.0.1", app.inner, 999999)) is None

        # Context.server
        server = c.ask("server")["server"]
        assert server["REMOTE_ADDR"] == "127.0.0.1"
        assert server["REMOTE_PORT"] == c.ws.sock.getsockname()[1]
        assert server["GATEWAY_ADDR"] == "127.0.0.1"
        assert server["GATEWAY_PORT"] == app.port
        assert server["GATEWAY_CLIENT_ID"] == c.id

        # closing: close_client with a last message, destroy_client, the current client
        a.call("close_client", c.id, "bye")
        assert c.closed_by_peer() and c.pushes == ["bye"]
        a.call("destroy_client", b.id)
        assert b.closed_by_peer()
        wait_until(lambda: a.call("get_all_client_count") == 1, message="two closed")
        assert a.call("is_online", b.id) is False and a.call("is_online", c.id) is False
        assert a.call("get_all_uids") == ["u1"] and a.call("get_all_groups") == []
        d, e = app.client(), app.client()
        d.ws.send(json.dumps({"op": "call", "name": "close_current_client",
                              "args": ["see you"]}))
        assert d.closed_by_peer() and d.pushes == ["see you"]
        e.ws.send(json.dumps({"op": "call", "name": "destroy_current_client"}))
        assert e.closed_by_peer() and e.pushes == []
        wait_until(lambda: {b.id, c.id, d.id, e.id} <= set(app.file("closed.log")),
                   message="on_close of four clients")
        assert a.id not in app.file("closed.log")
        assert a.call("get_all_client_ids") == [a.id]
    finally:
        for client in (a, b, c):
            client.close()
    assert "Traceback" not in project.log()


def test_uid_and_group_edges(project):
    app = start_app(project, workers=1)
    with app.client() as a, app.client() as b:
        a.call("bind_uid", a.id, "u1")
        a.call("bind_uid", a.id, "u2")          # one uid per client: rebinding moves it
        assert a.call("get_all_uids") == ["u2"]
        assert a.call("get_client_ids_by_uid", "u1") == []
        a.call("unbind_uid", a.id, "u1")        # not its uid: nothing happens
        assert a.call("get_uid_by_client_id", a.id) == "u2"
        b.call("bind_uid", b.id, "u2")          # many clients per uid
        assert sorted(a.call("get_client_ids_by_uid", "u2")) == sorted([a.id, b.id])
        a.call("join_group", a.id, "g")
        a.call("join_group", a.id, "g")         # twice: still one member
        a.call("leave_group", b.id, "g")        # not a member: nothing happens
        assert a.call("get_client_count_by_group", "g") == 1
        assert a.call("get_all_group_uid_counts") == {"g": 1}
        a.call("join_group", a.id, 5)           # ints are strings
        assert a.call("get_all_groups") == ["5", "g"]
        a.call("send_to_group", ["g", 5], "once")
        a.call("send_to_uid", "u2", "both")
        a.call("send_to_all", "m")
        assert a.pushes_until("m") == ["once", "both"]
        assert b.pushes_until("m") == ["both"]
        b.close()
        wait_until(lambda: a.call("get_client_ids_by_uid", "u2") == [a.id],
                   message="a closed client leaves its uid")


def test_big_messages_cross_both_ways(project):
    app = start_app(project, workers=1)
    with app.client() as a, app.client() as b:
        big = "x" * (3 << 20)
        assert a.ask("echo", value=big)["echo"] == big
        a.call("send_to_all", big)
        a.call("send_to_all", "m")
        assert b.pushes_until("m") == [big]
        assert a.pushes_until("m") == [big]


def test_bytes_reach_websocket_clients_as_binary_frames(project):
    app = start_app(project, workers=1)
    with app.client() as a, app.client() as b:
        b.call("join_group", b.id, "bin")
        assert a.ask("binary")["done"] is True
        a.call("send_to_all", "m")
        assert a.pushes_until("m") == [b"\x00\xffone", b"\x00\xffall"]
        assert b.pushes_until("m") == [b"\x00\xffall", b"\x00\xffgroup"]


def test_the_messages_of_one_client_are_handled_in_order(project):
    app = start_app(project, workers=2)
    clients = [app.client() for _ in range(4)]
    try:
        for client in clients:
            for number in range(500):
                client.ws.send(json.dumps({"op": "echo", "value": number}))
        for client in clients:
            assert [client.reply()["echo"] for _ in range(500)] == list(range(500))
    finally:
        for client in clients:
            client.close()


def test_send_to_client_with_a_bad_id_is_false_and_harmless(project):
    app = start_app(project, workers=1)
    with app.client() as a:
        assert a.call("send_to_client", "not-a-client-id", "x") is False
        assert a.call("is_online", "zz") is False
        assert a.call("get_session", "zz") is None
        assert a.call("get_all_client_count") == 1


# -- sessions and Context ------------------------------------------------------------

def test_a_session_set_in_one_message_is_there_in_the_next_on_either_worker(project):
    app = start_app(project, workers=2)
    with app.client() as a, app.client() as other:
        assert a.ask("set", key="n", value=1)["session"] == {"n": 1}
        same = a.ask("session")
        assert same["session"] == {"n": 1} and same["pid"] == a.pid
        # "hop " moves the client to the other worker (the router's choice sticks)
        hopped = a.ask("session", prefix="hop ")
        assert hopped["pid"] != a.pid, "the hop router sends it to the other worker"
        assert hopped["session"] == {"n": 1} and hopped["client_id"] == a.id
        # set on the other worker, read back on the first
        there = a.ask("set", key="m", value=[2])
        assert there["pid"] == hopped["pid"] and there["session"] == {"n": 1, "m": [2]}
        back = a.ask("session", prefix="hop ")
        assert back["pid"] == a.pid and back["session"] == {"n": 1, "m": [2]}
        # the change is in the gateway before the reply reaches the client, so the
        # client's very next message carries it, to whichever worker
        for number in range(100):
            moved = a.ask("set", key="i", value=number)
            back = a.ask("session", prefix="hop ")
            assert back["pid"] != moved["pid"] and back["session"]["i"] == number
        # a handler's write-back keeps what update_session changed meanwhile
        other.call("update_session", a.id, {"uid": "42"})
        expected = {"n": 3, "m": [2], "i": 99, "uid": "42"}
        assert a.ask("set", key="n", value=3)["session"] == expected
        assert other.call("get_session", a.id) == expected


GATEWAY_HOOKS = """
    def gateway_side(what):
        def hook(connection):
            with open(os.path.join(os.path.dirname(Store.path), "hooks.log"), "a") as f:
                f.write("%s %d %s\\n" % (what, os.getpid(), connection.get_remote_port()))
        return hook

    gateway.on_connect = gateway_side("connect")
    gateway.on_close = gateway_side("close")
"""


def test_websocket_handshake_data_and_gateway_side_hooks(project):
    app = start_app(project, workers=1, extra_start=GATEWAY_HOOKS)
    client = WsClient.__new__(WsClient)
    client.ws = websocket_client.create_connection(
        "ws://127.0.0.1:%d/room/1?user=tom&x=" % app.port, timeout=10,
        cookie="sid=abc; theme=dark", header=["User-Agent: test-agent/1"])
    client.pushes = []
    welcome = client.reply()
    session = client.ask("session")["session"]
    assert session == {"ws": {"get": {"user": "tom", "x": ""}, "path": "/room/1",
                              "cookie": {"sid": "abc", "theme": "dark"},
                              "agent": "test-agent/1", "uri": "/room/1?user=tom&x="}}
    port = client.ws.sock.getsockname()[1]
    client.close()
    wait_until(lambda: welcome["welcome"] in app.file("closed.log"), message="on_close")

    def mine():
        return [entry[0] for entry in hooks() if entry[2] == str(port)]

    def hooks():
        return [line.split() for line in app.lines("hooks.log")]
    wait_until(lambda: len(mine()) == 2, message="the gateway's on_close hook")
    assert mine() == ["connect", "close"]
    gateway_pids = {int(entry[1]) for entry in hooks()}
    assert welcome["pid"] not in gateway_pids   # the hooks ran in the gateway process


def test_pipelined_messages_see_the_session_the_one_before_left(project):
    """The client sends without waiting: the second message left the gateway before the
    first one's change got there, yet its handler sees the change (same worker)."""
    app = start_app(project, workers=1)
    with app.client() as a:
        for number in range(20):
            requests = [
                {"op": "set", "key": "n", "value": number},
                {"op": "call", "name": "update_session", "args": [a.id, {"u": number}]},
                {"op": "call", "name": "set_session",
                 "args": [a.id, {"s": number, "n": number, "u": number}]},
                {"op": "session"}]
            a.ws.send(json.dumps(requests[0]))
            a.ws.send(json.dumps(requests[1]))
            a.ws.send(json.dumps(requests[3]))
            a.ws.send(json.dumps(requests[2]))
            a.ws.send(json.dumps(requests[3]))
            replies = [a.reply() for _ in range(5)]
            left = {"s": number - 1} if number else {}   # by the last set_session
            assert replies[2]["session"] == dict(left, n=number, u=number)
            assert replies[4]["session"] == {"s": number, "n": number, "u": number}


IP_FILTER = """
    def deny_listed(connection):
        deny = os.path.join(os.path.dirname(Store.path), "deny")
        if os.path.exists(deny) and open(deny).read() == connection.get_remote_ip():
            connection.close()

    gateway.on_connect = deny_listed
"""


def test_a_gateway_on_connect_hook_can_refuse_a_client(project):
    app = start_app(project, workers=1, extra_start=IP_FILTER)
    with app.client() as a:
        connected, closed = len(app.lines("connected.log")), len(app.lines("closed.log"))
        with open(project.path("applications", "chat", "deny"), "w") as handle:
            handle.write("127.0.0.1")
        with pytest.raises((websocket_client.WebSocketException, ConnectionError)):
            app.client()
        os.unlink(project.path("applications", "chat", "deny"))
        with app.client() as b:
            assert sorted(a.call("get_all_client_ids")) == sorted([a.id, b.id])
        wait_until(lambda: b.id in app.file("closed.log"), message="b's on_close")
        # the refused client never reached events.py: no on_connect, no on_close
        assert app.file("connected.log")[connected:] == [b.id]
        assert app.file("closed.log")[closed:] == [b.id]


def test_two_blocked_handlers_run_at_once_each_with_its_own_context(project):
    app = start_app(project, workers=2)
    clients = [app.client() for _ in range(3)]
    try:
        # two of three clients share a business worker (least loaded: 1, 2, 1)
        by_pid = {}
        for client in clients:
            by_pid.setdefault(client.pid, []).append(client)
        pair = next(group for group in by_pid.values() if len(group) == 2)
        started = time.monotonic()
        for client in pair:
            client.ws.send(json.dumps({"op": "block", "seconds": 1}))
        replies = [client.reply() for client in pair]
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 1.6, elapsed
        for client, answer in zip(pair, replies):
            assert answer["pid"] == client.pid == pair[0].pid
            assert answer["before"] == answer["after"] == client.id
            assert answer["session"] == {"mine": client.id}
        # both slept at the same time in one process
        assert max(r["started"] for r in replies) < min(r["ended"] for r in replies)
    finally:
        for client in clients:
            client.close()


# -- heartbeats ----------------------------------------------------------------------

HEARTBEATS = """
    for number, (interval, limit, data) in enumerate(
            [(0.5, 2, "ping"), (0.5, 2, ""), (0.5, 0, "ping")]):
        beat = Gateway("websocket://127.0.0.1:%d" % (BEAT_PORT + number))
        beat.name = "Beat%d" % number
        beat.start_port = INNER + 10 + number
        beat.ping_interval = interval
        beat.ping_not_response_limit = limit
        beat.ping_data = data
"""


def test_three_heartbeat_modes(project):
    beat = free_ports(3)
    app = start_app(project, workers=1, ports=[beat, beat + 1, beat + 2],
                    extra_start=HEARTBEATS.replace("BEAT_PORT", str(beat)),
                    more_gateways=[10, 11, 12])

    def connect(number):
        return WsClient(beat + number)

    # 1. ping_data and a limit: pinged; the silent one is dropped, the one that answers is not
    silent, talker = connect(0), connect(0)
    # 2. no ping_data, a limit: nothing is sent; the client must send its own heartbeat
    quiet, beating = connect(1), connect(1)
    # 3. ping_data, no limit: pinged forever, never dropped
    pinged = connect(2)
    started = time.monotonic()
    deadline = started + 3.0      # six intervals
    talker.ws.settimeout(0.1)
    beating.ws.settimeout(0.1)
    while time.monotonic() < deadline:
        for client, answer in ((talker, "hb"), (beating, "hb")):
            try:
                client.pushes.append(client.ws.recv())
            except websocket_client.WebSocketTimeoutException:
                pass
            client.ws.send(answer)
    assert silent.closed_by_peer(timeout=0.1)
    assert quiet.closed_by_peer(timeout=0.1)
    assert silent.pushes[:2] == ["ping", "ping"] and set(silent.pushes) == {"ping"}
    assert quiet.pushes == []
    assert len(talker.pushes) >= 4 and set(talker.pushes) == {"ping"}
    assert beating.pushes == []
    assert not pinged.closed_by_peer(timeout=0.1)
    assert len(pinged.pushes) >= 4 and set(pinged.pushes) == {"ping"}
    for client in (talker, beating, pinged):
        assert client.ask("echo", value="alive")["echo"] == "alive"
    # the dropped ones went through on_close like any other
    wait_until(lambda: {silent.id, quiet.id} <= set(app.file("closed.log")),
               message="on_close of the dropped clients")
    assert not {talker.id, beating.id, pinged.id} & set(app.file("closed.log"))
    for client in (silent, talker, quiet, beating, pinged):
        client.close()
    assert "Traceback" not in project.log()


# -- GatewayClient from a plain Python program -----------------------------------------

PLAIN = """
import json, sys
from geventman.client import GatewayClient, GatewayNotFound

client = GatewayClient(path=sys.argv[1])
target = sys.argv[2]
client.send_to_client(target, "hello from plain python")
client.send_to_all({"to": "all"})
client.bind_uid(target, "u9")
client.join_group(target, "room")
client.update_session(target, {"from": "plain"})
client.send_to_group("room", "to the room")
result = {
    "count": client.get_all_client_count(),
    "ids": client.get_all_client_ids(),
    "online": client.is_online(target),
    "session": client.get_session(target),
    "uids": client.get_all_uids(),
    "groups": client.get_all_group_client_counts(),
}
try:
    GatewayClient(path=sys.argv[3]).get_all_client_count()
except GatewayNotFound as error:
    result["not_found"] = str(error)
result["gevent"] = sorted(name for name in sys.modules if name.split(".")[0] == "gevent")
print(json.dumps(result))
"""


def test_gateway_client_from_a_plain_python_program(project, tmp_path):
    app = start_app(project, workers=2)
    script = tmp_path / "plain.py"
    script.write_text(PLAIN)
    with app.client() as a, app.client() as b:
        result = subprocess.run([sys.executable, str(script), app.store, a.id,
                                 str(tmp_path / "empty-store")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["gevent"] == []
        assert answer["count"] == 2 and sorted(answer["ids"]) == sorted([a.id, b.id])
        assert answer["online"] is True
        assert answer["session"] == {"from": "plain"}
        assert answer["uids"] == ["u9"] and answer["groups"] == {"room": 1}
        assert "no gateway" in answer["not_found"]
        b.call("send_to_all", "m")
        assert a.pushes_until("m") == ["hello from plain python", '{"to":"all"}',
                                       "to the room"]
        assert b.pushes_until("m") == ['{"to":"all"}']
        assert a.ask("session")["session"] == {"from": "plain"}


def test_gateway_client_under_threads_and_with_a_gateway_that_never_answers(project):
    app = start_app(project, workers=2)
    with app.client() as a, app.client() as b:
        client = GatewayClient(path=app.store, timeout=1.0)
        errors, counts = [], []

        def work(number):
            try:
                for _ in range(20):
                    counts.append(client.get_all_client_count())
                    assert client.is_online(a.id) and client.get_session(b.id) == {}
                client.send_to_client(a.id, "t%d" % number)
            except Exception as error:   # reported below
                errors.append(repr(error))
        threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and counts == [2] * 160
        b.call("send_to_client", a.id, "m")
        assert sorted(a.pushes_until("m")) == sorted("t%d" % n for n in range(8))

        # A gateway listed in the store that accepts but never answers costs one
        # timeout, and the live gateway's answer still counts.
        with socket.socket() as hole:
            hole.bind(("127.0.0.1", 0))
            hole.listen(8)
            address = "127.0.0.1:%d" % hole.getsockname()[1]
            entry = os.path.join(app.store, "chat", address.replace(":", "_"))
            with open(entry, "w") as handle:
                handle.write(address)
            fresh = GatewayClient(path=app.store, timeout=1.0)
            started = time.monotonic()
            assert fresh.get_all_client_count() == 2
            assert 0.9 < time.monotonic() - started < 1.8
            os.unlink(entry)


PUSHER = """
    from geventman import Worker
    from geventman.lib import Gateway as Api

    pusher = Worker("text://127.0.0.1:PUSH_PORT")
    pusher.name = "Pusher"


    def push(connection, line):
        Api.send_to_all(line)
        connection.send(str(Api.get_all_client_count()))


    pusher.on_message = push
"""


def test_the_api_from_a_plain_worker_goes_through_a_gateway_client(project):
    push_port = free_port()
    app = start_app(project, workers=1, extra_start=PUSHER.replace("PUSH_PORT",
                                                                    str(push_port)))
    wait_until(lambda: port_open(push_port), message="the pusher")
    with app.client() as a, app.client() as b, LineClient(push_port) as line:
        assert line.ask("news") == "2"
        assert line.ask("more") == "2"
        a.call("send_to_all", "m")
        assert a.pushes_until("m") == ["news", "more"]
        assert b.pushes_until("m") == ["news", "more"]


def test_a_frozen_gateway_costs_one_query_bound(project):
    app = start_app(project, gateways=2, workers=1)
    clients = []
    try:
        while len({wire.parse_client_id(c.id)[1] for c in clients}) < 2:
            clients.append(app.client())
            assert len(clients) < 40, "reuseport never used the second gateway"
        by_port = {}
        for client in clients:
            by_port.setdefault(wire.parse_client_id(client.id)[1], []).append(client)
        frozen_port, served_port = sorted(by_port)
        frozen = [pid for pid in project.children() if any(
            conn.laddr.port == frozen_port and conn.status == "LISTEN"
            for conn in psutil.Process(pid).net_connections("tcp"))]
        assert len(frozen) == 1
        asker = by_port[served_port][0]
        assert asker.call("get_all_client_count") == len(clients)
        os.kill(frozen[0], signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert asker.call("get_all_client_count") == len(by_port[served_port])
            assert 2.5 < time.monotonic() - started < 4.5
        finally:
            os.kill(frozen[0], signal.SIGCONT)
        # frozen past Store.ttl it left the store; listed again, it is linked again
        wait_until(lambda: asker.call("get_all_client_count") == len(clients),
                   message="the thawed gateway answers again")
        for client in clients:
            assert client.ask("echo", value=client.id)["echo"] == client.id
    finally:
        for client in clients:
            client.close()


# -- text:// and a custom protocol -------------------------------------------------------

PROTOCOL_GATEWAYS = """
    text = Gateway("text://127.0.0.1:TEXT_PORT")
    text.name = "TextGateway"
    text.start_port = INNER + 10

    jsonnl = Gateway("jsonnl://127.0.0.1:JSON_PORT")
    jsonnl.name = "JsonGateway"
    jsonnl.start_port = INNER + 20
"""

JSONNL = """
    import json


    class JsonNL:
        @staticmethod
        def input(buffer):
            end = buffer.find(b"\\n")
            return 0 if end < 0 else end + 1

        @staticmethod
        def encode(data):
            return json.dumps(data) + "\\n"

        @staticmethod
        def decode(buffer):
            return json.loads(buffer)
"""


def test_text_and_custom_protocol_gateways(project):
    text_port, json_port = free_port(), free_port()
    extra = (PROTOCOL_GATEWAYS.replace("TEXT_PORT", str(text_port))
             .replace("JSON_PORT", str(json_port)))
    app = start_app(project, workers=2, ports=[text_port, json_port], extra_start=extra,
                    more_gateways=[10, 20], protocols__jsonnl_py=JSONNL)
    inner = app.inner

    with LineClient(text_port) as line, socket.create_connection(
            ("127.0.0.1", json_port), timeout=10) as sock, app.client() as ws:
        welcome = json.loads(line.recvline())
        text_id = welcome["welcome"]
        assert wire.parse_client_id(text_id)[1] == inner + 10
        reader = sock.makefile("rb")
        json_welcome = json.loads(json.loads(reader.readline()))
        json_id = json_welcome["welcome"]
        assert wire.parse_client_id(json_id)[1] == inner + 20

        # a text line in, a reply line out
        answer = json.loads(line.ask(json.dumps({"op": "echo", "value": "über"})))
        assert answer["echo"] == "über"
        # the custom protocol decodes to a dict, which events.py gets as it is
        sock.sendall(json.dumps({"op": "echo", "value": [1, 2]}).encode() + b"\n")
        assert json.loads(json.loads(reader.readline()))["echo"] == [1, 2]
        # pushes from a websocket client's handler reach both, each in its protocol
        assert ws.call("get_all_client_count") == 3
        ws.call("send_to_client", text_id, "to text")
        ws.call("send_to_client", json_id, {"to": "json"})
        ws.call("send_to_all", "everyone", exclude=[ws.id])
        assert line.recvline() == "to text"
        assert line.recvline() == "everyone"
        assert json.loads(reader.readline()) == {"to": "json"}
        assert json.loads(reader.readline()) == "everyone"
        # a JSON value reaches a text client as its JSON text, one line (and every
        # client of the broadcast gets it)
        with LineClient(text_port) as second:
            second_id = json.loads(second.recvline())["welcome"]
            ws.call("send_to_all", {"k": [1, "é"]}, exclude=[ws.id])
            ws.call("send_to_client", second_id, [1, 2])
            assert line.recvline() == '{"k":[1,"é"]}'
            assert second.recvline() == '{"k":[1,"é"]}'
            assert second.recvline() == '[1,2]'
            assert json.loads(reader.readline()) == {"k": [1, "é"]}
        # raw: written as it is, no protocol encode
        ws.call("send_to_client", text_id, "raw line\n", raw=True)
        assert line.recvline() == "raw line"
        ws.call("close_client", text_id, {"bye": True})
        assert line.recvline() == '{"bye":true}'
        assert line.closed_by_peer()


# -- secret_key ------------------------------------------------------------------------

WRONG_WORKER = """
    wrong = BusinessWorker()
    wrong.name = "WrongKey"
    wrong.count = 1
    wrong.secret_key = "not the key"
"""


def test_a_business_worker_with_a_wrong_secret_key_is_refused(project):
    app = start_app(project, workers=1, secret="s3cret", extra_start=WRONG_WORKER)
    wait_until(lambda: log_lines(project, "refused"), message="a refusal")
    clients = [app.client() for _ in range(4)]
    try:
        for client in clients:
            assert client.worker == "BusinessWorker"
            assert client.ask("echo", value=1)["worker"] == "BusinessWorker"
        assert clients[0].call("get_all_client_count") == 4
    finally:
        for client in clients:
            client.close()
    workers = [line.split()[1] for line in app.lines("connected.log")]
    assert "WrongKey" not in workers and workers.count("BusinessWorker") >= 5
    # each attempt of the wrong worker: one line in the gateway, one in the worker
    gateway_side = log_lines(project, "refused 127.0.0.1:")
    worker_side = log_lines(project, "refused this worker: wrong secret_key")
    assert len(gateway_side) >= 1 and abs(len(gateway_side) - len(worker_side)) <= 1
    assert all("wrong secret_key" in line for line in gateway_side)
    assert "Traceback" not in project.log()


def test_a_gateway_client_with_a_wrong_secret_key_is_refused(project):
    app = start_app(project, workers=1, secret="s3cret")
    with app.client() as a:
        right = GatewayClient(path=app.store, secret_key="s3cret", timeout=2)
        assert right.get_all_client_ids() == [a.id]
        wrong = GatewayClient(path=app.store, secret_key="nope", timeout=2)
        with pytest.raises(GatewayError, match="secret_key"):
            wrong.get_all_client_count()
        assert wrong.send_to_client(a.id, "sneaky") in (True, False)
        right.send_to_client(a.id, "fine")
        a.call("send_to_client", a.id, "m")
        assert a.pushes_until("m") == ["fine"]


# -- failures --------------------------------------------------------------------------

def test_an_exception_in_events_is_logged_counted_and_the_client_stays(project):
    app = start_app(project, workers=1)
    with app.client() as a:
        a.ws.send(json.dumps({"op": "raise"}))
        assert a.ask("echo", value="still here")["echo"] == "still here"
        wait_until(lambda: "boom from %s" % a.id in project.log(), message="logged")
        assert project.log().count("RuntimeError: boom") == 1
        rows = project.status_json()["processes"]
        assert sum(row["throw_exception"] or 0 for row in rows) == 1
        [row] = [row for row in rows if row["throw_exception"]]
        assert row["pid"] == a.pid
        assert a.call("is_online", a.id) is True


def test_a_session_that_cannot_be_saved_is_logged_once_per_handler(project):
    app = start_app(project, workers=1)
    with app.client() as a:
        a.ws.send(json.dumps({"op": "bad session", "value": "not a dict"}))
        a.ws.send(json.dumps({"op": "bad session"}))
        assert [a.reply()["sent"] for _ in range(6)] == [True] * 6
        assert a.ask("session")["session"] == {}
        wait_until(lambda: len(log_lines(project, "Context.session of")) == 2, message="logs")
        assert len(log_lines(project, "must be a dict, not str")) == 1
        assert len(log_lines(project, "is not JSON")) == 1


def test_garbage_on_the_inner_port_is_refused_with_one_line(project):
    app = start_app(project, workers=1)
    with app.client() as a:
        before = len(project.log().splitlines())
        garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\xff" * 40
        with socket.create_connection(("127.0.0.1", app.inner), timeout=5) as sock:
            sock.sendall(garbage)
            sock.settimeout(5)
            assert sock.recv(100) == b""
        wait_until(lambda: len(project.log().splitlines()) > before, message="a log line")
        new = project.log().splitlines()[before:]
        assert len(new) == 1 and "bad package" in new[0], new
        # well-formed packets of an unknown or unexpected kind: one line each, closed
        with socket.create_connection(("127.0.0.1", app.inner), timeout=5) as sock:
            sock.sendall(pack(Cmd.CLIENT_CONNECT, 0, wire.dumps({"secret_key": ""})))
            sock.sendall(pack(Cmd.QUERY, 0, b"{bad json", b"", 0, 1))
            sock.sendall(pack(Cmd.QUERY, 0, wire.dumps({"q": "nope"}), b"", 0, 2))
            sock.sendall(pack(Cmd.QUERY, 0, wire.dumps([1]), b"", 0, 3))
            sock.sendall(pack(Cmd.QUERY, 0, wire.dumps({"q": "client_count"}), b"", 0, 4))
            sock.settimeout(5)
            replies = b""
            while len(replies) < 2 * wire.HEADER_SIZE + 5:   # null and 1, as JSON
                replies += sock.recv(65536)
            first = wire.unpack(replies[:wire.packet_length(replies)])
            replies = replies[wire.packet_length(replies):]
            second = wire.unpack(replies[:wire.packet_length(replies)])
            # the unknown query is answered (null): its caller does not wait for nothing
            assert (first.cmd, first.request_id, first.data) == (Cmd.REPLY, 2, None)
            assert (second.cmd, second.request_id, second.data) == (Cmd.REPLY, 4, 1)
        # arguments of the wrong JSON type
        number = wire.parse_client_id(a.id)[2]
        wrong = [pack(Cmd.SEND_TO_GROUP, 0, b"[1]", b"x"), pack(Cmd.SEND_TO_ALL, 0, b"[1]"),
                 pack(Cmd.SEND_TO_UID, 0, b"7", b"x"), pack(Cmd.UPDATE_SESSION, number, b"[1]"),
                 pack(Cmd.PATCH_SESSION, number, b"[1]"), pack(Cmd.SET_SESSION, number, b"3"),
                 pack(Cmd.BIND_UID, number, b"\xff"), pack(Cmd.WORKER_CONNECT, 0, b"[1]")]
        with socket.create_connection(("127.0.0.1", app.inner), timeout=5) as sock:
            for packet in wrong:
                sock.sendall(packet)
            wait_until(lambda: len(project.log().splitlines()) >= before + 4 + len(wrong),
                       message="a line for each")
        assert a.ask("echo", value="ok")["echo"] == "ok"
        assert a.call("get_all_client_count") == 1
        assert a.ask("session")["session"] == {}
        new = project.log().splitlines()[before + 1:]
        assert len(new) == 3 + len(wrong), new
        assert all("bad QUERY" in line for line in new[:3]), new
        names = ["SEND_TO_GROUP", "SEND_TO_ALL", "SEND_TO_UID", "UPDATE_SESSION",
                 "PATCH_SESSION", "SET_SESSION", "BIND_UID", "WORKER_CONNECT"]
        assert [line.split(" bad ")[1].split()[0] for line in new[3:]] == names, new
    assert "Traceback" not in project.log()


def test_process_timeout_logs_the_stack_of_a_slow_handler(project):
    app = start_app(project, workers=1)
    with app.client() as a, app.client() as b:
        a.ws.send(json.dumps({"op": "slow", "seconds": 2.5}))
        found = wait_until(lambda: log_lines(project, "still running after 1s"),
                           timeout=5, message="the watchdog's line")
        assert len(found) == 1 and "on_message" in found[0]
        log = project.log()
        assert "slow_handler" in log and "time.sleep(seconds)" in log
        # meanwhile other clients are served
        assert b.ask("echo", value=2)["echo"] == 2
        assert a.reply()["done"] is True
    assert len(log_lines(project, "still running after")) == 1
