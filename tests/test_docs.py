"""The manual in docs/ is checked against the code.

* Every complete application in docs/ is run. Such an example is a ```python block
  preceded by a marker line::

      <!-- example: NAME port=2347 -->            start.py of the application NAME
      <!-- example: NAME file=protocols/x.py -->  another file of the same application

  Options: ``port=`` (TCP ports the app listens on, comma separated; the test waits for
  them), ``uses=`` (TCP ports the test itself listens on), ``udp=`` (UDP ports), ``app=``
  (the folder name under applications/, default NAME), ``script=`` (the block is a
  script of its own, run as ``python <script> start -d`` from the project folder). The
  test writes the files into a temporary project, replaces each documented port by a
  free one and 0.0.0.0 by 127.0.0.1, starts it with start.py and runs the check below
  registered for NAME, which asks what the docs say the example answers.
* docs/commands.md holds exactly the signal table of geventman.signals.markdown_table().
* Every geventman name that docs/porting.md gives for a Workerman name exists.
* Every ```python block in docs/ compiles.
"""
import importlib
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import REPO, LineClient, free_port, port_open, wait_until

DOCS = os.path.join(REPO, "docs")
REQUIRED = {"first-server", "jsonnl", "ticker", "proxy", "reload", "heartbeat-check",
            "xmlprotocol", "jsonint"}
MARKER = re.compile(r"^<!-- example: (?P<name>[\w-]+)(?P<options>[^>]*?)\s*-->\n"
                    r"```python\n(?P<code>.*?)^```", re.M | re.S)
BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.M | re.S)


# -- reading the docs --------------------------------------------------------

def doc_files():
    return sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


class Example:
    def __init__(self, name):
        self.name, self.app = name, name.replace("-", "_")
        self.files, self.ports, self.uses, self.udp = {}, [], [], []
        self.where = self.script = None


def _numbers(value):
    return [int(number) for number in value.split(",") if number]


def collect_examples():
    examples = {}
    for path in doc_files():
        for match in MARKER.finditer(read(path)):
            example = examples.setdefault(match["name"], Example(match["name"]))
            example.where = example.where or os.path.basename(path)
            options = dict(option.split("=", 1) for option in match["options"].split())
            relative = options.pop("file", "start.py")
            assert relative not in example.files, "%s: two blocks for %s" % (
                match["name"], relative)
            example.files[relative] = match["code"]
            example.ports += _numbers(options.pop("port", ""))
            example.uses += _numbers(options.pop("uses", ""))
            example.udp += _numbers(options.pop("udp", ""))
            example.app = options.pop("app", example.app)
            example.script = options.pop("script", example.script)
            assert not options, "%s: unknown marker options %s" % (match["name"], options)
    return examples


EXAMPLES = collect_examples()


# -- running one example -------------------------------------------------------

class Running:
    """A started example: ``port(n)`` is the real port behind documented port n."""

    def __init__(self, project, example, ports):
        self.project, self.example, self.ports = project, example, ports

    def port(self, documented):
        return self.ports[documented]

    def path(self, relative):
        return self.project.path("applications", self.example.app, relative)


def install(project, example):
    ports = {port: free_port() for port in example.ports + example.uses}
    ports.update({port: free_port(socket.SOCK_DGRAM) for port in example.udp})
    documented = re.compile(r"\b(%s)\b" % "|".join(map(str, ports)) if ports else r"(?!)")
    for relative, code in example.files.items():
        code = documented.sub(lambda match: str(ports[int(match[1])]), code)
        where = example.script or "applications/%s/%s" % (example.app, relative)
        project.write(where, code.replace("0.0.0.0", "127.0.0.1"))
    return ports


def run_script(project, example, command, timeout=30):
    """``python <script> <command...>`` in the project folder (the fixture's cleanup
    stops a leftover server through start.py: both use geventman.pid there)."""
    result = subprocess.run([sys.executable, example.script] + command.split(),
                            cwd=project.root, capture_output=True, text=True,
                            timeout=timeout)
    project.children()  # remembers the pids for the cleanup
    if project.master_pid():
        project.pids.add(project.master_pid())
    return result


