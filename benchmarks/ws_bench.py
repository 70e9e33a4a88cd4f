"""WebSocket echo benchmark: geventman against Workerman 5, aiohttp and websockets, in one run.

    python benchmarks/ws_bench.py [--duration 10] [--rounds 3] [--processes 2] ...
    python benchmarks/ws_bench.py --framing-only     # the in-process framing costs only

One command does everything:

* framing: CPU per echo of a 16-byte text message through the protocol layer alone,
  in this process, no sockets: geventman's websocket:// (input/decode/encode),
  websockets' sans-IO ServerProtocol (plus the UTF-8 decode it leaves to the caller),
  and wsproto. This is what chose the machinery (docs/websocket.md).
* long connections: benchmarks/wsloadgen.c (built here with gcc) keeps
  ``--connections`` WebSocket connections with one message in flight each, against
  each server in turn; messages per second and the servers' CPU per message (utime +
  stime of every server process over the measured window).
* memory: RSS of the server processes before and after ``--idle`` connections are
  opened (each does the handshake and one echo, then stays idle).

``--servers geventman-wsgi,pywsgi-gws`` adds (or selects) the same WSGI app on
``environ["wsgi.websocket"]`` in geventman's WebServer and under gevent.pywsgi with
gevent-websocket's WebSocketHandler.

Every server runs ``--processes`` processes: geventman a websocket:// echo worker with
``count = processes`` in a throwaway project, aiohttp and websockets one process each
on a SO_REUSEPORT socket (this file with ``--serve NAME``), Workerman 5 its websocket
echo (shared/peers/php/ws_echo.php on 127.0.0.1:18003, WM_COUNT = processes) when
../shared/peers/setup.sh set it up under /tmp/peers (benchmarks/peers.py); without
it the run says why and goes on. The load average is
recorded before and after; the table goes to stdout and to benchmarks/results/.
"""
import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
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
SERVERS = ("geventman", "workerman", "aiohttp", "websockets")
#: Also available with --servers: the same WSGI echo app (environ["wsgi.websocket"])
#: in geventman's WebServer and under gevent.pywsgi + gevent-websocket's handler.
WSGI_SERVERS = ("geventman-wsgi", "pywsgi-gws")

# DESIGN.md section 6, measured earlier on this machine; shown when Workerman is not
# measured in this run.
WORKERMAN = {"rate": 228942, "idle_kb": 5.5}
AIOHTTP_DESIGN = 116272

ECHO_APP = """
from geventman import Worker

worker = Worker("websocket://127.0.0.1:%d")
worker.name = "wsecho"
worker.count = %d
worker.on_message = lambda connection, data: connection.send(data)
"""


# gevent-websocket's interface: the same app for geventman-wsgi and pywsgi-gws.
WSGI_ECHO = """
def application(environ, start_response):
    ws = environ["wsgi.websocket"]
    while True:
        message = ws.receive()
        if message is None:
            return []
        ws.send(message)
"""

