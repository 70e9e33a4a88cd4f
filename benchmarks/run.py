"""Benchmark geventman's core runtime against bare gevent StreamServers and Workerman 5.

    python benchmarks/run.py [--duration 10] [--warmup 2] [--rounds 3] [--pin] ...

One command does everything: builds the load generator (benchmarks/build.sh), starts
three servers of two processes each (the text:// echo project in benchmarks/project/,
and the StreamServer echo of benchmarks/servers/ once with a shared listening socket
and once with a SO_REUSEPORT socket per process), plus Workerman 5's text:// echo
(shared/peers/php/text_echo.php on 127.0.0.1:18002, same process count) when
../shared/peers/setup.sh has set it up under /tmp/peers (benchmarks/peers.py; without
it the run says so and goes on without Workerman; ``--no-workerman`` leaves it out),
measures

* memory per idle connection: RSS of the server processes before and after
  ``--idle`` connections are opened (each does one echo, then stays idle);
* long connections: ``--connections`` connections, one "ping" line in flight each;
* short connections: connect, one line, reply, close, repeat;

with the server CPU (utime + stime of every server process over the measured window,
divided by the requests of that window), profiles a geventman child with py-spy
during one more long run (if py-spy is installed), stops every server by pid, and
prints a markdown table, also written to benchmarks/results/ with the raw numbers.
All servers run while one is measured; an idle server costs no CPU, and rotating who
goes first in each round spreads whatever else the machine does over all of them.
"""
import argparse
import collections
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import psutil

import peers

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "bin", "loadgen")
RESULTS = os.path.join(HERE, "results")