CHECKS = {}


def check(name, before=None):
    """Register the check of example ``name``; ``before(running)`` runs before start."""
    def register(function):
        CHECKS[name] = (function, before)
        return function
    return register


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example(project, name):
    example = EXAMPLES[name]
    assert name in CHECKS, "example %r in docs/%s has no check in this file" % (
        name, example.where)
    function, before = CHECKS[name]
    running = Running(project, example, install(project, example))
    state = before(running) if before else None
    try:
        ports = [running.port(port) for port in example.ports]
        if example.script:
            started = run_script(project, example, "start -d")
            assert started.returncode == 0, started.stdout + started.stderr
            for port in ports:
                wait_until(lambda: port_open(port), message="port %d" % port)
        else:
            project.start(ports=ports)
        if before:
            function(running, state)
        else:
            function(running)
    finally:
        if state is not None and hasattr(state, "close"):
            state.close()
    result = run_script(project, example, "stop") if example.script else project.stop()
    assert result is not None and result.returncode == 0, result and result.stdout


def test_required_examples_are_marked():
    assert REQUIRED <= set(EXAMPLES), "missing: %s" % (REQUIRED - set(EXAMPLES))


def test_every_check_has_its_example():
    assert set(CHECKS) <= set(EXAMPLES), "checks without example: %s" % (
        set(CHECKS) - set(EXAMPLES))


# -- small clients -------------------------------------------------------------

def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "closed after %r" % data
        data += chunk
    return data


def lines_until(client, wanted, limit=20):
    """Read lines until ``wanted``; return the lines read before it."""
    seen = []
    for _ in range(limit):
        line = client.recvline()
        if line == wanted:
            return seen
        seen.append(line)
    raise AssertionError("no %r in %r" % (wanted, seen))


def processes(project):
    return project.status_json()["processes"]


def total(project, counter):
    return sum(row[counter] or 0 for row in processes(project))


# -- the checks, one per example -------------------------------------------------

@check("first-server")
def check_first_server(running):
    with LineClient(running.port(2348)) as client:
        assert client.ask("tom") == "hello tom"
        assert client.ask("jerry") == "hello jerry"


@check("hot-path")
def check_hot_path(running):
    pure = os.environ.get("GEVENTMAN_PURE_PYTHON", "") not in ("", "0")
    expected = "pure (GEVENTMAN_PURE_PYTHON)" if pure else "compiled"
    with LineClient(running.port(2361)) as client:
        assert client.ask("ping") == "%s: ping" % expected
    assert "hot path:%s" % expected in running.project.foreground_output()


@check("worker-intro")
def check_worker_intro(running):
    with LineClient(running.port(2347)) as client:
        assert client.ask("tom") == "hello tom"


@check("one-file")
def check_one_file(running):
    with LineClient(running.port(2347)) as client:
        assert client.ask("tom") == "hello tom"
    assert running.project.master_pid() is not None


@check("errors")
def check_errors(running):
    with LineClient(running.port(2349)) as client:
        assert client.ask("tom") == "hello tom"
        client.sendline("boom")
        assert client.ask("jerry") == "hello jerry"   # same connection, still served
    assert total(running.project, "throw_exception") == 1
    assert "ZeroDivisionError" in running.project.log()


@check("chat")
def check_chat(running):
    port = running.port(2350)

    def next_line(client):
        # The start-up probe of the harness was a user too; its "left" may come any time.
        line = client.recvline()
        return next_line(client) if re.fullmatch(r"user\[\d+\] left", line) and \
            line not in expected_left else line

    expected_left = set()
    with LineClient(port) as alice, LineClient(port) as bob:
        alice_id = re.fullmatch(r"welcome user\[(\d+)\]", next_line(alice)).group(1)
        bob_id = re.fullmatch(r"welcome user\[(\d+)\]", next_line(bob)).group(1)
        alice.sendline("hi all")
        said = "user[%s] said: hi all" % alice_id
        assert next_line(alice) == said
        assert next_line(bob) == said
        bob.close()
        expected_left.add("user[%s] left" % bob_id)
        assert next_line(alice) == "user[%s] left" % bob_id