WSGI_START = """
from geventman import WebServer

web = WebServer("http://127.0.0.1:%d")
web.name = "wsgiecho"
web.count = %d
web.add_root("127.0.0.1", "www")
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--idle", type=int, default=10000, help="idle connections (memory)")
    parser.add_argument("--processes", type=int, default=2, help="processes per server")
    parser.add_argument("--threads", type=int, default=1, help="load generator threads")
    parser.add_argument("--rounds", type=int, default=3, help="the table shows the median")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--payload", default="hello websocket!", help="text, <= 125 bytes")
    parser.add_argument("--framing-only", action="store_true")
    parser.add_argument("--serve", choices=("aiohttp", "websockets", "pywsgi-gws"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- peers (run as ``ws_bench.py --serve NAME --port P --processes N``) --------------


def serve(name, port, processes):
    """Fork ``processes`` children serving on one SO_REUSEPORT port; wait; SIGTERM ends all."""
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                PEERS[name](port)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        os.waitpid(pid, 0)


def reuse_port_socket(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve_aiohttp(port):
    from aiohttp import WSMsgType, web

    async def echo(request):
        ws = web.WebSocketResponse(compress=False, max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    web.run_app(app, sock=reuse_port_socket(port), print=None, access_log=None,
                handle_signals=True)


def serve_websockets(port):
    import websockets

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with websockets.serve(echo, sock=reuse_port_socket(port), compression=None,
                                    max_size=None):
            await asyncio.Future()

    asyncio.run(main())


def serve_pywsgi(port):
    """gevent.pywsgi with gevent-websocket's WebSocketHandler: how gevent users served
    WSGI WebSockets before."""
    from gevent import monkey
    monkey.patch_all()
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler
    scope = {}
    exec(WSGI_ECHO, scope)
    server = WSGIServer(reuse_port_socket(port), scope["application"],
                        handler_class=WebSocketHandler, log=None, error_log=None)
    server.serve_forever()


PEERS = {"aiohttp": serve_aiohttp, "websockets": serve_websockets,
         "pywsgi-gws": serve_pywsgi}


# -- framing costs, in process ---------------------------------------------------------


def framing_costs(messages=200000):
    """Microseconds of CPU per echo through each protocol layer (best of 3)."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from websocket_support import frame, handshake
    data = frame(0x81, "hello websocket!")

    def geventman_layer():
        from geventman.protocols._wsframe import Phase, session_of
        from geventman.protocols.websocket import Websocket

        class Connection:  # what the protocol reads of a connection
            max_package_size = 10 << 20
            worker = None

        connection = Connection()
        session_of(connection).phase = Phase.OPEN
        feed, decode, encode = Websocket.input, Websocket.decode, Websocket.encode
        started = time.process_time()
        for _ in range(messages):
            feed(data, connection)
            encode(decode(data, connection), connection)
        return time.process_time() - started

    def websockets_layer():
        from websockets.server import ServerProtocol
        protocol = ServerProtocol(max_size=None)
        protocol.receive_data(handshake())
        protocol.send_response(protocol.accept(protocol.events_received()[0]))
        protocol.data_to_send()
        started = time.process_time()
        for _ in range(messages):
            protocol.receive_data(data)
            for received in protocol.events_received():
                protocol.send_text(received.data.decode("utf-8").encode())
            protocol.data_to_send()
        return time.process_time() - started

    def wsproto_layer():
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, TextMessage
        connection = WSConnection(ConnectionType.SERVER)
        connection.receive_data(handshake())
        for _ in connection.events():
            connection.send(AcceptConnection())
        started = time.process_time()
        for _ in range(messages):
            connection.receive_data(data)
            for received in connection.events():
                connection.send(TextMessage(data=received.data))
        return time.process_time() - started

    costs = {}
    for name, layer in (("geventman", geventman_layer), ("websockets", websockets_layer),
                        ("wsproto", wsproto_layer)):
        try:
            costs[name] = min(layer() for _ in range(3)) / messages * 1e6
        except ImportError as error:
            print("framing: %s skipped (%s)" % (name, error), file=sys.stderr)
    return costs


# -- servers under load ------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, process, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited with %s" % process.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


