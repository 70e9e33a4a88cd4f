"""The examples of docs/gateway.md and docs/gateway-api.md, run as written.

* An application is a ```python block after a marker line::

      <!-- gateway-example: NAME port=7272 inner=2300 -->      start.py of NAME
      <!-- gateway-example: NAME file=events.py -->            another file of NAME

  ``port=`` lists the public ports (the test waits for them), ``inner=`` the
  ``start_port`` of each gateway (the test gives each four free ports in a row),
  ``app=`` the folder name (default NAME). As in tests/test_docs.py, the test writes
  the files into a throwaway project, replaces each documented port by a free one and
  0.0.0.0 by 127.0.0.1, starts it with start.py and runs the check registered for NAME.
* ``<!-- gateway-script: APP name=notify.py -->`` marks a plain Python program that the
  check of APP runs with ``python`` in a process of its own, next to the running app.
* In docs/gateway-api.md, each ``<!-- api-example -->`` block is run in an events.py
  handler of a test application, in order; ``# -> value`` after a statement says what
  it returns, ``# me <- value`` / ``# other <- value`` what a client receives, and
  ``# me closed`` / ``# other closed`` that the client is closed (see ``test_api_page``).

Every test sets TMPDIR to a folder of its own, so the file Store (``Store.path``
defaults to ``<tempdir>/geventman-store``) of its servers and of the GatewayClient
programs it runs is private to it.
"""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import websocket as websocket_client          # websocket-client

from conftest import (REPO, LineClient, Project, WebSocketClient, free_port, port_open,
                      wait_until)

DOCS = os.path.join(REPO, "docs")
MARKER = re.compile(r"^<!-- gateway-example: (?P<name>[\w-]+)(?P<options>[^>]*?)\s*-->\n"
                    r"```python\n(?P<code>.*?)^```", re.M | re.S)
SCRIPT = re.compile(r"^<!-- gateway-script: (?P<app>[\w-]+) name=(?P<file>[\w.]+) -->\n"
                    r"```python\n(?P<code>.*?)^```", re.M | re.S)


