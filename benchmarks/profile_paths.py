"""Profiles of geventman's hot paths under load: where a message's user-space time goes.

For each scenario a one-process geventman server is started with the repository's
start.py, the C load generator drives it over 100 long connections, and py-spy samples
the worker process (Python frames only: across greenlet stacks ``--native`` unwinding
puts samples in the wrong functions). The raw samples go to ``benchmarks/results/profile-<scenario>.txt``; the summary printed
(and written next to them as ``.md``) gives, per function, the share of samples in
which it is on the stack (inclusive) and at its top (self)::

    python benchmarks/profile_paths.py                 # text, websocket, http
    python benchmarks/profile_paths.py --only http --duration 10
    python benchmarks/profile_paths.py --perf        # and the CPU split by binary (perf)

py-spy samples wall time of a busy process: a line that makes a system call carries
the kernel's work for it (the loopback TCP stack of send and recv); ``--perf`` says
how the CPU divides between the kernel, the interpreter and the C extensions.

``benchmarks/hot_path.py`` measures the same paths in one process without the hub,
which is steadier than a profile for comparing two versions of the code.
"""
import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

from http_bench import free_port, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
BIN = os.path.join(HERE, "bin")

APPS = {
    "text": ("text://127.0.0.1:%d", "connection.send(data)"),
    "websocket": ("websocket://127.0.0.1:%d", "connection.send(data)"),
    "http": ("http://127.0.0.1:%d", 'connection.send("Hello, World!")'),
}

START = """
from geventman import Worker

worker = Worker(%r %% %d)
worker.count = 1
worker.name = "profiled"


def on_message(connection, data):
    %s


worker.on_message = on_message
"""


def load_command(scenario, port, args):
    seconds = str(args.duration + 10)
    if scenario == "text":
        return [os.path.join(BIN, "loadgen"), "-p", str(port), "-m", "long", "-c", "100",
                "-d", seconds, "-w", "1"]
    if scenario == "websocket":
        return [os.path.join(BIN, "wsloadgen"), "-p", str(port), "-c", "100", "-d", seconds,
                "-w", "1"]
    return ["wrk", "-t1", "-c100", "-d%ss" % seconds, "http://127.0.0.1:%d/" % port]


def profile(scenario, args):
    folder = tempfile.mkdtemp(prefix="geventman-profile-")
    port = free_port()
    shutil.copy(os.path.join(REPO, "start.py"), folder)
    os.makedirs(os.path.join(folder, "applications", "profiled"))
    address, body = APPS[scenario]
    with open(os.path.join(folder, "applications", "profiled", "start.py"), "w") as handle:
        handle.write(START % (address, port, body))
    env = dict(os.environ, PYTHONPATH=REPO)
    master = subprocess.Popen([sys.executable, "start.py", "start"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    raw = os.path.join(RESULTS, "profile-%s.txt" % scenario)
    try:
        wait_port(port)
        child = psutil.Process(master.pid).children()[0]
        load = subprocess.Popen(load_command(scenario, port, args), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        time.sleep(2)
        cpu = child.cpu_times()
        subprocess.run(["py-spy", "record", "-p", str(child.pid), "-d", str(args.duration),
                        "-r", str(args.rate), "-f", "raw", "-o", raw],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = child.cpu_times()
        split = perf_split(child.pid, args) if args.perf else None
        load.wait(timeout=args.duration + 30)
        busy = (after.user - cpu.user, after.system - cpu.system)
    finally:
        master.terminate()
        master.wait(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)
    return summarize(scenario, raw, busy, args) + (split or "")


def perf_split(pid, args):
    """Where the worker's CPU goes by binary (kernel, the interpreter, gevent, ...):
    ``perf record`` of the same load, ``perf report --sort dso``."""
    data = os.path.join(tempfile.mkdtemp(prefix="geventman-perf-"), "perf.data")
    subprocess.run(["perf", "record", "-F", "999", "-p", str(pid), "-o", data, "--",
                    "sleep", str(min(args.duration, 4))],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio"],
                            capture_output=True, text=True).stdout
    shutil.rmtree(os.path.dirname(data), ignore_errors=True)
    lines = ["", "CPU by binary (perf):", "", "| binary | share |", "|---|---:|"]
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%") and float(parts[0][:-1]) >= 0.3:
            lines.append("| `%s` | %s |" % (parts[1].split(".cpython")[0], parts[0]))
    return "\n".join(lines) + "\n"


def short(frame):
    """'name (path/to/file.py:12)' -> 'name (file.py)'."""
    name, _, place = frame.partition(" (")
    place = place.rstrip(")").rsplit(":", 1)[0]
    return "%s (%s)" % (name, os.path.basename(place)) if place else name


def summarize(scenario, raw, busy, args):
    inclusive, own = collections.Counter(), collections.Counter()
    total = 0
    with open(raw) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            count = int(count)
            frames = [short(frame) for frame in stack.split(";")]
            if any("epoll_wait" in frame for frame in frames[-3:]):
                continue   # the hub waiting: not work
            total += count
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
    lines = ["### %s (%d busy samples, %d s at %d Hz; worker CPU user %.1f s, system %.1f s)"
             % (scenario, total, args.duration, args.rate, busy[0], busy[1]), "",
             "| function | on stack | self |", "|---|---:|---:|"]
    for frame, count in inclusive.most_common(args.top):
        lines.append("| `%s` | %.1f%% | %.1f%% |" % (
            frame.replace("|", "\\|"), 100.0 * count / total, 100.0 * own[frame] / total))
    lines += ["", "Most self time:", "", "| function | self |", "|---|---:|"]
    for frame, count in own.most_common(args.top):
        lines.append("| `%s` | %.1f%% |" % (frame.replace("|", "\\|"), 100.0 * count / total))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "profile-%s.md" % scenario), "w") as handle:
        handle.write(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="text,websocket,http")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--perf", action="store_true",
                        help="also split the CPU by binary with perf (kernel vs. Python)")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    if not os.path.exists(os.path.join(BIN, "wsloadgen")):
        subprocess.check_call(["sh", os.path.join(HERE, "build.sh")])
    for scenario in args.only.split(","):
        print(profile(scenario.strip(), args))


if __name__ == "__main__":
    main()
