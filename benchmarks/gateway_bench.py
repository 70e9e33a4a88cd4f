"""Gateway benchmark (issue 10): relay, fan-out, chat and memory of Gateway/BusinessWorker,
beside the plain websocket:// echo and GatewayWorker 4, in one run.

    python benchmarks/gateway_bench.py [--duration 10] [--rounds 3] [--layouts 1+1,2+1] ...

One command does everything: builds benchmarks/wsloadgen.c, starts the servers below
(each in a throwaway project, in a session of its own), measures, stops every server
by pid, prints markdown tables and writes them, with the raw numbers as JSON, to
benchmarks/results/gateway-<time>.{md,json}.

Servers, all on 127.0.0.1, started once and measured in turn:

* ``relay G+B``, one per ``--layouts`` entry: a Gateway ("websocket://", ``count = G``)
  and a BusinessWorker (``count = B``) whose events.py answers each message with
  ``Gateway.send_to_current_client(message)``; a message starting with "B" goes to
  ``Gateway.send_to_all`` instead, one starting with "C" to ``send_to_group`` of the
  client's group, and "join" puts the client in group ``connection id % 100`` (the
  fan-out and chat scenarios).
* ``echo N``: the plain ``websocket://`` echo worker with ``count = N`` for every total
  process count N = G + B of the layouts: the relay is compared with the echo that has
  as many processes.
* ``GatewayWorker 1+1`` and ``Workerman echo 2`` (``--gw-layout``): shared/peers/php/
  gw_relay.php (WM_GW=1 WM_BW=1; its Register process is one more, idle) and
  ws_echo.php (WM_COUNT=2), when ../shared/peers/setup.sh set them up under /tmp/peers
  (benchmarks/peers.py); without them the run says why and goes on.

Scenarios, in this order:

1. memory: on the fresh servers, RSS of the gateway processes (and of the business
   processes, and of the whole server) before and after ``--idle`` idle clients (each
   does the handshake and one echo, which crosses the business worker, then stays).
2. relay: ``--clients`` (100 and 1,000) clients with one message in flight each;
   messages/s, p50/p99 round trip and server CPU per message (utime + stime of every
   server process over the measured window), ``--rounds`` rounds rotating the servers,
   medians.
3. fan-out: ``--fanout-clients`` (10,000) clients on each relay layout; one client
   sends a 100-byte "B..." message that the business worker hands to send_to_all:
   ``--fanout-rounds`` times one broadcast at a time (time from the trigger's send
   until the last client has it), then ``--duration`` seconds with ``--window``
   broadcasts in flight (broadcasts/s completed, i.e. delivered to every client).
4. chat: ``--chat-clients`` (10,000) clients in 100 groups of 100; the first client of
   each group sends 32-byte messages to its group (send_to_group, one in flight per
   sender); messages delivered to clients per second, and each sender's round trip.

``--profile`` adds py-spy profiles of a gateway and a business process during one
extra 100-client relay run (issue 13 asks for the relay path profiled).
"""
import argparse
import collections
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

import peers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "bin", "wsloadgen")
RESULTS = os.path.join(HERE, "results")
GROUPS = 100

# Targets of issue 10 on this 2-core machine.
RELAY_TARGET = 0.7          # relay messages/s >= 0.7x the plain echo of the same run
BROADCAST_TARGET_MS = 100   # 10,000-client send_to_all delivered to the last one
IDLE_TARGET_KB = 3.0        # gateway memory per idle client

RELAY_APP = """
import os

from geventman.gateway import BusinessWorker, Gateway, Store

# A store of this project's own: no other application's gateways are found.
Store.path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store")

gateway = Gateway("websocket://127.0.0.1:%(port)d")
gateway.count = %(gateways)d
gateway.start_port = %(start_port)d

worker = BusinessWorker()
worker.count = %(business)d
"""

RELAY_EVENTS = """
from geventman.lib import Gateway

GROUPS = %(groups)d


def group_of(client_id):
    return str(int(client_id[-8:], 16) %% GROUPS)   # the gateway's connection id


def on_message(client_id, message):
    kind = message[:1]
    if kind == "B":
        Gateway.send_to_all(message)
    elif kind == "C":
        Gateway.send_to_group(group_of(client_id), message)
    elif message == "join":
        Gateway.join_group(client_id, group_of(client_id))
        Gateway.send_to_current_client("joined " + group_of(client_id))
    else:
        Gateway.send_to_current_client(message)
"""