def read(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


class Example:
    def __init__(self, name):
        self.name, self.app = name, name.replace("-", "_")
        self.files, self.ports, self.inner = {}, [], []


def _numbers(value):
    return [int(number) for number in value.split(",") if number]


def collect(doc):
    examples = {}
    for match in MARKER.finditer(read(doc)):
        example = examples.setdefault(match["name"], Example(match["name"]))
        options = dict(option.split("=", 1) for option in match["options"].split())
        relative = options.pop("file", "start.py")
        assert relative not in example.files, "%s: two blocks for %s" % (
            match["name"], relative)
        example.files[relative] = match["code"]
        example.ports += _numbers(options.pop("port", ""))
        example.inner += _numbers(options.pop("inner", ""))
        example.app = options.pop("app", example.app)
        assert not options, "%s: unknown marker options %s" % (match["name"], options)
    return examples


EXAMPLES = collect("gateway.md")
SCRIPTS = {match["file"]: (match["app"], match["code"])
           for match in SCRIPT.finditer(read("gateway.md"))}


# -- running an example --------------------------------------------------------------

def free_range(count=4):
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1. Taken below the
    ephemeral range: outgoing connections use every other port of that range."""
    for _ in range(200):
        first = random.randrange(20000, 32000)
        if all(_bindable(first + k) for k in range(count)):
            return first
    raise AssertionError("no %d free ports in a row" % count)


def _bindable(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def port_map(example):
    ports = {port: free_port() for port in example.ports}
    ports.update({port: free_range() for port in example.inner})
    return ports


def install(project, example, ports, replace=()):
    """Write the example's files into ``project`` with the documented ports replaced."""
    documented = re.compile(r"\b(%s)\b" % "|".join(map(str, ports)) if ports else r"(?!)")
    for relative, code in example.files.items():
        code = documented.sub(lambda match: str(ports[int(match[1])]), code)
        code = code.replace("0.0.0.0", "127.0.0.1")
        for old, new in replace:
            code = code.replace(old, new)
        project.write("applications/%s/%s" % (example.app, relative), code)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR of the servers and programs this test starts: their own file Store."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def start(project, name, replace=()):
    example = EXAMPLES[name]
    ports = port_map(example)
    install(project, example, ports, replace)
    project.start(ports=[ports[port] for port in example.ports])
    return ports


def gateway_client(private_tmp, **options):
    from geventman.client import GatewayClient
    return GatewayClient(path=str(private_tmp / "geventman-store"), **options)


def linked(private_tmp, gateways, **options):
    """Wait until ``gateways`` gateway processes are listed and answer a query."""
    client = gateway_client(private_tmp, **options)
    wait_until(lambda: len(client.transport.addresses()) == gateways
               if _listed(client) else False, timeout=15, message="gateways listed")
    return client


def _listed(client):
    from geventman.client import GatewayNotFound
    try:
        client.transport._addresses_at = 0.0   # read the store again
        return bool(client.transport.addresses())
    except GatewayNotFound:
        return False


def business_linked(project, count, links=1):
    """Wait until ``count`` business processes each have ``links`` ready links (a
    broadcast from one reaches only the gateways it is linked to); for a project whose
    gateways are elsewhere (Project.wait_linked when both kinds are in it)."""
    def rows():
        return [row for row in project.status_json()["processes"]
                if "BusinessWorker" in row["name"] and (row.get("gateways") or 0) >= links]
    wait_until(lambda: len(rows()) == count, timeout=15, message="business workers linked")


class WsClient(WebSocketClient):
    """A blocking WebSocket client that reads JSON and skips heartbeat pings."""

    def __init__(self, port, path="/"):
        self.ws = websocket_client.create_connection("ws://127.0.0.1:%d%s" % (port, path),
                                                     timeout=10)

    def send(self, value):
        self.ws.send(value if isinstance(value, str) else json.dumps(value))

    def recv(self):
        return self.ws.recv()

    def recv_json(self):
        return json.loads(self.recv())


# -- gateway.md ------------------------------------------------------------------------

def test_the_chapter_has_its_examples():
    assert set(EXAMPLES) == {"chat", "heartbeat", "push", "internal", "deploy-gateway",
                             "deploy-business"}
    assert SCRIPTS.keys() == {"notify.py", "shop.py"}
    assert {app for app, _ in SCRIPTS.values()} == {"push"}


def recv_json_but(client, late):
    """The client's next message that is not one of ``late`` (messages that may come,
    each at most once)."""
    message = client.recv_json()
    while message in late:
        late.remove(message)
        message = client.recv_json()
    return message


def chat_session(port):
    """What the chat room example answers, as its chapter says."""
    with WsClient(port) as alice, WsClient(port) as bob:
        welcome = alice.recv_json()
        assert welcome["type"] == "welcome" and re.fullmatch(r"[0-9a-f]{20}",
                                                             welcome["client_id"])
        assert bob.recv_json()["type"] == "welcome"
        alice.send({"type": "login", "name": "tom", "room": "r1"})
        assert alice.recv_json() == {"type": "login", "name": "tom"}
        # Tom's login went to every gateway from his business worker, Jerry's join to
        # Jerry's gateway from another one: if that gateway gets the broadcast after the
        # join, Jerry sees it too, once (two processes' packets carry no order between
        # them; docs/gateway.md, "Order").
        late = [{"type": "login", "name": "tom"}]
        bob.send({"type": "login", "name": "jerry", "room": "r1"})
        assert alice.recv_json() == {"type": "login", "name": "jerry"}
        assert recv_json_but(bob, late) == {"type": "login", "name": "jerry"}
        alice.send({"type": "say", "content": "hi"})       # the name comes from the session
        said = {"type": "say", "from": "tom", "content": "hi"}
        assert alice.recv_json() == said
        assert recv_json_but(bob, late) == said
        bob.close()
        assert alice.recv_json() == {"type": "logout", "name": "jerry"}


def test_chat(project, private_tmp):
    ports = start(project, "chat")
    project.wait_linked()
    chat_session(ports[7272])
    assert "Traceback" not in project.log()


def _events(clients, seconds, chatty=()):
    """Watch ``clients`` (name -> LineClient) for ``seconds``; the ``chatty`` ones send a
    line every 0.4 s. -> {name: (ping times, closed at or None)}."""
    began = time.monotonic()
    seen = {name: ([], None) for name in clients}
    next_line = began
    for client in clients.values():
        client.sock.setblocking(False)
    while time.monotonic() - began < seconds:
        now = time.monotonic()
        if now >= next_line:
            for name in chatty:
                clients[name].sock.send(b"pong\n")
            next_line = now + 0.4
        for name, client in clients.items():
            pings, closed = seen[name]
            if closed is not None:
                continue
            try:
                chunk = client.sock.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionError:
                chunk = b""
            if not chunk:
                seen[name] = (pings, now - began)
            pings.extend([now - began] * chunk.count(b"ping\n"))
        time.sleep(0.02)
    return seen


def test_heartbeat(project, private_tmp):
    ports = start(project, "heartbeat")
    linked(private_tmp, 3)
    clients = {"pinged": LineClient(ports[7280]), "pinged_answers": LineClient(ports[7280]),
               "quiet": LineClient(ports[7281]), "quiet_beats": LineClient(ports[7281]),
               "patient": LineClient(ports[7282])}
    try:
        seen = _events(clients, 4.6, chatty=("pinged_answers", "quiet_beats"))
    finally:
        for client in clients.values():
            client.close()
    # Mode 1: pinged every second, dropped 2 to 3 intervals after connecting.
    pings, closed = seen["pinged"]
    assert closed is not None and 1.8 < closed < 3.6, seen
    assert 2 <= len(pings) <= 3, seen
    assert seen["pinged_answers"][1] is None and len(seen["pinged_answers"][0]) >= 4, seen
    # Mode 2: nothing sent; the silent client is dropped, the beating one stays.
    pings, closed = seen["quiet"]
    assert pings == [] and closed is not None and 1.8 < closed < 3.6, seen
    assert seen["quiet_beats"] == ([], None), seen
    # Mode 3: pinged, never dropped.
    pings, closed = seen["patient"]
    assert closed is None and len(pings) >= 4, seen


def test_push_port_and_gateway_client(project, private_tmp):
    ports = start(project, "push")
    client = linked(private_tmp, 1)
    project.wait_linked()   # worker 0, the pusher, reaches the gateway
    with pytest.raises(websocket_client.WebSocketBadStatusException) as refused:
        WsClient(ports[7290], "/?uid=7&token=wrong")
    assert refused.value.status_code == 403
    with WsClient(ports[7290], "/?uid=42&token=s3cret") as page:
        wait_until(lambda: client.is_uid_online("42"), message="uid 42 bound")
        wait_until(lambda: client.get_all_client_count() == 1, message="one client")
        # A pusher in another language: a plain socket, one JSON line per order.
        with socket.create_connection(("127.0.0.1", ports[7291]), timeout=10) as pusher:
            reader = pusher.makefile("rb")
            pusher.sendall(b'{"content":"hello all"}\n')
            assert reader.readline() == b"ok\n"
            assert page.recv() == "hello all"
            pusher.sendall(b'{"uid":"42","content":"hi"}\n')
            assert reader.readline() == b"ok\n"
            assert page.recv() == "hi"
            reader.close()
        # The cron job of the GatewayClient section, in a plain python process.
        result = run_script(project, "notify.py")
        assert result.stdout == "1\nTrue\n"
        assert page.recv() == "your order shipped"
        # The Flask view, through Flask's test client (its app name is push's here).
        view = ("import shop; answer = shop.app.test_client().post('/orders/42/shipped');"
                " print(answer.status_code, answer.text)")
        result = run_script(project, "shop.py", view, replace=('"shop"', '"push"'))
        assert result.stdout == "200 ok\n"
        assert json.loads(page.recv()) == {"type": "shipped"}
        nowhere = private_tmp / "nowhere"
        nowhere.mkdir()
        result = run_script(project, "shop.py", view, replace=('"shop"', '"push"'),
                            env={"TMPDIR": str(nowhere)})
        assert result.stdout == "503 push service down\n"
    assert "Traceback" not in project.log()


def test_internal_text_gateway(project, private_tmp):
    """The manual's method three: a pusher is a text:// client of a second gateway."""
    ports = start(project, "internal")
    linked(private_tmp, 2)
    project.wait_linked()
    with WsClient(ports[7292]) as page, LineClient(ports[7293]) as pusher:
        page.send("hello")
        assert page.recv() == "you said hello"   # connected, and in the group
        assert pusher.ask('{"type":"send","content":"hello all","pass":"s3cret"}') == "ok"
        assert page.recv() == "hello all"
        assert pusher.ask('{"content":"x","pass":"guess"}') == "who are you?"
        assert pusher.closed_by_peer()
    assert "Traceback" not in project.log()


def run_script(project, name, run=None, replace=("", ""), env=None):
    """Write a script of the docs into the project and run it (or ``run``, a line of
    Python that imports it) with plain python; it must not import gevent."""
    _, code = SCRIPTS[name]
    with open(project.path(name), "w") as handle:
        handle.write(code.replace(*replace))
    run = run or "import runpy; runpy.run_path(%r, run_name='__main__')" % name
    check = "; import sys; assert 'gevent' not in sys.modules, 'gevent imported'"
    result = subprocess.run([sys.executable, "-c", run + check], cwd=project.root,
                            capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, **(env or {})))
    assert result.returncode == 0, result.stderr
    return result