class Server:
    """One server under test: started, its process tree measured, stopped by pid."""

    def __init__(self, name, processes, workerman=None):
        self.name, self.processes = name, processes
        self.workerman = workerman
        self.port = peers.PORTS["ws_echo.php"] if name == "workerman" else free_port()
        self.root = None
        self.process = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=REPO)
        if self.name == "workerman":
            command = self.workerman.argv("ws_echo.php")
            env = self.workerman.env(self.processes, PEER_PORT=self.port)
        elif self.name.startswith("geventman"):
            self.root = tempfile.mkdtemp(prefix="geventman-wsbench-")
            shutil.copy(os.path.join(REPO, "start.py"), self.root)
            app = os.path.join(self.root, "applications", "wsecho")
            os.makedirs(os.path.join(app, "www"))
            with open(os.path.join(app, "start.py"), "w") as f:
                f.write((WSGI_START if self.name == "geventman-wsgi" else ECHO_APP) %
                        (self.port, self.processes))
            with open(os.path.join(app, "www", "index.py"), "w") as f:
                f.write(WSGI_ECHO)
            command = [sys.executable, "start.py", "start"]
        else:
            command = [sys.executable, os.path.abspath(__file__), "--serve", self.name,
                       "--port", str(self.port), "--processes", str(self.processes)]
        # A session of its own, as a deployed server has: on Linux with autogroup
        # scheduling, a server in the load generator's session competes with it thread
        # by thread, which moved every server's result by up to 15% between runs.
        self.process = subprocess.Popen(command, cwd=self.root or HERE, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_port(self.port, self.process)
        deadline = time.monotonic() + 20
        while len(self.workers()) < self.processes and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def tree(self):
        try:
            root = psutil.Process(self.process.pid)
            return [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def workers(self):
        return self.tree()[1:]

    def cpu_seconds(self):
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self):
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self):
        if self.process is None:
            return
        if self.name.startswith("geventman"):
            subprocess.run([sys.executable, "start.py", "stop"], cwd=self.root,
                           capture_output=True, timeout=30)
        pids = [process.pid for process in self.tree()]
        if self.process.poll() is None:   # Workerman stops on SIGINT
            self.process.send_signal(signal.SIGINT if self.name == "workerman"
                                     else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
        self.process = None


def build_loadgen():
    source = os.path.join(HERE, "wsloadgen.c")
    if os.path.exists(LOADGEN) and os.path.getmtime(LOADGEN) >= os.path.getmtime(source):
        return
    os.makedirs(os.path.dirname(LOADGEN), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", LOADGEN, source],
                   check=True)


def measure_long(server, args):
    """One long-connection run: messages/s and server CPU per message."""
    command = [LOADGEN, "-p", str(server.port), "-c", str(args.connections),
               "-t", str(args.threads), "-d", str(args.duration), "-w", str(args.warmup),
               "-P", args.payload, "-M"]
    loadgen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    cpu_start = cpu_end = None
    for line in loadgen.stderr:
        if line.startswith("measure start"):
            cpu_start = server.cpu_seconds()
        elif line.startswith("measure end"):
            cpu_end = server.cpu_seconds()
    result = json.loads(loadgen.stdout.read())
    loadgen.wait(timeout=30)
    if cpu_start is not None and cpu_end is not None and result["messages"]:
        result["cpu_us"] = (cpu_end - cpu_start) / result["messages"] * 1e6
    return result


def measure_idle(server, count):
    """KB of server RSS per idle WebSocket connection."""
    time.sleep(0.5)
    before = server.rss()
    loadgen = subprocess.Popen([LOADGEN, "-p", str(server.port), "-c", str(count), "-m",
                                "idle", "-d", "120"], stdout=subprocess.PIPE, text=True)
    try:
        opened = json.loads(loadgen.stdout.readline())
        time.sleep(1.0)
        after = server.rss()
    finally:
        loadgen.kill()
        loadgen.wait()
    return {"opened": opened["opened"], "failed": opened["failed"],
            "kb_per_connection": (after - before) / 1024.0 / max(opened["opened"], 1),
            "rss_before_mb": before / 1048576.0, "rss_after_mb": after / 1048576.0}


def median(values):
    return statistics.median(values) if values else None


def run(args):
    build_loadgen()
    names = [name.strip() for name in args.servers.split(",") if name.strip()]
    workerman, note = None, ""
    if "workerman" in names:
        workerman, why = peers.find()
        busy = workerman and peers.ports_free([peers.PORTS["ws_echo.php"]])
        if workerman is None or busy:
            names.remove("workerman")
            note = peers.skip_note("Workerman 5", why or "port %d is in use" % busy)
            workerman = None
        else:
            note = "Workerman %s (PHP, event extension) measured in this run: %s" % (
                workerman.version(), " ".join(workerman.argv("ws_echo.php")))
        print(note, file=sys.stderr)
    for name in ("aiohttp", "websockets"):
        if name in names and importlib.util.find_spec(name) is None:
            names.remove(name)
            note += " %s not measured: not installed (pip install %s)." % (name, name)
    report = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": "%s, %d cores, Python %s" % (platform.platform(), os.cpu_count(),
                                                      platform.python_version()),
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "load_before": os.getloadavg(), "framing": framing_costs(),
              "long": {name: [] for name in names}, "idle": {}, "workerman_note": note}
    servers = {name: Server(name, args.processes, workerman) for name in names}
    try:
        for server in servers.values():
            server.start()
        for _ in range(args.rounds):          # alternate the servers within each round
            for name, server in servers.items():
                report["long"][name].append(measure_long(server, args))
        for name, server in servers.items():
            if args.idle:  # --idle 0: throughput only
                report["idle"][name] = measure_idle(server, args.idle)
    finally:
        for server in servers.values():
            server.stop()
    report["load_after"] = os.getloadavg()
    return report