# DESIGN.md section 6: measured earlier on this machine; shown only when Workerman is
# not measured in this run.
WORKERMAN = {"long": 226804, "short": 38636, "idle_kb": 2.3}
TARGET = 0.8   # geventman long-connection echo >= 0.8x the StreamServer's, same run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--idle", type=int, default=10000, help="idle connections (memory)")
    parser.add_argument("--processes", type=int, default=2, help="processes per server")
    parser.add_argument("--threads", type=int, default=1, help="load generator threads")
    parser.add_argument("--sources", type=int, default=16,
                        help="loopback source addresses for short mode (port space)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="load rounds; the table shows the median")
    parser.add_argument("--pin", action="store_true",
                        help="pin server process k to CPU k (default: not pinned)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--no-workerman", action="store_true",
                        help="leave Workerman 5 out even when /tmp/peers has it")
    return parser.parse_args(argv)


# -- processes -----------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.05)


def port_answers(port):
    """True once an echo comes back on ``port`` (accepted and served, not only queued)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"ready?\n")
            return sock.recv(64) == b"ready?\n"
    except OSError:
        return False


class Server:
    """One server under test: a parent process and ``processes`` children."""

    def __init__(self, name, argv, cwd, env, processes, stop_signal):
        self.name = name
        self.argv, self.cwd, self.env = argv, cwd, env
        self.processes = processes
        self.stop_signal = stop_signal
        self.port = int(env["GEVENTMAN_BENCH_PORT"])
        self.popen = None
        self.known = {}   # pid -> psutil.Process of every process seen, killed at the end

    def start(self, pin):
        self.log = open(os.path.join(RESULTS, "%s.log" % self.name), "w")
        # A session of its own, as a deployed server has (see ws_bench.py: autogroup
        # scheduling).
        self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                      stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.known[self.popen.pid] = psutil.Process(self.popen.pid)
        wait_until(lambda: len(self.children()) == self.processes
                   or self.popen.poll() is not None, 15, "%s children" % self.name)
        if self.popen.poll() is not None:
            raise RuntimeError("%s exited %s, see %s" % (self.name, self.popen.returncode,
                                                        self.log.name))
        wait_until(lambda: port_answers(self.port), 15, "%s to echo" % self.name)
        if pin:
            cpus = sorted(os.sched_getaffinity(0))
            for index, pid in enumerate(self.children()):
                os.sched_setaffinity(pid, {cpus[index % len(cpus)]})

    def children(self):
        try:
            found = psutil.Process(self.popen.pid).children()
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self.known.setdefault(child.pid, child)
        return sorted(child.pid for child in found)

    def pids(self):
        return [self.popen.pid] + self.children()

    def cpu_seconds(self):
        return sum(user + system for user, system in self.cpu_per_process().values())

    def cpu_per_process(self):
        """(utime, stime) of each server process, in seconds."""
        found = {}
        for pid in self.pids():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            found[pid] = (times.user, times.system)
        return found

    def rss(self):
        sizes = {}
        for pid in self.pids():
            try:
                sizes[pid] = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return sizes

    def stop(self):
        """Ask the parent to stop, wait, then SIGKILL by pid whatever is left (psutil
        checks that a pid still names the process seen, not a reuse of the number)."""
        if self.popen is None:
            return
        self.children()
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout=15)
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


def make_servers(processes, workerman=None):
    """geventman, then the peer as DESIGN.md names it (one shared listening socket),
    then the peer with geventman's way of spreading connections (SO_REUSEPORT), then
    Workerman 5 when ``workerman`` (a peers.Peers) is given."""
    python = sys.executable
    project = os.path.join(HERE, "project")
    peer_script = os.path.join(HERE, "servers", "streamserver_echo.py")
    servers = []
    for name, argv, cwd, stop_signal in (
            ("geventman", [python, "start.py", "start"], project,
             signal.SIGINT),   # `stop`: close the connections, exit now
            ("streamserver", [python, peer_script], HERE, signal.SIGTERM),
            ("streamserver_reuseport", [python, peer_script, "--reuseport"], HERE,
             signal.SIGTERM)):
        port = str(free_port())
        if name != "geventman":
            argv = argv + [port, str(processes)]
        env = dict(os.environ, GEVENTMAN_BENCH_PORT=port, GEVENTMAN_BENCH_COUNT=str(processes))
        servers.append(Server(name, argv, cwd, env, processes, stop_signal))
    if workerman is not None:
        port = peers.PORTS["text_echo.php"]
        env = workerman.env(processes, PEER_PORT=port, GEVENTMAN_BENCH_PORT=port)
        servers.append(Server("workerman", workerman.argv("text_echo.php"), HERE, env,
                              processes, signal.SIGINT))
    return servers


def find_workerman(args):
    """(peers.Peers or None, a note for the report)."""
    if args.no_workerman:
        return None, peers.skip_note("Workerman 5", "--no-workerman")
    found, why = peers.find()
    if found is None:
        return None, peers.skip_note("Workerman 5", why)
    busy = peers.ports_free([peers.PORTS["text_echo.php"]])
    if busy:
        return None, peers.skip_note("Workerman 5", "port %d is in use" % busy)
    return found, "Workerman %s (PHP, event extension) measured in this run: %s" % (
        found.version(), " ".join(found.argv("text_echo.php")))


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    return hard


# -- the load generator ----------------------------------------------------------

def loadgen_argv(args, mode, port, connections=None, duration=None):
    argv = [LOADGEN, "-p", str(port), "-m", mode, "-t", str(args.threads),
            "-c", str(connections or args.connections),
            "-d", str(duration or args.duration)]
    if mode != "idle":
        argv += ["-w", str(args.warmup)]
    if mode != "long":
        argv += ["-S", str(args.sources)]
    return argv


def show(argv):
    """The command as typed from the repository root."""
    root = os.path.dirname(HERE)
    return " ".join(os.path.relpath(part, root) if part.startswith(root + os.sep)
                    else os.path.basename(part) if part == argv[0] else part
                    for part in argv)


def cpu_snapshot(server, client):
    """CPU seconds so far: each server process, the load generator, the whole machine."""
    machine = psutil.cpu_times()   # guest time is already inside user time on Linux
    busy = sum(getattr(machine, field, 0.0) for field in
               ("user", "nice", "system", "irq", "softirq", "steal"))
    try:
        times = client.cpu_times()
        client_seconds = times.user + times.system
    except psutil.NoSuchProcess:
        client_seconds = 0.0
    return {"server": server.cpu_per_process(), "client": client_seconds,
            "machine": busy, "at": time.monotonic()}


def window_cpu(start, end, result):
    """Fill ``result`` with what each party used between two snapshots."""
    used = {pid: [after - before for after, before in
                  zip(end["server"][pid], start["server"].get(pid, (0.0, 0.0)))]
            for pid in end["server"]}
    seconds = end["at"] - start["at"]
    user = sum(times[0] for times in used.values())
    server = user + sum(times[1] for times in used.values())
    client = end["client"] - start["client"]
    requests = result["requests"]
    result["server_cpu_per_process"] = {pid: sum(times) for pid, times in used.items()}
    result["server_cpu_s"] = server
    result["server_cpu_us_per_request"] = 1e6 * server / requests if requests else None
    result["server_user_us_per_request"] = 1e6 * user / requests if requests else None
    result["client_cpu_share"] = client / seconds
    # Everything else the machine ran meanwhile (other engineers' tests...), in cores.
    others = end["machine"] - start["machine"] - server - client
    result["others_cores"] = max(0.0, others) / seconds


def measure_load(args, server, mode, on_start=None):
    """One loadgen run; CPU is sampled at loadgen's "measure start/end" marks."""
    argv = loadgen_argv(args, mode, server.port) + ["-M"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    client = psutil.Process(process.pid)
    marks = {}
    for line in process.stderr:
        if line.strip() == "measure start":
            marks["start"] = cpu_snapshot(server, client)
            if on_start is not None:
                on_start()
        elif line.strip() == "measure end":
            marks["end"] = cpu_snapshot(server, client)
        else:
            sys.stderr.write(line)
    result = json.loads(process.stdout.read())
    process.wait()
    window_cpu(marks["start"], marks["end"], result)
    result["command"] = show(argv)
    return result


def measure_idle(args, server):
    """RSS delta over the server processes with ``--idle`` idle connections open."""
    before = server.rss()
    argv = loadgen_argv(args, "idle", server.port, args.idle, duration=300)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        result = json.loads(process.stdout.readline())
        after = server.rss()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    delta = {pid: after.get(pid, 0) - before.get(pid, 0) for pid in after}
    result["rss_before"], result["rss_after"] = before, after
    result["rss_delta_per_process"] = delta
    opened = result["opened"]
    result["kb_per_connection"] = sum(delta.values()) / 1024.0 / opened if opened else None
    result["command"] = show(argv)
    return result


def settle(servers, timeout=30):
    """Wait (bounded) until no server process burns CPU, e.g. closing idle connections."""
    def quiet():
        first = sum(server.cpu_seconds() for server in servers)
        time.sleep(0.3)
        return sum(server.cpu_seconds() for server in servers) - first < 0.01
    try:
        wait_until(quiet, timeout, "the servers to go quiet")
    except RuntimeError as error:
        print("warning: %s" % error, file=sys.stderr)


# -- profiling -----------------------------------------------------------------

def profile(args, server):
    """py-spy a geventman child during one extra long run (not counted in the table).

    --native shows the C side (the socket syscalls, libev, greenlet switches) under
    the Python frames; --idle keeps the samples taken while the child waits in
    epoll_wait, so the busy share can be told apart from waiting.
    """
    spy = shutil.which("py-spy")
    if spy is None or args.no_profile:
        return None
    child = server.children()[0]
    raw = os.path.join(RESULTS, "py-spy-%s.txt" % server.name)
    seconds = max(1, int(args.duration))
    spy_argv = [spy, "record", "-p", str(child), "-d", str(seconds), "-r", "200",
                "--native", "--idle", "-f", "raw", "-o", raw]
    holder = {}

    def start_spy():
        holder["process"] = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, text=True)
    result = measure_load(args, server, "long", on_start=start_spy)
    spy_process = holder["process"]
    _, errors = spy_process.communicate(timeout=seconds + 60)
    if spy_process.returncode != 0 or not os.path.exists(raw):
        print("py-spy failed: %s" % errors, file=sys.stderr)
        return None
    return {"raw": raw, "command": show(spy_argv), "rps_while_profiled": result["rps"],
            "summary": summarize_profile(raw)}


FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
IDLE_LEAVES = ("epoll_wait", "epoll_pwait")


def frame_name(frame, with_line=False):
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "geventman/", "benchmarks/"):
        if marker in path:
            cut = path.index(marker) + (len(marker) if marker == "site-packages/" else 0)
            path = path[cut:]
            break
    line = ":%s" % match.group("line") if with_line and match.group("line") else ""
    return "%s (%s%s)" % (match.group("function"), path, line)