def test_gateway_client_without_gateways(private_tmp):
    from geventman.client import GatewayNotFound
    with pytest.raises(GatewayNotFound):
        gateway_client(private_tmp, timeout=1).get_all_client_count()


# -- the distributed deployment, with a real Redis or memcached ----------------------

def store_server(kind, port):
    if kind == "redis":
        binary = shutil.which("redis-server")
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"]
    else:
        binary = shutil.which("memcached")
        command = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16"]
        if os.geteuid() == 0:
            command += ["-u", "root"]
    if binary is None:
        pytest.skip("%s is not installed (tests/run.sh installs it)" % kind)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), message="%s on %d" % (kind, port))
    return process


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_distributed_deployment(project, tmp_path, private_tmp, kind):
    """The two copies of the deployment section on two 'hosts': the gateway copy with
    lan_ip 127.0.0.2 (for 10.0.0.1), the business copy beside it, the Store server on
    127.0.0.1 (for 10.0.0.5)."""
    store_port = free_port()
    server = store_server(kind, store_port)
    (tmp_path / "business").mkdir()
    business = Project(tmp_path / "business")
    try:
        replace = [("10.0.0.5:6379", "127.0.0.1:%d" % store_port),
                   ("10.0.0.1", "127.0.0.2")]
        if kind == "memcached":
            replace.append(('Store.driver = "redis"', 'Store.driver = "memcached"'))
        gateway = EXAMPLES["deploy-gateway"]
        ports = port_map(gateway)
        install(project, gateway, ports, replace)
        project.start(ports=[ports[7272]])
        install(business, EXAMPLES["deploy-business"], {}, replace)
        business.write("applications/chat/events.py", EXAMPLES["chat"].files["events.py"])
        business.start()
        client = linked(private_tmp, 4, driver=kind, servers=["127.0.0.1:%d" % store_port],
                        secret_key="a long shared secret")
        assert all(address.startswith("127.0.0.2:") for address in client.transport.addresses())
        business_linked(business, 4, links=4)
        chat_session(ports[7272])
        assert "Traceback" not in project.log() + business.log()
    finally:
        business.cleanup()
        project.cleanup()      # before the Store goes: gateways leave it as they stop
        server.kill()
        server.wait()