@check("push")
def check_push(running):
    with LineClient(running.port(2351)) as client:
        assert client.recvline() == "welcome"
        with LineClient(running.port(2352)) as pusher:
            assert pusher.ask("news") == "sent to 1"
        assert client.recvline() == "news"
    names = {row["name"] for row in processes(running.project)}
    assert names == {"clients"}, names


@check("reload")
def check_reload(running):
    project = running.project
    port = running.port(2353)
    with LineClient(port) as client:
        assert client.ask("x") == "v1: x"
    old = set(project.wait_children(2))
    with open(running.path("handlers.py")) as handle:
        source = handle.read()
    with open(running.path("handlers.py"), "w") as handle:   # a different length, so
        handle.write(source.replace('"v1: "', '"version 2: "'))  # no stale .pyc is used
    reload_all(project, old)
    for _ in range(4):
        with LineClient(port) as client:
            assert client.ask("x") == "version 2: x"
    # The negative: start.py was imported by the master, and new children are forked
    # from it, so an edit there is not picked up by reload (on_worker_start is old).
    old = set(project.children())
    with open(running.path("start.py")) as handle:
        source = handle.read()
    assert "worker.on_message = handlers.on_message" in source
    with open(running.path("start.py"), "w") as handle:
        handle.write(source.replace(
            "worker.on_message = handlers.on_message",
            'worker.on_message = lambda connection, data: connection.send("start.py")'))
    reload_all(project, old)
    for _ in range(4):
        with LineClient(port) as client:
            assert client.ask("x") == "version 2: x"


def reload_all(project, old):
    project.command("reload", check=True)
    wait_until(lambda: not old & set(project.children()) and len(project.children()) == 2,
               timeout=15, message="both children replaced")


@check("proxy")
def check_proxy(running):
    with socket.create_connection(("127.0.0.1", running.port(2355)), timeout=5) as sock:
        sock.sendall(b"tom")
        assert read_exactly(sock, 9) == b"hello tom"
        sock.sendall(b"jerry")
        assert read_exactly(sock, 11) == b"hello jerry"
    # Closing the client closes its backend link too: no connection is left anywhere.
    wait_until(lambda: total(running.project, "connections") == 0, message="links closed")


def listen_for_reporter(running):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", running.port(2356)))
    server.listen(8)
    server.settimeout(10)
    return server


@check("reconnect", before=listen_for_reporter)
def check_reconnect(running, server):
    for _ in range(2):
        sock, _ = server.accept()
        sock.settimeout(5)
        with sock, sock.makefile("rb") as reader:   # both, or the fd stays open
            assert reader.readline() == b"hello from reporter 0\n"
            sock.sendall(b"ping\n")
            assert reader.readline() == b"ack ping\n"
    # the second accept proves the reconnect after we closed the first link


@check("udp")
def check_udp(running):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"ping", ("127.0.0.1", running.port(2357)))
        assert sock.recvfrom(100)[0] == b"got ping"


@check("ticker")
def check_ticker(running):
    with LineClient(running.port(2358)) as client:
        assert client.recvline() == "tick"
        client.sendline("tom")
        assert set(lines_until(client, "later tom")) <= {"tick"}
        client.sendline("stop")
        assert set(lines_until(client, "stopped")) <= {"tick"}
        # The repeating timer is gone, the one-shot timer went when it fired.
        wait_until(lambda: total(running.project, "timers") == 0, message="no timers")


def listen_udp(running):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", running.port(2359)))
    sock.settimeout(10)
    return sock


@check("heartbeat", before=listen_udp)
def check_heartbeat(running, sock):
    beats = [sock.recvfrom(100)[0] for _ in range(2)]
    pids = set(running.project.children())
    for beat in beats:
        word, pid = beat.split()
        assert word == b"alive" and int(pid) in pids, (beat, pids)


def shorten_heartbeat(running):
    """The page's times are minutes; the test runs the same code with seconds."""
    path = running.path("start.py")
    with open(path) as handle:
        source = handle.read()
    for documented, short in (("HEARTBEAT_TIME = 55", "HEARTBEAT_TIME = 1.5"),
                              ("CHECK_INTERVAL = 10", "CHECK_INTERVAL = 0.25")):
        assert documented in source, documented
        source = source.replace(documented, short)
    with open(path, "w") as handle:
        handle.write(source)