def is_python(frame):
    match = FRAME.match(frame)
    return bool(match) and match.group("file").endswith(".py")


def read_stacks(raw):
    """(frames, count) per line of py-spy's raw format, the process item dropped."""
    with open(raw) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")[1:]
            if frames:
                yield frames, int(count)


def summarize_profile(raw, top=20):
    """Shares of the busy samples (not waiting in epoll_wait): self time per function
    (C and Python), inclusive time per Python function, and time per innermost Python line
    (that line plus the C it calls: where to look in geventman's code)."""
    own, inclusive, python_lines = (collections.Counter() for _ in range(3))
    busy = idle = 0
    for frames, count in read_stacks(raw):
        if frame_name(frames[-1]).split(" ")[0] in IDLE_LEAVES:
            idle += count
            continue
        busy += count
        own[frame_name(frames[-1])] += count
        python = [frame for frame in frames if is_python(frame)]
        for name in set(frame_name(frame) for frame in python):
            inclusive[name] += count
        python_lines[frame_name(python[-1], True) if python else "(no Python frame)"] += count

    def share(counter):
        return [(name, 100.0 * count / busy) for name, count in counter.most_common(top)]
    return {"samples": busy + idle, "busy": busy, "idle": idle, "self": share(own),
            "inclusive": share(inclusive), "python_lines": share(python_lines)}