# -- gateway-api.md: every call, run in a handler ----------------------------------------

API_BLOCK = re.compile(r"^<!-- api-example -->\n```python\n(?P<code>.*?)^```", re.M | re.S)

RUNNER_START = """
from geventman.gateway import BusinessWorker, Gateway

gateway = Gateway("websocket://127.0.0.1:PORT")
gateway.count = 2                 # the answers of two gateways are merged
gateway.start_port = INNER
worker = BusinessWorker()
worker.count = 2
"""

# Runs the steps of one block in on_message, as the current client's handler, and
# writes what each step gave to a file (the clients may be closed by the block).
RUNNER_EVENTS = """
import json
import os
import traceback

from geventman.lib import Context, Gateway


def on_connect(client_id):
    Gateway.send_to_current_client({"id": client_id})


def on_message(client_id, message):
    order = json.loads(message)
    names = {"Gateway": Gateway, "Context": Context, "client_id": client_id,
             "other_id": order["other_id"]}
    results = []
    for code, expected in order["steps"]:
        try:
            if expected is None:
                exec(code, names)
                results.append(None)
            else:
                value, want = eval(code, names), eval(expected, names)
                results.append(None if value == want else "%r != %r" % (value, want))
        except Exception:
            results.append(traceback.format_exc())
    with open(order["result"] + ".tmp", "w") as handle:
        json.dump(results, handle)
    os.rename(order["result"] + ".tmp", order["result"])
"""