ECHO_APP = """
from geventman import Worker

worker = Worker("websocket://127.0.0.1:%(port)d")
worker.name = "wsecho"
worker.count = %(count)d
worker.on_message = lambda connection, data: connection.send(data)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="relay rounds (median shown)")
    parser.add_argument("--layouts", default="1+1,2+1",
                        help="gateway+business process counts of the relays")
    parser.add_argument("--clients", default="100,1000", help="relay client counts")
    parser.add_argument("--threads", type=int, default=1, help="loadgen threads (relay)")
    parser.add_argument("--payload", default="hello websocket!", help="relay message")
    parser.add_argument("--idle", type=int, default=10000, help="idle clients (memory)")
    parser.add_argument("--fanout-clients", type=int, default=10000)
    parser.add_argument("--fanout-rounds", type=int, default=20)
    parser.add_argument("--window", type=int, default=4,
                        help="broadcasts in flight while measuring broadcasts/s")
    parser.add_argument("--chat-clients", type=int, default=10000)
    parser.add_argument("--big-threads", type=int, default=2,
                        help="loadgen threads for the 10,000-client scenarios")
    parser.add_argument("--scenarios", default="memory,relay,fanout,chat")
    parser.add_argument("--gw-layout", default="1+1",
                        help="GatewayWorker 4's gateway+business processes (WM_GW+WM_BW; "
                             "its Register is one more, idle)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave Workerman/GatewayWorker out even when set up")
    parser.add_argument("--profile", action="store_true", help="py-spy the relay path")
    return parser.parse_args(argv)


# -- servers -----------------------------------------------------------------------


def free_ports(count):
    """A base port such that base .. base + count - 1 can all be bound now."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + count < 65536 and peers.ports_free(range(base, base + count)) is None:
            return base
    raise RuntimeError("no %d free consecutive ports" % count)


def ws_echo_ok(port, timeout=2.0):
    """True once a websocket handshake and one echo work on ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            if not data.startswith(b"HTTP/1.1 101"):
                return False
            data = data.split(b"\r\n\r\n", 1)[1]
            sock.sendall(b"\x81\x86\0\0\0\0ready?")   # a zero mask: the payload as it is
            while len(data) < 8:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return data[:8] == b"\x81\x06ready?"
    except OSError:
        return False


class Server:
    """A server under test: a parent process and its children, stopped by pid."""

    def __init__(self, name, argv, cwd, env, port, processes, roles, stop_signal,
                 peer=False):
        self.name, self.argv, self.cwd, self.env = name, argv, cwd, env
        self.port, self.processes = port, processes
        self.roles = roles            # {role: substring of the process title}
        self.stop_signal = stop_signal
        self.peer = peer
        self.popen = None
        self.known = {}

    def start(self):
        self.log = open(os.path.join(RESULTS, "gateway-%s.log" % self.name.replace(" ", "-")),
                        "w")
        self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=self.log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (len(self.children()) >= self.processes and ws_echo_ok(self.port)):
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited %s, see %s" % (self.name, self.popen.returncode,
                                                            self.log.name))
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not answer in 30 s, see %s" % (self.name,
                                                                         self.log.name))
            time.sleep(0.1)
        return self

    def children(self):
        try:
            found = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self.known.setdefault(child.pid, child)
        return found

    def tree(self):
        try:
            return [psutil.Process(self.popen.pid)] + self.children()
        except psutil.NoSuchProcess:
            return []

    def role_of(self, process):
        try:
            title = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            return "gone"
        for role, marker in self.roles.items():
            if marker in title:
                return role
        return "other"

    def sample(self, what):
        """{role: summed value} and "all" over the tree; what = "cpu" (seconds) or "rss"
        (bytes). For "cpu", "user:<role>" and "user:all" hold the user-space part."""
        found, user = {}, {}
        for process in self.tree():
            try:
                if what == "cpu":
                    times = process.cpu_times()
                    value = times.user + times.system
                else:
                    value = process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            role = self.role_of(process)
            found[role] = found.get(role, 0) + value
            if what == "cpu":
                user["user:" + role] = user.get("user:" + role, 0) + times.user
        found["all"] = sum(found.values())
        if what == "cpu":
            user["user:all"] = sum(user.values())
            found.update(user)
        return found

    def pids_of(self, role):
        return [process.pid for process in self.children() if self.role_of(process) == role]

    def stop(self):
        if self.popen is None:
            return
        self.children()
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for process in self.known.values():
            try:
                process.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if self.popen.poll() is None:
            self.popen.wait(timeout=5)
        self.log.close()
        if not self.peer:
            shutil.rmtree(self.cwd, ignore_errors=True)


def project(files):
    """A throwaway project: the repository's start.py and applications/bench/<files>."""
    root = tempfile.mkdtemp(prefix="geventman-gwbench-")
    shutil.copy(os.path.join(REPO, "start.py"), root)
    folder = os.path.join(root, "applications", "bench")
    os.makedirs(folder)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as handle:
            handle.write(text)
    return root


