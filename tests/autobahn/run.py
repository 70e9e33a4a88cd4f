"""Run the Autobahn|Testsuite cases against a geventman echo server (tests/autobahn/echo).

    python tests/autobahn/run.py                 # every section: 1-7, 9, 10, 12, 13
    python tests/autobahn/run.py --fast          # 1-7 and 10 (what CI runs), a few seconds
    python tests/autobahn/run.py -i '12.*' -p 4  # a selection (kosoku globs)
    python tests/autobahn/run.py --markdown docs-summary.md
    python tests/autobahn/run.py --wsgi          # the same against a WSGI echo app behind
                                                 # WebServer (tests/autobahn/wsgi_echo)

The server is a throwaway project (the repository's start.py plus the echo app) on a
free loopback port, started with ``start.py start`` and stopped by pid. The cases run
with kosoku (PyPI), a runner of Autobahn's own case files. Exit status: 0 when every
case is OK, NON-STRICT or INFORMATIONAL (or UNIMPLEMENTED with --no-deflate), else 1.
"""
import argparse
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
FAST_EXCLUDES = ["9.*", "12.*", "13.*"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, process, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("echo server exited %s:\n%s" % (process.returncode,
                                                             process.stdout.read()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("echo server did not listen on %d within %ss" % (port, timeout))


class EchoServer:
    """The echo app in a temporary project; ``with EchoServer() as port: ...``."""

    def __init__(self, deflate=True, app="echo"):
        self.deflate = deflate
        self.app = app    # "echo": websocket://; "wsgi_echo": environ["wsgi.websocket"]
        self.root = tempfile.mkdtemp(prefix="geventman-autobahn-")
        self.process = None

    def __enter__(self):
        shutil.copy(os.path.join(REPO, "start.py"), self.root)
        app = os.path.join(self.root, "applications", "autobahn")
        shutil.copytree(os.path.join(HERE, self.app), app)
        self.port = free_port()
        env = dict(os.environ, GEVENTMAN_AUTOBAHN_PORT=str(self.port),
                   GEVENTMAN_AUTOBAHN_DEFLATE="1" if self.deflate else "0",
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen([sys.executable, "start.py", "start"], cwd=self.root,
                                        env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        wait_port(self.port, self.process)
        return self.port

    def log(self):
        try:
            with open(os.path.join(self.root, "geventman.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def __exit__(self, *exc):
        subprocess.run([sys.executable, "start.py", "stop"], cwd=self.root,
                       capture_output=True, timeout=30)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)


def kosoku_command():
    found = shutil.which("kosoku") or os.path.join(os.path.dirname(sys.executable), "kosoku")
    if not os.path.exists(found):
        raise RuntimeError("kosoku is not installed: pip install kosoku")
    return [found]


def run_cases(port, outdir, include=(), exclude=(), parallelism=8, timeout=1800):
    """Run kosoku; return {case id: result dict} read from its index.json."""
    command = kosoku_command() + ["-p", str(parallelism), "-o", outdir]
    for pattern in include:
        command += ["-i", pattern]
    for pattern in exclude:
        command += ["-x", pattern]
    command.append("127.0.0.1:%d" % port)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    results = {}
    for name in os.listdir(outdir):  # index.json leaves out cases that ended in ERROR
        if name.endswith(".json") and name != "index.json":
            with open(os.path.join(outdir, name)) as handle:
                case = json.load(handle)
            results[case["id"]] = case
    if not results:
        raise RuntimeError("kosoku wrote no case report:\n%s%s" % (result.stdout,
                                                                  result.stderr))
    return results


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def failures(results, accepted=ACCEPTED):
    return sorted((case_id for case_id, case in results.items()
                   if case["behavior"] not in accepted or
                   case.get("behaviorClose") not in accepted | {"UNIMPLEMENTED"}),
                  key=case_key)


def summary(results):
    """Markdown: one row per section with the counts per behavior."""
    sections = collections.defaultdict(collections.Counter)
    durations = collections.Counter()
    for case_id, case in results.items():
        section = case_id.split(".")[0]
        sections[section][case["behavior"]] += 1
        durations[section] += case.get("duration") or 0
    behaviors = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
    lines = ["| section | cases | " + " | ".join(behaviors) + " | summed case time |",
             "|---|---|" + "---|" * len(behaviors) + "---|"]
    for section in sorted(sections, key=int):
        counts = sections[section]
        lines.append("| %s | %d | %s | %.1f s |" % (
            section, sum(counts.values()), " | ".join(str(counts[b]) for b in behaviors),
            durations[section] / 1000.0))
    total = collections.Counter()
    for counts in sections.values():
        total.update(counts)
    lines.append("| all | %d | %s | %.1f s |" % (
        sum(total.values()), " | ".join(str(total[b]) for b in behaviors),
        sum(durations.values()) / 1000.0))
    others = sorted((c for c, r in results.items() if r["behavior"] != "OK"), key=case_key)
    if others:
        lines.append("")
        lines.append("Cases not OK: " + ", ".join(
            "%s %s" % (c, results[c]["behavior"]) for c in others))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-i", "--include", action="append", default=[])
    parser.add_argument("-x", "--exclude", action="append", default=[])
    parser.add_argument("-p", "--parallelism", type=int, default=8)
    parser.add_argument("--fast", action="store_true", help="sections 1-7 and 10 only")
    parser.add_argument("--no-deflate", action="store_true",
                        help="switch permessage-deflate off (12.x/13.x: UNIMPLEMENTED)")
    parser.add_argument("--wsgi", action="store_true",
                        help="serve the cases from a WSGI app (environ['wsgi.websocket'])")
    parser.add_argument("-o", "--outdir", help="keep kosoku's reports here")
    parser.add_argument("--markdown", help="write the summary table to this file")
    args = parser.parse_args(argv)
    exclude = args.exclude + (FAST_EXCLUDES if args.fast else [])
    outdir = args.outdir or tempfile.mkdtemp(prefix="geventman-autobahn-reports-")
    os.makedirs(outdir, exist_ok=True)
    started = time.monotonic()
    with EchoServer(deflate=not args.no_deflate,
                    app="wsgi_echo" if args.wsgi else "echo") as port:
        results = run_cases(port, outdir, args.include, exclude, args.parallelism)
    elapsed = time.monotonic() - started
    table = summary(results)
    print(table)
    print("\n%d cases in %.0f s (wall, -p %d); reports in %s" % (
        len(results), elapsed, args.parallelism, outdir))
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n")
    accepted = ACCEPTED | ({"UNIMPLEMENTED"} if args.no_deflate else set())
    bad = failures(results, accepted)
    for case_id in bad:
        case = results[case_id]
        print("FAILED %s: %s / %s: %s" % (case_id, case["behavior"],
                                          case.get("behaviorClose"), case.get("result")))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
