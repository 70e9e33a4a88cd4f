"""HTTP hello-world benchmark: geventman against Workerman 5, uvicorn (httptools) and
gunicorn+gevent.

    python benchmarks/http_bench.py [--duration 10] [--rounds 3] [--processes 2] [--install]

Every server answers ``GET /`` with ``Hello, World!`` (text/plain, 13 bytes) from the
same number of processes. wrk (Debian package ``wrk``) measures two scenarios per
server, with ``--connections`` connections and ``--threads`` threads:

* keep-alive: each connection sends request after request;
* short: ``Connection: close`` on every request, so every request is a new connection.

All three servers run while one is measured (an idle server costs no CPU); the order
rotates each round and the table shows the median round. The server CPU per request
is the user + system time of every process of that server over the measured window,
divided by the requests wrk counted. Workerman 5 (shared/peers/php/http_hello.php on
127.0.0.1:18001, WM_COUNT = processes) is measured when ../shared/peers/setup.sh set it
up under /tmp/peers (benchmarks/peers.py); without it the run says why and goes on.
Peers that are not installed are skipped with a note. ``--install`` installs wrk (apt-get) and the peers
(pip: uvicorn, uvloop, httptools, gunicorn, gevent) first. The load average before and
after is printed: on a shared machine the numbers only compare servers of one run.
"""
import argparse
import importlib.util
import os
import re
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
RESULTS = os.path.join(HERE, "results")

# The manual's hello world: send() of a string (text/html, the precomputed header block).
GEVENTMAN_APP = """
from geventman import Worker

worker = Worker("http://127.0.0.1:%(port)d")
worker.count = %(processes)d
worker.name = "bench"
worker.on_message = lambda connection, request: connection.send("Hello, World!")
"""

ASGI_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})
'''

WSGI_APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
'''


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--install", action="store_true", help="apt-get wrk, pip the peers")
    parser.add_argument("--only", default="", help="comma-separated servers to run")
    return parser.parse_args(argv)


def install():
    if shutil.which("wrk") is None:
        subprocess.check_call(["apt-get", "update", "-qq"])
        subprocess.check_call(["apt-get", "install", "-y", "-qq", "wrk"],
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "uvicorn", "uvloop",
                           "httptools", "gunicorn", "gevent"])


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server on port %d did not start" % port)