def geventman_server(name, files, port, processes, roles):
    root = project(files)
    env = dict(os.environ, PYTHONPATH=REPO)
    # SIGINT: the master's `stop` (closes the connections, exits).
    return Server(name, [sys.executable, "start.py", "start"], root, env, port, processes,
                  roles, signal.SIGINT)


def layout(text):
    gateways, business = (int(part) for part in text.split("+"))
    return gateways, business


def make_servers(args, found):
    """Relays, plain echoes of the same process counts, then the PHP peers."""
    servers = []
    totals = []
    for text in args.layouts.split(","):
        gateways, business = layout(text)
        port, start_port = free_ports(1), free_ports(gateways)
        files = {"start.py": RELAY_APP % {"port": port, "gateways": gateways,
                                          "start_port": start_port, "business": business},
                 "events.py": RELAY_EVENTS % {"groups": GROUPS}}
        servers.append(geventman_server(
            "relay %s" % text, files, port, gateways + business,
            {"gateway": "Gateway websocket://", "business": "BusinessWorker"}))
        if gateways + business not in totals:
            totals.append(gateways + business)
    for count in sorted(totals):
        port = free_ports(1)
        servers.append(geventman_server("echo %d" % count,
                                        {"start.py": ECHO_APP % {"port": port, "count": count}},
                                        port, count, {"echo": "wsecho"}))
    if found is not None:
        gateways, business = layout(args.gw_layout)
        servers.append(Server("GatewayWorker %s" % args.gw_layout, found.argv("gw_relay.php"),
                              HERE, found.env(2, WM_GW=gateways, WM_BW=business),
                              peers.PORTS["gw_relay.php"], gateways + business + 1,
                              {"gateway": "wm-gateway", "business": "wm-business"},
                              signal.SIGINT, peer=True))
        count = gateways + business
        servers.append(Server("Workerman echo %d" % count, found.argv("ws_echo.php"), HERE,
                              found.env(count), peers.PORTS["ws_echo.php"], count,
                              {"echo": "wm-ws"}, signal.SIGINT, peer=True))
    return servers


def find_peers(args):
    if args.no_peers:
        return None, peers.skip_note("GatewayWorker 4 and Workerman 5", "--no-peers")
    found, why = peers.find()
    if found is None:
        return None, peers.skip_note("GatewayWorker 4 and Workerman 5", why)
    gw_root = os.path.join(peers.ROOT, "gatewayworker", "src", "Gateway.php")
    if not os.path.exists(gw_root):
        return None, peers.skip_note("GatewayWorker 4 and Workerman 5", "%s is missing" % gw_root)
    busy = peers.ports_free([peers.PORTS["gw_relay.php"], peers.PORTS["ws_echo.php"]]
                            + list(peers.GW_RELAY_OTHER_PORTS[:2]))
    if busy:
        return None, peers.skip_note("GatewayWorker 4 and Workerman 5", "port %d is in use" % busy)
    gateways, business = layout(args.gw_layout)
    return found, ("GatewayWorker 4 and Workerman %s (PHP, event extension) measured in this "
                   "run: WM_GW=%d WM_BW=%d %s; WM_COUNT=%d %s" % (
                       found.version(), gateways, business,
                       " ".join(found.argv("gw_relay.php")), gateways + business,
                       " ".join(found.argv("ws_echo.php"))))


# -- the load generator ------------------------------------------------------------


def build_loadgen():
    source = os.path.join(HERE, "wsloadgen.c")
    if os.path.exists(LOADGEN) and os.path.getmtime(LOADGEN) >= os.path.getmtime(source):
        return
    os.makedirs(os.path.dirname(LOADGEN), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", LOADGEN, source],
                   check=True)