# -- the report ----------------------------------------------------------------

def machine():
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import gevent
    import greenlet
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "gevent": gevent.__version__,
            "greenlet": greenlet.__version__, "load_before": os.getloadavg()}


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value, spec="{:,.0f}"):
    return "—" if value is None else spec.format(value)


def ratio(value, base):
    return "—" if not value or not base else "%.2fx" % (value / base)


STREAMSERVERS = ("streamserver", "streamserver_reuseport")
LABELS = {"geventman": "geventman", "streamserver": "StreamServer, shared socket",
          "streamserver_reuseport": "StreamServer, SO_REUSEPORT",
          "workerman": "Workerman 5 (event)"}


def names_of(run):
    """The servers of a run, geventman first, and its peers."""
    names = list(run["results"])
    return names, names[1:]


def cells(values, spec, names, peer_names):
    """geventman's and the peers' values, then geventman's ratio to each peer."""
    shown = [fmt(values[name], spec) for name in names]
    return shown + [ratio(values["geventman"], values[peer]) for peer in peer_names]


def table(run):
    """The markdown table of one run: medians over the rounds."""
    results = run["results"]
    names, peer_names = names_of(run)
    earlier = "workerman" not in results   # then show DESIGN.md's earlier figures
    dashes = ["—", "—"] if earlier else []
    rows = []
    for mode, label in (("long", "TCP text echo, long connections (req/s)"),
                        ("short", "TCP one request per connection (req/s)")):
        rps = {name: median(r["rps"] for r in results[name][mode]) for name in names}
        rows.append([label] + cells(rps, "{:,.0f}", names, peer_names) + ([
            fmt(WORKERMAN[mode]), ratio(rps["geventman"], WORKERMAN[mode])] if earlier
            else []))
        cpu = {name: median(r["server_cpu_us_per_request"] for r in results[name][mode])
               for name in names}
        rows.append(["%s: server CPU per request (µs)" % mode]
                    + cells(cpu, "{:.1f}", names, peer_names) + dashes)
        user = {name: median(r["server_user_us_per_request"] for r in results[name][mode])
                for name in names}
        rows.append(["%s: of which user space (µs)" % mode]
                    + cells(user, "{:.1f}", names, peer_names) + dashes)
        errors = {name: sum(r["errors_total"] for r in results[name][mode]) for name in names}
        rows.append(["%s: errors, all rounds" % mode]
                    + cells(errors, "{:d}", names, peer_names)[:len(names)]
                    + ["—"] * (len(peer_names) + len(dashes)))
    memory = {name: results[name]["idle"]["kb_per_connection"] for name in names}
    rows.append(["memory per idle connection (KB, %d conns)" % run["args"]["idle"]]
                + cells(memory, "{:.1f}", names, peer_names)
                + ([fmt(WORKERMAN["idle_kb"], "{}"),
                    ratio(memory["geventman"], WORKERMAN["idle_kb"])] if earlier else []))
    header = (["scenario"] + [LABELS[name] for name in names]
              + ["geventman / %s" % LABELS[peer] for peer in peer_names]
              + (["Workerman 5 (earlier run, DESIGN.md §6)", "geventman / Workerman 5"]
                 if earlier else []))
    lines = ["| %s |" % " | ".join(header), "|%s" % ("---|" * len(header))]
    return "\n".join(lines + ["| %s |" % " | ".join(row) for row in rows])


