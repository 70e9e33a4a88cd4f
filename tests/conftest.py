"""Shared helpers: throwaway projects started with the repository's own start.py.

Every end-to-end test builds a project in a temporary folder (a copy of start.py
plus the applications the test writes), starts it with ``python start.py start``
on loopback, and stops it by pid: the master and every process it forked are
remembered and killed by pid at teardown if still alive, so no test leaves
processes behind. Waits poll a condition with a deadline; nothing sleeps blindly.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate, timeout=10.0, interval=0.02, message="condition"):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, message))
        time.sleep(interval)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def app_source(source, port):
    """An app template with ``PORT`` in it, for a given port."""
    return source.replace("PORT", str(port))


def recv_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed by server after %r" % data)
        data += chunk
    return data


class SocketClient:
    """What every blocking test client shares: ``sock``, closing, peer-close checks."""

    sock = None

    def closed_by_peer(self, timeout=5.0):
        """True once the server has closed the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WebSocketClient:
    """What the websocket-client based test clients share: ``ws``, closing, ``with``."""

    ws = None

    def close(self):
        self.ws.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LineClient(SocketClient):
    """A blocking text:// client with a timeout on every read."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def sendline(self, line):
        self.send(line + "\n")

    def recvline(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server; buffered %r" % self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, line):
        self.sendline(line)
        return self.recvline()


class Project:
    """A temporary geventman project: start.py from the repository plus test apps."""

    def __init__(self, root):
        self.root = str(root)
        shutil.copy(os.path.join(REPO, "start.py"), self.root)
        os.makedirs(os.path.join(self.root, "applications"), exist_ok=True)
        self.pids = set()
        self.foreground = []

    _output_file = None
    #: What the server command runs under, e.g. ``["ip", "netns", "exec", "host1"]``
    #: (exec's into python, so the pid is still the master's).
    launcher = ()

    def _output(self):
        """The foreground server's terminal: a file, so a chatty server never blocks
        on a pipe nobody reads."""
        if self._output_file is None:
            self._output_file = open(self.path("foreground.out"), "ab")
        return self._output_file

    def foreground_output(self):
        with open(self.path("foreground.out"), errors="replace") as handle:
            return handle.read()

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def write(self, relative, text):
        path = self.path(relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(text).lstrip("\n"))
        return path

    def app(self, name, source, **files):
        """Write applications/<name>/start.py and any other files (``events_py=...``
        becomes events.py, ``protocols__jsonnl_py`` becomes protocols/jsonnl.py)."""
        self.write("applications/%s/start.py" % name, source)
        for key, text in files.items():
            relative = key.replace("__", "/")
            relative = relative[:-3] + ".py" if relative.endswith("_py") else relative
            self.write("applications/%s/%s" % (name, relative), text)

    @property
    def pid_file(self):
        return self.path("geventman.pid")

    def command(self, *args, timeout=30, check=False):
        result = subprocess.run([sys.executable, "start.py"] + list(args), cwd=self.root,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError("start.py %s failed (%d):\n%s\n%s" % (
                " ".join(args), result.returncode, result.stdout, result.stderr))
        self._remember()
        return result

    def start(self, *args, ports=(), timeout=15, preexec_fn=None):
        """``start`` in the foreground (a child process of the test); waits for the
        pid file and for every port in ``ports`` to accept. ``preexec_fn`` runs in
        the server process before it starts (to lower its limits, say)."""
        process = subprocess.Popen(list(self.launcher) + [sys.executable, "start.py", "start"]
                                   + list(args),
                                   cwd=self.root, stdout=self._output(),
                                   stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=preexec_fn)
        self.foreground.append(process)
        self.pids.add(process.pid)
        wait_until(lambda: self.master_pid() == process.pid or process.poll() is not None,
                   timeout, message="master pid file")
        if process.poll() is not None:
            raise AssertionError("start exited %s:\n%s" % (process.returncode,
                                                           self.foreground_output()))
        for port in ports:
            wait_until(lambda: port_open(port), timeout, message="port %d" % port)
        self._remember()
        return process

    def start_daemon(self, *args, ports=(), timeout=15):
        result = self.command("start", "-d", *args, timeout=timeout)
        if result.returncode == 0:
            wait_until(self.master_pid, timeout, message="daemon pid file")
            for port in ports:
                wait_until(lambda: port_open(port), timeout, message="port %d" % port)
        self._remember()
        return result

    def master_pid(self):
        try:
            with open(self.pid_file) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def children(self):
        pid = self.master_pid()
        if pid is None:
            return []
        try:
            found = [child.pid for child in psutil.Process(pid).children()]
        except psutil.NoSuchProcess:
            return []
        self.pids.update(found)
        return sorted(found)

    def wait_children(self, count, timeout=10, exclude=()):
        return wait_until(lambda: (lambda pids: pids if len(pids) == count and not
                                   set(pids) & set(exclude) else None)(self.children()),
                          timeout, message="%d children" % count)

    def _remember(self):
        pid = self.master_pid()
        if pid:
            self.pids.add(pid)
            self.children()

    def log(self):
        try:
            with open(self.path("geventman.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def status_json(self):
        import json
        result = self.command("status", "--json", check=True)
        return json.loads(result.stdout)

    def wait_linked(self, timeout=15):
        """Wait until every business worker process of this project has a ready link to
        every gateway process of it, and each gateway has them all: until then a
        broadcast from a business worker misses the gateways it is not linked to."""
        def linked():
            rows = self.status_json()["processes"]
            gateways = [row for row in rows if "business_workers" in row]
            business = [row for row in rows if "gateways" in row]
            return bool(gateways and business) and \
                all(row["business_workers"] == len(business) for row in gateways) and \
                all(row["gateways"] == len(gateways) for row in business)
        wait_until(linked, timeout=timeout, message="business workers linked to gateways")

    def stop(self, *args):
        result = self.command("stop", *args) if self.master_pid() else None
        for process in self.foreground:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return result

    def cleanup(self):
        self._remember()
        if self.master_pid():
            try:
                self.command("stop", timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for process in self.foreground:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._output_file is not None:
            self._output_file.close()


@pytest.fixture
def project(tmp_path):
    created = Project(tmp_path)
    yield created
    created.cleanup()