def show(argv):
    return " ".join(["benchmarks/bin/wsloadgen"] + [shlex.quote(part) for part in argv[1:]])


def loadgen(server, argv, timeout, on_start=None):
    """Run wsloadgen; the server's CPU (by role) is sampled at its measure marks (and
    ``on_start`` called at the first). Returns the last JSON line, with "cpu" {role:
    seconds} and "command"."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks = {}
    for line in process.stderr:
        line = line.strip()
        if line in ("measure start", "measure end"):
            marks[line] = server.sample("cpu")
            if line == "measure start" and on_start is not None:
                on_start()
        elif line:
            print("wsloadgen: %s" % line, file=sys.stderr)
    output = process.stdout.read().strip().splitlines()
    process.wait(timeout=timeout)
    result = json.loads(output[-1]) if output else {"error": "no output"}
    if len(marks) == 2:
        result["cpu"] = {role: marks["measure end"].get(role, 0) - value
                         for role, value in marks["measure start"].items()}
    result["command"] = show(argv)
    return result


def measure_relay(args, server, clients, on_start=None):
    argv = [LOADGEN, "-p", str(server.port), "-c", str(clients), "-t", str(args.threads),
            "-d", str(args.duration), "-w", str(args.warmup), "-P", args.payload, "-M", "-L"]
    result = loadgen(server, argv, args.duration + args.warmup + 60, on_start)
    if result.get("messages") and "cpu" in result:
        result["cpu_us"] = result["cpu"]["all"] / result["messages"] * 1e6
        result["cpu_us_by_role"] = {role: seconds / result["messages"] * 1e6
                                    for role, seconds in result["cpu"].items()}
    return result


def measure_idle(args, server):
    """KB of RSS per idle client: gateway processes, business processes, all."""
    time.sleep(0.5)
    before = server.sample("rss")
    argv = [LOADGEN, "-p", str(server.port), "-c", str(args.idle), "-t", "1", "-m", "idle",
            "-d", "300", "-P", args.payload]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        opened = json.loads(process.stdout.readline())
        time.sleep(1.0)
        after = server.sample("rss")
    finally:
        process.kill()
        process.wait()
    count = max(opened["opened"], 1)
    return {"opened": opened["opened"], "failed": opened["failed"], "command": show(argv),
            "rss_before": before, "rss_after": after,
            "kb_per_client": {role: (after.get(role, 0) - before.get(role, 0)) / 1024.0 / count
                              for role in after}}


def measure_fanout(args, server):
    argv = [LOADGEN, "-p", str(server.port), "-c", str(args.fanout_clients), "-t",
            str(args.big_threads), "-m", "fanout", "-r", str(args.fanout_rounds), "-W",
            str(args.window), "-B", "100", "-d", str(args.duration), "-M"]
    result = loadgen(server, argv, args.duration + args.fanout_rounds * 11 + 120)
    if result.get("completed") and "cpu" in result:
        result["cpu_ms_per_broadcast"] = result["cpu"]["all"] / result["completed"] * 1e3
        # per client reached, in the gateways only, and how much of it is user space
        reached = result["completed"] * result["connections"]
        result["gateway_us_per_delivery"] = result["cpu"].get("gateway", 0) / reached * 1e6
        result["gateway_user_us_per_delivery"] = (result["cpu"].get("user:gateway", 0)
                                                  / reached * 1e6)
    return result


def measure_chat(args, server):
    argv = [LOADGEN, "-p", str(server.port), "-c", str(args.chat_clients), "-t",
            str(args.big_threads), "-m", "chat", "-P", "join", "-B", "32", "-s", str(GROUPS),
            "-d", str(args.duration), "-w", str(args.warmup), "-M", "-L"]
    result = loadgen(server, argv, args.duration + args.warmup + 120)
    if result.get("deliveries") and "cpu" in result:
        result["cpu_us_per_delivery"] = result["cpu"]["all"] / result["deliveries"] * 1e6
    return result


def settle(servers, timeout=30):
    """Wait (bounded) until no server burns CPU (closing the last scenario's clients)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        first = sum(server.sample("cpu")["all"] for server in servers)
        time.sleep(0.3)
        if sum(server.sample("cpu")["all"] for server in servers) - first < 0.01:
            return


# -- profiling ---------------------------------------------------------------------


def profile_relay(args, server):
    """py-spy a gateway and a business process during one extra 100-client relay run."""
    spy = shutil.which("py-spy")
    if spy is None:
        return {"error": "py-spy is not installed"}
    seconds = max(1, int(args.duration))
    spies = {}

    def start_spies():   # at the start of the measured window, after the warm-up
        for role in ("gateway", "business"):
            pid = server.pids_of(role)[0]
            raw = os.path.join(RESULTS, "py-spy-gateway-bench-%s.txt" % role)
            spies[role] = (raw, subprocess.Popen(
                [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "200",
                 "--nonblocking", "-f", "raw", "-o", raw], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
    result = measure_relay(args, server, 100, start_spies)
    found = {"rate_while_profiled": result.get("rate")}
    for role, (raw, process) in spies.items():
        process.wait(timeout=seconds + 60)
        if os.path.exists(raw):
            found[role] = summarize_profile(raw)
            found[role]["raw"] = raw
    return found


def summarize_profile(raw, top=15):
    """Shares of the samples (py-spy leaves out a thread waiting in epoll_wait, except
    Hub.run's own line: the libev loop's C work) by innermost line and by function.
    Without --native: with it, py-spy loses the greenlets' Python frames."""
    own, inclusive = collections.Counter(), collections.Counter()
    total = 0
    for line in open(raw):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        frames, count = stack.split(";"), int(count)
        total += count
        own[frames[-1]] += count
        for name in {frame.rsplit(":", 1)[0] for frame in frames}:
            inclusive[name + ")"] += count

    def share(counter):
        return [(name.replace(REPO + os.sep, ""), 100.0 * count / max(total, 1))
                for name, count in counter.most_common(top)]
    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


# -- the report --------------------------------------------------------------------


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value, spec="{:,.0f}"):
    return "—" if value is None else spec.format(value)


def median_round(rounds):
    """The round of median rate (its latency and CPU go with it)."""
    ordered = sorted((r for r in rounds if r.get("rate") is not None), key=lambda r: r["rate"])
    return ordered[len(ordered) // 2] if ordered else {}


def plain_echo_of(name, results):
    """The plain echo with as many processes as the relay ``name``."""
    if name.startswith("GatewayWorker"):
        gateways, business = layout(name.split()[1])
        return "Workerman echo %d" % (gateways + business)
    if name.startswith("relay "):
        gateways, business = layout(name.split()[1])
        return "echo %d" % (gateways + business)
    return None


def relay_table(run):
    lines = ["| server (processes) | clients | msg/s | p50 ms | p99 ms | server CPU µs/msg "
             "| of which gateway / business (user space) | relay / plain echo of the same run |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    relay = run["relay"]
    for clients in sorted({int(key.split("@")[1]) for key in relay}):
        for name in run["servers"]:
            rounds = relay.get("%s@%d" % (name, clients))
            if not rounds:
                continue
            middle = median_round(rounds)
            latency = middle.get("latency_us", {})
            echo = plain_echo_of(name, run["servers"])
            share = "—"
            if echo and relay.get("%s@%d" % (echo, clients)):
                theirs = median(r.get("rate") for r in relay["%s@%d" % (echo, clients)])
                ours = median(r.get("rate") for r in rounds)
                if ours and theirs:
                    share = "%.2fx %s" % (ours / theirs, echo)
            roles = middle.get("cpu_us_by_role", {})
            split = "—"
            if "gateway" in roles:
                split = "%.1f (%.1f) / %.1f (%.1f)" % (
                    roles["gateway"], roles.get("user:gateway", 0), roles.get("business", 0),
                    roles.get("user:business", 0))
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, "{:,}".format(clients), fmt(median(r.get("rate") for r in rounds)),
                fmt(latency.get("p50") and latency["p50"] / 1000.0, "{:.2f}"),
                fmt(latency.get("p99") and latency["p99"] / 1000.0, "{:.2f}"),
                fmt(median(r.get("cpu_us") for r in rounds), "{:.1f}"), split, share))
    return lines


def memory_table(run):
    lines = ["| server | idle clients | gateway KB/client | business KB/client "
             "| whole server KB/client |", "|---|---:|---:|---:|---:|"]
    for name, found in run["memory"].items():
        per = found["kb_per_client"]
        lines.append("| %s | %s | %s | %s | %s |" % (
            name, "{:,}".format(found["opened"]),
            fmt(per.get("gateway", per.get("echo")), "{:.2f}"),
            fmt(per.get("business"), "{:.2f}"), fmt(per.get("all"), "{:.2f}")))
    return lines


def fanout_table(run):
    lines = ["| server | clients | to the last client, p50 / max ms | to the first, p50 ms "
             "| broadcasts/s (%d in flight) | server CPU ms per broadcast | gateway CPU µs "
             "per client reached (user space) |" % run["args"]["window"],
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in run["fanout"].items():
        last, first = r.get("last_ms", {}), r.get("first_ms", {})
        lines.append("| %s | %s | %s / %s | %s | %s | %s | %s (%s) |" % (
            name, "{:,}".format(r.get("connections", 0)), fmt(last.get("p50"), "{:.1f}"),
            fmt(last.get("max"), "{:.1f}"), fmt(first.get("p50"), "{:.1f}"),
            fmt(r.get("rate"), "{:.1f}"), fmt(r.get("cpu_ms_per_broadcast"), "{:.1f}"),
            fmt(r.get("gateway_us_per_delivery"), "{:.2f}"),
            fmt(r.get("gateway_user_us_per_delivery"), "{:.2f}")))
    return lines


def chat_table(run):
    lines = ["| server | clients | senders | messages/s | deliveries/s | sender round trip "
             "p50 / p99 ms | server CPU µs per delivery |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in run["chat"].items():
        latency = r.get("latency_us", {})
        lines.append("| %s | %s | %s | %s | %s | %s / %s | %s |" % (
            name, "{:,}".format(r.get("connections", 0)), r.get("senders", "—"),
            fmt(r.get("rate")), fmt(r.get("delivery_rate")),
            fmt(latency.get("p50") and latency["p50"] / 1000.0, "{:.1f}"),
            fmt(latency.get("p99") and latency["p99"] / 1000.0, "{:.1f}"),
            fmt(r.get("cpu_us_per_delivery"), "{:.1f}")))
    return lines


def verdicts(run):
    lines = []
    for key, rounds in run["relay"].items():
        name, clients = key.split("@")
        echo = plain_echo_of(name, run["servers"])
        theirs = run["relay"].get("%s@%s" % (echo, clients))
        if not name.startswith("relay ") or not theirs:
            continue
        share = median(r.get("rate") for r in rounds) / median(r.get("rate") for r in theirs)
        lines.append("- relay %s, %s clients: %.2fx %s (target %.1fx: %s)" % (
            name.split()[1], clients, share, echo, RELAY_TARGET,
            "met" if share >= RELAY_TARGET else "MISSED"))
    for name, r in run["fanout"].items():
        worst = r.get("last_ms", {}).get("p50")
        if worst is not None:
            lines.append("- %s: a %s-client broadcast reaches the last client in %.1f ms "
                         "(median of %s; target < %d ms: %s)" % (
                             name, "{:,}".format(r["connections"]), worst, r.get("rounds"),
                             BROADCAST_TARGET_MS,
                             "met" if worst < BROADCAST_TARGET_MS else "MISSED"))
    for name, found in run["memory"].items():
        gateway = found["kb_per_client"].get("gateway")
        if gateway is not None and name.startswith("relay "):
            lines.append("- %s: %.2f KB per idle client in the gateway (target < %.0f KB: %s)"
                         % (name, gateway, IDLE_TARGET_KB,
                            "met" if gateway < IDLE_TARGET_KB else "MISSED"))
    return lines


def profile_lines(found):
    if not found:
        return []
    if "error" in found:
        return ["", "(no profile: %s)" % found["error"]]
    lines = ["", "py-spy during one extra 100-client relay run on %s (%s msg/s while "
             "sampled; shares of all samples):" % (found["server"],
                                                        fmt(found.get("rate_while_profiled")))]
    for role in ("gateway", "business"):
        summary = found.get(role)
        if not summary:
            continue
        lines += ["", "%s process (%d samples, %s), self time by line:" % (
            role, summary["samples"], summary.get("raw", "")), ""]
        lines += ["    %5.1f%%  %s" % (pct, name) for name, pct in summary["self"][:12]]
        lines += ["", "%s process, inclusive time by Python function:" % role, ""]
        lines += ["    %5.1f%%  %s" % (pct, name) for name, pct in summary["inclusive"][:15]]
    return lines


def report(run):
    a = run["args"]
    lines = ["# Gateway benchmark, %s" % run["when"], "",
             "Machine: %s. Load average before %s, after %s." % (
                 run["machine"], " ".join("%.2f" % x for x in run["load_before"]),
                 " ".join("%.2f" % x for x in run["load_after"])),
             "Servers: %s. %s" % (", ".join(run["servers"]), run["peers_note"]),
             "Command: `%s`" % run["command"], ""]
    if run["memory"]:
        lines += ["## Memory per idle client (%s idle clients, fresh servers)" %
                  "{:,}".format(a["idle"]), ""] + memory_table(run) + [""]
    if run["relay"]:
        lines += ["## Relay: client -> gateway -> business worker -> the same client", "",
                  "%d-byte text messages, one in flight per client, median of %d rounds of "
                  "%g s; latency of the median round." % (
                      len(a["payload"].encode()), a["rounds"], a["duration"]), ""]
        lines += relay_table(run) + [""]
    if run["fanout"]:
        lines += ["## Fan-out: send_to_all of 100 bytes", ""] + fanout_table(run) + [""]
    if run["chat"]:
        lines += ["## Chat: %d groups, send_to_group per message" % GROUPS, ""]
        lines += chat_table(run) + [""]
    lines += ["## Targets (issue 10)", ""] + (verdicts(run) or ["- (nothing measured)"])
    lines += profile_lines(run.get("profile"))
    lines += ["", "Load generator commands (ports differ per run):", ""]
    commands = []
    for part in ("relay", "fanout", "chat", "memory"):
        for found in run[part].values():
            for result in found if isinstance(found, list) else [found]:
                if result.get("command") and result["command"] not in commands:
                    commands.append(result["command"])
    lines += ["    %s" % command for command in commands]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        sys.exit("RLIMIT_NOFILE hard limit %d is below the %d this run needs" % (hard, needed))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # the servers inherit it


def run_all(args, found):
    scenarios = set(args.scenarios.split(","))
    servers = make_servers(args, found)
    run = {"servers": [], "memory": {}, "relay": {}, "fanout": {}, "chat": {}}
    started = []
    try:
        for server in servers:
            try:
                started.append(server.start())
            except RuntimeError as error:
                if not server.peer:
                    raise
                print("%s did not start, measured without it: %s" % (server.name, error),
                      file=sys.stderr)
                server.stop()
        run["servers"] = [server.name for server in started]
        relays = [server for server in started if server.name.startswith("relay ")]
        if "memory" in scenarios:
            for server in started:   # fresh servers: nothing freed yet to reuse
                run["memory"][server.name] = measure_idle(args, server)
                settle(started)
        if "relay" in scenarios:
            for clients in (int(value) for value in args.clients.split(",")):
                for number in range(args.rounds):
                    shift = number % len(started)   # rotate who goes first
                    for server in started[shift:] + started[:shift]:
                        result = measure_relay(args, server, clients)
                        run["relay"].setdefault("%s@%d" % (server.name, clients),
                                                []).append(result)
                        print("relay %-20s %5d clients: %s msg/s" % (
                            server.name, clients, fmt(result.get("rate"))), file=sys.stderr)
                        settle(started)
        if "fanout" in scenarios:
            for server in relays:
                run["fanout"][server.name] = measure_fanout(args, server)
                settle(started)
        if "chat" in scenarios:
            for server in relays:
                run["chat"][server.name] = measure_chat(args, server)
                settle(started)
        if args.profile and relays:
            run["profile"] = profile_relay(args, relays[0])
            run["profile"]["server"] = relays[0].name
    finally:
        for server in servers:
            server.stop()
    return run


def main(argv=None):
    args = parse_args(argv)
    build_loadgen()
    os.makedirs(RESULTS, exist_ok=True)
    raise_nofile(max(args.idle, args.fanout_clients, args.chat_clients) + 200)
    found, note = find_peers(args)
    print(note, file=sys.stderr)
    load_before = os.getloadavg()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    run = run_all(args, found)
    run.update({"when": when, "args": vars(args), "peers_note": note,
                "load_before": load_before, "load_after": os.getloadavg(),
                "command": " ".join(["python", "benchmarks/gateway_bench.py"] + sys.argv[1:]),
                "machine": "%s, %d cores, Python %s" % (platform.platform(), os.cpu_count(),
                                                        platform.python_version())})
    text = report(run)
    print(text)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS, "gateway-%s.md" % stamp), "w") as handle:
        handle.write(text)
    with open(os.path.join(RESULTS, "gateway-%s.json" % stamp), "w") as handle:
        json.dump(run, handle, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