@check("heartbeat-check", before=shorten_heartbeat)
def check_heartbeat_check(running, _):
    port, heartbeat_time = running.port(2363), 1.5
    connected = time.monotonic()
    active = [LineClient(port) for _ in range(4)]
    silent = [LineClient(port) for _ in range(4)]
    closed_after = {}
    try:
        for client in active:
            assert client.ask("tom") == "hello tom"
        # Ping every 0.3 s, far more often than heartbeat_time, until the silent
        # clients are closed, then as long again: the pinging ones must stay.
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            for client in active:
                assert client.ask("ping") == "pong"
            waiting = [client for client in silent if client not in closed_after]
            readable = select.select([client.sock for client in waiting], [], [], 0.3)[0]
            for client in waiting:
                if client.sock in readable:
                    assert client.sock.recv(100) == b"", "a silent client got data"
                    closed_after[client] = time.monotonic() - connected
            if deadline is None and len(closed_after) == len(silent):
                deadline = time.monotonic() + heartbeat_time * 2
            assert time.monotonic() - connected < 20, "silent clients still open"
        assert min(closed_after.values()) >= heartbeat_time, closed_after
        rows = processes(running.project)
        assert [row["timers"] for row in rows] == [1, 1], rows
        assert total(running.project, "connections") == len(active)
    finally:
        for client in active + silent:
            client.close()


@check("jsonnl")
def check_jsonnl(running):
    with LineClient(running.port(2360)) as client:
        answer = client.ask(json.dumps({"type": "message", "content": "hello"}))
        assert json.loads(answer) == {"type": "reply", "content": "HELLO"}
        client.send(b'{"type": "message",')   # half a package: nothing happens yet
        assert json.loads(client.ask(' "content": "again"}')) == {
            "type": "reply", "content": "AGAIN"}


@check("frame")
def check_frame(running):
    with socket.create_connection(("127.0.0.1", running.port(2361)), timeout=5) as sock:
        sock.sendall(struct.pack(">I", 4 + 3) + b"tom")
        assert read_exactly(sock, 4 + 9) == struct.pack(">I", 13) + b"hello tom"


def closed_by_server(sock):
    sock.settimeout(5)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


XML_REQUEST = (b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<request>\n'
               b'  <module>user</module>\n  <action>getInfo</action>\n</request>')
XML_ANSWER = (b"<response><module>user</module><action>getInfo</action>"
              b"<status>ok</status></response>")


def xml_package(body):
    return b"%010d" % (10 + len(body)) + body


@check("xmlprotocol")
def check_xmlprotocol(running):
    address = ("127.0.0.1", running.port(2364))
    request, answer = xml_package(XML_REQUEST), xml_package(XML_ANSWER)
    assert (request[:10], answer[:10]) == (b"0000000125", b"0000000095")  # as the page says
    with socket.create_connection(address, timeout=5) as sock:
        for start in range(0, len(request), 7):     # the header arrives in two pieces
            sock.sendall(request[start:start + 7])
        assert read_exactly(sock, len(answer)) == answer
        sock.sendall(request * 2)                     # two packages in one write
        assert read_exactly(sock, 2 * len(answer)) == answer * 2
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"00000abcde<request/>")       # not ten digits
        assert closed_by_server(sock)
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(xml_package(b"<request>"))       # not XML
        assert closed_by_server(sock)
    wait_until(lambda: total(running.project, "throw_exception") == 1, message="counted")
    assert "bad package" in running.project.log()


@check("jsonint")
def check_jsonint(running):
    body = b'{"type":"message","content":"hello all"}'
    request = struct.pack(">I", 4 + len(body)) + body
    assert request[:4] == b"\x00\x00\x00\x2c"         # as the page says
    with socket.create_connection(("127.0.0.1", running.port(2365)), timeout=5) as sock:
        sock.sendall(request[:2])                     # half a header
        sock.sendall(request[2:] + request)           # the rest, and a second package
        for _ in range(2):
            header = read_exactly(sock, 4)
            assert header == b"\x00\x00\x00\x2d"
            assert json.loads(read_exactly(sock, 45 - 4)) == {
                "type": "reply", "content": "HELLO ALL"}
        sock.sendall(struct.pack(">I", 3))            # shorter than its own header
        assert closed_by_server(sock)