def verdict(run):
    results = run["results"]
    rps = {name: median(r["rps"] for r in results[name]["long"]) for name in results}
    shares = {peer: rps["geventman"] / rps[peer] if rps[peer] else 0
              for peer in STREAMSERVERS}
    met = all(share >= TARGET for share in shares.values())
    lines = ["Target (long-connection echo >= %.1fx the bare StreamServer's, same run): "
             "%s; %s." % (TARGET, ", ".join("%.2fx the %s" % (shares[peer], LABELS[peer])
                                            for peer in STREAMSERVERS),
                          "met" if met else "MISSED")]
    if "workerman" in results:
        lines.append(workerman_verdict(results))
    return "\n".join(lines)


def workerman_verdict(results):
    """Issue 13's targets against Workerman 5 of the same run: req/s >= 1.0x on long
    connections, >= 0.9x on short ones; server CPU per request at or below its own."""
    parts = []
    for mode, wanted in (("long", 1.0), ("short", 0.9)):
        ours, theirs = (median(r["rps"] for r in results[name][mode])
                        for name in ("geventman", "workerman"))
        share = ours / theirs if ours and theirs else 0.0
        parts.append("%s req/s %.2fx (target %.1fx: %s)" % (
            mode, share, wanted, "met" if share >= wanted else "MISSED"))
    ours, theirs = (median(r["server_cpu_us_per_request"] for r in results[name]["long"])
                    for name in ("geventman", "workerman"))
    if ours and theirs:
        parts.append("long CPU per request %.1f / %.1f µs (target: at or below: %s)" % (
            ours, theirs, "met" if ours <= theirs else "MISSED"))
    return "Against Workerman 5, same run: %s." % "; ".join(parts)


def report(run):
    m, a = run["machine"], run["args"]
    lines = [
        "# geventman core benchmark, %s" % run["when"], "",
        "Machine: %d CPUs, %s, Linux %s, Python %s, gevent %s, greenlet %s." % (
            m["nproc"], m["cpu"], m["kernel"], m["python"], m["gevent"], m["greenlet"]),
        "Load average before: %s; after: %s." % (
            " ".join("%.2f" % x for x in m["load_before"]),
            " ".join("%.2f" % x for x in run["load_after"])),
        "Servers: %d processes each, %s; load generator: %d thread(s), not pinned, on "
        "the same machine; %d round(s), median shown; %s s measured after %s s "
        "warm-up." % (a["processes"], "pinned (process k on CPU k)" if a["pin"]
                      else "not pinned", a["threads"], a["rounds"], a["duration"],
                      a["warmup"]),
        "", table(run), "", verdict(run), "", run["workerman_note"] + (
            "" if "workerman" in run["results"] else
            " The Workerman 5 column, if any, is DESIGN.md §6's earlier run."), "",
        "Commands (ports differ per run):", "",
    ]
    names, _ = names_of(run)
    for name in names:
        side = run["results"][name]
        lines += ["    %s" % side[kind]["command"] if kind == "idle" else
                  "    %s" % side[kind][0]["command"] for kind in ("long", "short", "idle")]
    lines += ["", "Every measurement (\"other processes\": CPU the rest of the machine used "
              "during the window, i.e. disturbance):", ""]
    for name in names:
        lines += measurement_lines(name, run["results"][name])
    lines += profile_lines(run.get("profile"))
    return "\n".join(lines) + "\n"