def api_blocks():
    return [match["code"] for match in API_BLOCK.finditer(read("gateway-api.md"))]


def block_steps(code):
    """A block -> [(statement, expected expression or None)] and the annotations:
    [(client, value)] received, and the set of clients closed."""
    import ast
    import io
    import tokenize
    comments = {token.start[0]: token.string for token in
                tokenize.generate_tokens(io.StringIO(code).readline)
                if token.type == tokenize.COMMENT}
    steps, receives, closed = [], [], set()
    for statement in ast.parse(code).body:
        expected = None
        for note in re.split(r"\s*#\s*", comments.get(statement.end_lineno, "")):
            if note.startswith("->"):
                expected = note[2:].strip()
            elif re.match(r"(me|other) <- ", note):
                who, value = note.split(" <- ", 1)
                receives.append((who, ast.literal_eval(value)))
            elif re.fullmatch(r"(me|other) closed", note):
                closed.add(note.split()[0])
        steps.append((ast.get_source_segment(code, statement), expected))
    return steps, receives, closed


def received_as(ws, expected):
    got = ws.recv()
    if isinstance(expected, (dict, list)):
        return json.loads(got)
    return got


def closed_by_server(ws):
    """True once the server closed the WebSocket (close frame or EOF), False after 5 s."""
    ws.settimeout(5)
    try:
        while ws.recv() not in ("", b""):
            pass
    except websocket_client.WebSocketTimeoutException:
        return False
    except (websocket_client.WebSocketConnectionClosedException, ConnectionError):
        pass
    return True


def test_api_page(project, private_tmp):
    blocks = api_blocks()
    assert len(blocks) >= 30
    port, inner = free_port(), free_range()
    project.app("runner", RUNNER_START.replace("PORT", str(port)).replace(
        "INNER", str(inner)), events_py=RUNNER_EVENTS)
    project.start(ports=[port])
    linked(private_tmp, 2)
    project.wait_linked()
    clients = {}

    def connect(who):
        clients[who] = WsClient(port)
        clients[who].id = clients[who].recv_json()["id"]

    connect("me")
    connect("other")
    try:
        for number, code in enumerate(blocks):
            steps, receives, closed = block_steps(code)
            result = project.path("result-%d.json" % number)
            clients["me"].send({"steps": steps, "other_id": clients["other"].id,
                                "result": result})
            wait_until(lambda: os.path.exists(result), message="block %d run" % number)
            with open(result) as handle:
                outcome = json.load(handle)
            failures = [(step, error) for step, error in zip(steps, outcome) if error]
            assert not failures, "gateway-api.md block %d:\n%s\n%s" % (
                number, code, failures)
            for who, expected in receives:
                assert received_as(clients[who].ws, expected) == expected, (number, code)
            for who in closed:
                assert closed_by_server(clients[who].ws), (number, who)
                clients[who].close()
                connect(who)
    finally:
        for client in clients.values():
            client.close()
    assert "Traceback" not in project.log()