@check("register")
def check_register(running):
    with LineClient(running.port(2362)) as client:
        assert client.ask("hello world") == "HELLO WORLD"


# -- the rest of the manual ----------------------------------------------------

def test_signal_table_is_generated():
    from geventman.signals import markdown_table
    text = read(os.path.join(DOCS, "commands.md"))
    start = text.index("| signal |")
    table = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        table.append(line)
    assert "\n".join(table) == markdown_table()


def declared_packages():
    """Package names of pyproject.toml: (runtime, the [test] extra)."""
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)["project"]

    def names(requirements):
        return {re.match(r"[\w.-]+", requirement)[0].lower() for requirement in requirements}
    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def test_install_lines_name_what_pyproject_installs():
    runtime, test = declared_packages()
    comments = {}
    for line in read(os.path.join(DOCS, "getting-started.md")).splitlines():
        if line.startswith("pip install -e ") and "#" in line:
            command, _, comment = line.partition("#")
            comments[command.split()[-1]] = set(re.findall(r"[\w.-]+", comment.lower()))
    assert comments["."] - {"the", "same", "plus", "and"} == runtime
    assert comments["'.[test]'"] - {"the", "same", "plus", "and"} == test


@pytest.mark.parametrize("path", doc_files(), ids=os.path.basename)
def test_python_blocks_compile(path):
    for number, match in enumerate(BLOCK.finditer(read(path))):
        compile(match["code"], "%s block %d" % (os.path.basename(path), number), "exec")


def porting_rows():
    rows = []
    for line in read(os.path.join(DOCS, "porting.md")).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows


def instances():
    """Real objects to look instance attributes up on (nothing is started)."""
    from geventman.connection import AsyncTcpConnection, UdpConnection
    from geventman.worker import Worker
    worker = Worker("tcp://127.0.0.1:1")
    Worker._all.remove(worker)  # made only to be looked at
    return {"worker": worker, "connection": AsyncTcpConnection("tcp://127.0.0.1:1"),
            "udp_connection": UdpConnection(None, ("127.0.0.1", 1))}


def resolve_name(dotted, objects):
    """``Worker.run_all`` / ``worker.count`` / ``geventman.connection.SEND_FAIL``."""
    head, *rest = dotted.split(".")
    if head in objects:
        value = objects[head]
    elif head == "geventman":
        for cut in range(len(rest), -1, -1):
            try:
                value = importlib.import_module(".".join([head] + rest[:cut]))
            except ImportError:
                continue
            rest = rest[cut:]
            break
    else:
        value = importlib.import_module("geventman.connection" if head in (
            "TcpConnection", "AsyncTcpConnection", "UdpConnection", "State") else "geventman")
        rest = [head] + rest
    for part in rest:
        value = getattr(value, part)
    return value


NAME = re.compile(r"`((?:geventman|Worker|worker|connection|udp_connection|TcpConnection|"
                  r"AsyncTcpConnection|UdpConnection|State|Timer)(?:\.\w+)+)")
COMMAND = re.compile(r"`python start\.py ([^`]+)`")


def test_porting_names_exist():
    from geventman import cli
    objects = instances()
    rows = porting_rows()
    assert len(rows) > 80, "the porting table looks truncated"
    checked = 0
    for cells in rows:
        ours = cells[1]
        if "not implemented" in ours.lower():
            continue
        for dotted in NAME.findall(ours):
            try:
                resolve_name(dotted, objects)
            except (AttributeError, ImportError) as error:
                raise AssertionError("porting.md: %s -> %s: %s" % (cells[0], dotted, error))
            checked += 1
        for command in COMMAND.findall(ours):
            try:
                cli.parse(["start.py"] + command.split())
            finally:
                cli._current = None  # parse() remembers the command for main()
            checked += 1
    assert checked > 60