class Server:
    """One server under test: a process tree started in ``folder``, stopped by pid."""

    def __init__(self, name, folder, argv, port, stop_argv=None, env=None, stop_signal=None):
        self.name, self.folder, self.argv, self.port = name, folder, argv, port
        self.stop_argv = stop_argv
        self.env = env
        self.stop_signal = stop_signal   # sent to the parent only (Workerman: SIGINT)
        self.process = None

    def start(self):
        self.process = subprocess.Popen(self.argv, cwd=self.folder, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        env=self.env)
        wait_port(self.port)
        time.sleep(1.0)   # let every worker process come up

    def processes(self):
        try:
            root = psutil.Process(self.process.pid)
            return [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cpu(self):
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self):
        if self.stop_argv:
            subprocess.run(self.stop_argv, cwd=self.folder, capture_output=True, timeout=30)
        processes = self.processes()
        for process in processes[:1] if self.stop_signal else processes:
            try:
                process.send_signal(self.stop_signal or signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        gone, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            process.kill()


def make_servers(args, folder):
    servers = []
    port = free_port()
    project = os.path.join(folder, "geventman")
    os.makedirs(os.path.join(project, "applications", "bench"))
    shutil.copy(os.path.join(REPO, "start.py"), project)
    with open(os.path.join(project, "applications", "bench", "start.py"), "w") as handle:
        handle.write(GEVENTMAN_APP % {"port": port, "processes": args.processes})
    servers.append(Server("geventman", project, [sys.executable, "start.py", "start"], port,
                          [sys.executable, "start.py", "stop"]))
    for name, source in (("asgi_app.py", ASGI_APP), ("wsgi_app.py", WSGI_APP)):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write(source)
    workerman = find_workerman()
    if workerman is not None:
        servers.append(Server("Workerman 5", HERE, workerman.argv("http_hello.php"),
                              peers.PORTS["http_hello.php"], env=workerman.env(args.processes),
                              stop_signal=signal.SIGINT))
    port = free_port()
    servers.append(Server("uvicorn (httptools)", folder, [
        sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(args.processes), "--http", "httptools",
        "--no-access-log", "--log-level", "warning"], port))
    port = free_port()
    servers.append(Server("gunicorn + gevent", folder, [
        sys.executable, "-m", "gunicorn", "-w", str(args.processes), "-k", "gevent",
        "--worker-connections", "10000", "-b", "127.0.0.1:%d" % port, "--log-level",
        "warning", "wsgi_app:app"], port))
    for name, module in (("uvicorn (httptools)", "uvicorn"), ("gunicorn + gevent", "gunicorn")):
        if importlib.util.find_spec(module) is None:
            print("%s not measured: not installed (--install)" % name, file=sys.stderr)
            servers = [s for s in servers if s.name != name]
    if args.only:
        wanted = args.only.split(",")
        servers = [s for s in servers if any(w in s.name for w in wanted)]
    return servers


def find_workerman():
    found, why = peers.find()
    busy = found and peers.ports_free([peers.PORTS["http_hello.php"]])
    if found is None or busy:
        print(peers.skip_note("Workerman 5", why or "port %d is in use" % busy),
              file=sys.stderr)
        return None
    print("Workerman %s (PHP, event extension) measured in this run: %s" % (
        found.version(), " ".join(found.argv("http_hello.php"))), file=sys.stderr)
    return found


def wrk(server, args, close):
    argv = ["wrk", "-t%d" % args.threads, "-c%d" % args.connections, "-d%ds" % args.duration,
            "--latency", "http://127.0.0.1:%d/" % server.port]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    cpu_before = server.cpu()
    output = subprocess.run(argv, capture_output=True, text=True,
                            timeout=args.duration + 60).stdout
    cpu = server.cpu() - cpu_before
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "requests": requests, "cpu_us": cpu / max(requests, 1) * 1e6,
            "p99": re.search(r"^\s+99%\s+(\S+)$", output, re.M).group(1),
            "errors": (int(errors.group(1)) if errors else 0),
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run(args):
    folder = tempfile.mkdtemp(prefix="geventman-http-bench-")
    servers = make_servers(args, folder)
    results = {(s.name, mode): [] for s in servers for mode in ("keep-alive", "short")}
    load_before = os.getloadavg()
    try:
        for server in servers:
            server.start()
        for round_number in range(args.rounds):
            shift = round_number % len(servers)
            for server in servers[shift:] + servers[:shift]:
                for mode in ("keep-alive", "short"):
                    result = wrk(server, args, close=(mode == "short"))
                    results[(server.name, mode)].append(result)
                    print("round %d %-22s %-10s %9.0f req/s %6.1f us CPU/req p99 %s%s" % (
                        round_number + 1, server.name, mode, result["rps"],
                        result["cpu_us"], result["p99"],
                        " errors %d" % result["errors"] if result["errors"] else ""),
                        flush=True)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    report(args, servers, results, load_before, os.getloadavg())


def median_round(rounds):
    ordered = sorted(rounds, key=lambda result: result["rps"])
    return ordered[len(ordered) // 2]


def report(args, servers, results, load_before, load_after):
    """The table to stdout, and to benchmarks/results/http-<time>.md."""
    lines = []

    def say(*parts):
        text = " ".join(str(part) for part in parts)
        print(text)
        lines.append(text)

    say()
    say("machine: %s, %d cores; load average before %.2f %.2f %.2f, after %.2f %.2f %.2f" % (
        os.uname().machine, os.cpu_count(), *load_before, *load_after))
    say("wrk -t%d -c%d -d%ds, %d processes per server, median of %d rounds" % (
        args.threads, args.connections, args.duration, args.processes, args.rounds))
    say()
    say("| server | keep-alive req/s | CPU µs/req | p99 | short req/s | CPU µs/req | p99 |")
    say("|---|---|---|---|---|---|---|")
    for server in servers:
        keep = median_round(results[(server.name, "keep-alive")])
        short = median_round(results[(server.name, "short")])
        say("| %s | %s | %.1f | %s | %s | %.1f | %s |" % (
            server.name, "{:,.0f}".format(keep["rps"]), keep["cpu_us"], keep["p99"],
            "{:,.0f}".format(short["rps"]), short["cpu_us"], short["p99"]))
    names = [s.name for s in servers]
    if "geventman" in names and "uvicorn (httptools)" in names:
        for mode in ("keep-alive", "short"):
            ours = statistics.median(r["rps"] for r in results[("geventman", mode)])
            peer = statistics.median(r["rps"] for r in results[("uvicorn (httptools)", mode)])
            say("geventman / uvicorn, %s: %.2fx" % (mode, ours / peer))
    if "geventman" in names and "Workerman 5" in names:
        # issue 13's targets: keep-alive >= 1.0x, short >= 0.9x of Workerman's req/s
        for mode, wanted in (("keep-alive", 1.0), ("short", 0.9)):
            ours = median_round(results[("geventman", mode)])
            theirs = median_round(results[("Workerman 5", mode)])
            share = ours["rps"] / theirs["rps"]
            say("geventman / Workerman 5, %s: %.2fx req/s (target %.1fx: %s); server CPU "
                  "per request %.1f / %.1f µs" % (
                      mode, share, wanted, "met" if share >= wanted else "MISSED",
                      ours["cpu_us"], theirs["cpu_us"]))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "http-%s.md" % time.strftime("%Y%m%d-%H%M%S")), "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.install:
        install()
    run(arguments)