# -- gateway-protocol.md -----------------------------------------------------------------

PROTOCOL_BLOCK = re.compile(r"^<!-- protocol-example -->\n```python\n(?P<code>.*?)^```",
                            re.M | re.S)


def test_protocol_page_examples():
    blocks = PROTOCOL_BLOCK.findall(read("gateway-protocol.md"))
    assert len(blocks) == 3
    for code in blocks:
        exec(compile(code, "gateway-protocol.md", "exec"), {})


def _table(text, title):
    """The rows of the first table after the line ``title`` (lists of cells)."""
    rows = []
    for line in text[text.index(title):].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def test_protocol_page_tables_match_the_code():
    from geventman.gateway import wire
    from geventman.gateway.gateway import Gateway
    text = read("gateway-protocol.md")
    header = _table(text, "## Packets")
    offsets = [(int(row[0]), int(row[1])) for row in header if row[1].isdigit()]
    assert offsets[-1] == (32, 4) and sum(size for _, size in offsets) == wire.HEADER_SIZE
    assert [offset for offset, _ in offsets] == [sum(size for _, size in offsets[:k])
                                                  for k in range(len(offsets))]
    flags = {row[1].strip("`"): int(row[0], 16) for row in _table(text, "## Flags")}
    assert flags == {name: getattr(wire, name) for name in ("TEXT", "RAW", "JSON",
                                                             "HAS_DATA")}
    documented = {}
    for title in ("## Events", "## Commands", "## The link itself"):
        for row in _table(text, title):
            documented[row[1].strip("`")] = int(row[0])
    assert documented == {cmd.name: int(cmd) for cmd in wire.Cmd}
    queries = {row[0].strip("`") for row in _table(text, "## Queries")}
    assert queries == set(Gateway._queries)


# -- porting.md: the GatewayWorker names ----------------------------------------------------

GATEWAY_NAME = re.compile(r"`((?:gateway|business_worker|Store|Gateway|Context|GatewayClient)"
                          r"(?:\.\w+)+)")


def gatewayworker_rows():
    text = read("porting.md")
    rows = []
    for line in text[text.index("## GatewayWorker"):].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows


def test_porting_gatewayworker_names_exist():
    """Every geventman name the GatewayWorker section gives exists (the geventman.*
    ones are checked by tests/test_docs.py)."""
    from geventman.client import GatewayClient
    from geventman.gateway import BusinessWorker, Gateway as GatewayClass, Store
    from geventman.lib import Context, Gateway
    from geventman.worker import Worker
    gateway, business_worker = GatewayClass("tcp://127.0.0.1:1"), BusinessWorker()
    Worker._all.remove(gateway)   # made only to be looked at
    Worker._all.remove(business_worker)
    objects = {"gateway": gateway, "business_worker": business_worker, "Store": Store,
               "Gateway": Gateway, "Context": Context, "GatewayClient": GatewayClient}
    rows = gatewayworker_rows()
    assert len(rows) > 120, "the GatewayWorker tables look truncated"
    checked = 0
    for old, ours, *_ in rows:
        if "not implemented" in ours.lower():
            continue
        for dotted in GATEWAY_NAME.findall(ours):
            head, *rest = dotted.split(".")
            value = objects[head]
            for part in rest:
                assert hasattr(value, part), "porting.md: %s -> %s" % (old, dotted)
                value = getattr(value, part)
            checked += 1
    assert checked > 80
    # Every call of the API page is in the table.
    api = set(re.findall(r"^### (\w+)\(", read("gateway-api.md"), re.M))
    mapped = {name.split(".")[1] for name in GATEWAY_NAME.findall(read("porting.md"))
              if name.startswith("Gateway.")}
    assert api <= mapped, api - mapped