def table(report, args):
    lines = ["WebSocket echo, %d connections, %d-byte text messages, %d processes per "
             "server, median of %d rounds of %gs" % (
                 args.connections, len(args.payload.encode()), args.processes, args.rounds,
                 args.duration),
             "", "| server | msg/s | vs aiohttp | geventman / it | server CPU per message "
             "| KB per idle connection |", "|---|---|---|---|---|---|"]
    rates = {name: median([r["rate"] for r in runs]) for name, runs in report["long"].items()}
    cpus = {name: median([r["cpu_us"] for r in runs if "cpu_us" in r])
            for name, runs in report["long"].items()}
    aiohttp = rates.get("aiohttp")
    ours = rates.get("geventman")
    for name, runs in report["long"].items():
        cpu = cpus[name]
        idle = report["idle"].get(name, {})
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            name, "{:,.0f}".format(rates[name]),
            "%.2fx" % (rates[name] / aiohttp) if aiohttp else "-",
            "%.2fx" % (ours / rates[name]) if ours and name != "geventman" else "-",
            "%.1f µs" % cpu if cpu else "-",
            "%.1f (%d opened)" % (idle["kb_per_connection"], idle["opened"]) if idle else "-"))
    if "workerman" not in rates:
        lines.append("| Workerman 5 (DESIGN.md, earlier) | {:,} | - | - | - | {} |".format(
            WORKERMAN["rate"], WORKERMAN["idle_kb"]))
    if ours and rates.get("workerman") and cpus.get("geventman") and cpus.get("workerman"):
        lines += ["", "geventman / Workerman 5, same run: %.2fx msg/s (target 1.0x: %s); "
                  "server CPU per message %.1f / %.1f µs (target: at or below: %s)." % (
                      ours / rates["workerman"],
                      "met" if ours >= rates["workerman"] else "MISSED",
                      cpus["geventman"], cpus["workerman"],
                      "met" if cpus["geventman"] <= cpus["workerman"] else "MISSED")]
    if report.get("workerman_note"):
        lines += ["", report["workerman_note"]]
    lines += ["", "Framing layer alone, CPU per echo (in process, no sockets): " + ", ".join(
        "%s %.2f µs" % item for item in report["framing"].items()),
        "", "Rounds (msg/s): " + "; ".join(
            "%s %s" % (name, ", ".join("{:,.0f}".format(r["rate"]) for r in runs))
            for name, runs in report["long"].items()),
        "Load average before %.2f %.2f %.2f, after %.2f %.2f %.2f." % (
            tuple(report["load_before"]) + tuple(report["load_after"])),
        "Machine: %s. Command: `%s`." % (report["machine"], report["command"])]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port, args.processes)
    if args.framing_only:
        for name, cost in framing_costs().items():
            print("%-10s %.2f µs per echo" % (name, cost))
        return 0
    report = run(args)
    text = table(report, args)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS, "ws-%s.json" % stamp), "w") as handle:
        json.dump(report, handle, indent=1)
    with open(os.path.join(RESULTS, "ws-%s.md" % stamp), "w") as handle:
        handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