def measurement_lines(name, side):
    lines = []
    for mode in ("long", "short"):
        for number, r in enumerate(side[mode], 1):
            lines.append(
                "- %s %s, round %d: %s req/s, %s µs server CPU/request (%s user); "
                "server CPU s "
                "per process (parent first) %s; loadgen %.0f%% of a core; other "
                "processes %.2f cores" % (
                    name, mode, number, fmt(r["rps"]),
                    fmt(r["server_cpu_us_per_request"], "{:.1f}"),
                    fmt(r["server_user_us_per_request"], "{:.1f}"),
                    " ".join("%.2f" % v for v in r["server_cpu_per_process"].values()),
                    100 * r["client_cpu_share"], r["others_cores"]))
    idle = side["idle"]
    lines.append("- %s idle: %d opened, %d failed; RSS delta per process (KB): %s" % (
        name, idle["opened"], idle["failed"],
        ", ".join("%d" % (v / 1024) for v in idle["rss_delta_per_process"].values())))
    return lines


def profile_lines(found):
    if not found:
        return ["", "(no py-spy profile: py-spy missing or --no-profile)"]
    summary = found["summary"]
    total = summary["samples"] or 1
    lines = ["", "py-spy on one geventman child during an extra long run "
             "(%s req/s while sampled; %d samples, %.0f%% busy, %.0f%% in epoll_wait; "
             "shares below are of the busy samples):" % (
                 fmt(found["rps_while_profiled"]), total, 100.0 * summary["busy"] / total,
                 100.0 * summary["idle"] / total),
             "", "    %s" % found["command"]]
    for key, title in (("self", "Self time by function (C and Python)"),
                       ("python_lines", "By innermost Python line (the line and the C "
                                        "it calls)"),
                       ("inclusive", "Inclusive time by Python function")):
        lines += ["", title + ":", ""]
        lines += ["    %5.1f%%  %s" % (pct, name) for name, pct in summary[key][:15]]
    return lines


# -- main ----------------------------------------------------------------------

def build(args):
    if not args.skip_build:
        subprocess.run(["sh", os.path.join(HERE, "build.sh")], check=True)


def run_all(args, workerman=None):
    servers = make_servers(args.processes, workerman)
    results = {server.name: {"long": [], "short": []} for server in servers}
    found_profile = None
    try:
        for server in list(servers):
            try:
                server.start(args.pin)
            except RuntimeError as error:
                if server.name != "workerman":
                    raise
                print("Workerman 5 did not start, measured without it: %s" % error,
                      file=sys.stderr)
                server.stop()
                servers.remove(server)
                del results[server.name]
        for server in servers:   # fresh servers: nothing freed yet to reuse
            results[server.name]["idle"] = measure_idle(args, server)
            settle(servers)
        for number in range(args.rounds):
            for mode in ("long", "short"):
                # Rotate who goes first, so a burst of other work hits all alike.
                shift = number % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    results[server.name][mode].append(measure_load(args, server, mode))
                    settle(servers)
        found_profile = profile(args, servers[0])
    finally:
        for server in servers:
            server.stop()
    return results, found_profile


def main(argv=None):
    args = parse_args(argv)
    build(args)
    os.makedirs(RESULTS, exist_ok=True)
    hard = raise_nofile()
    if hard < args.idle + 100:
        sys.exit("RLIMIT_NOFILE hard limit %d is too low for --idle %d" % (hard, args.idle))
    run = {"when": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
           "machine": machine(), "args": vars(args)}
    workerman, run["workerman_note"] = find_workerman(args)
    print(run["workerman_note"], file=sys.stderr)
    run["results"], run["profile"] = run_all(args, workerman)
    run["load_after"] = os.getloadavg()
    text = report(run)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS, "%s.md" % stamp), "w") as handle:
        handle.write(text)
    with open(os.path.join(RESULTS, "%s.json" % stamp), "w") as handle:
        json.dump(run, handle, indent=1, default=str)
    print(text)


if __name__ == "__main__":
    main()
