"""The compiled hot path (geventman.speedups): chosen as the run asks, and the same
object to a user as the pure-Python one.

tests/run.sh runs the whole suite twice: compiled (the default) and with
GEVENTMAN_PURE_PYTHON=1. The first test here makes sure each run tests what it says:
a compiled run whose build silently fell back to pure Python would test nothing new.
"""
import _socket
import os
import socket
import subprocess
import sys
import time

import pytest

from geventman import cli, speedups
from geventman.connection import _core
from geventman.connection.tcp import ConnectionCore, TcpConnection
from geventman.protocols.text import Text
from geventman.states import CLOSED, ESTABLISHED

PURE_RUN = os.environ.get("GEVENTMAN_PURE_PYTHON", "") not in ("", "0")


def test_the_run_tests_the_hot_path_it_asks_for():
    if PURE_RUN:
        assert ConnectionCore is _core.ConnectionCore
        assert speedups.modules["geventman.connection._core"] == \
            "pure (GEVENTMAN_PURE_PYTHON)"
    else:
        # An extension type: its fields are C members, not entries of a __dict__.
        assert ConnectionCore.__module__ == "geventman.connection._core_c"
        assert type(ConnectionCore.__dict__["_busy"]).__name__ == "getset_descriptor"
        assert speedups.compiled()


def test_the_start_banner_says_which():
    expected = "pure (GEVENTMAN_PURE_PYTHON)" if PURE_RUN else "compiled"
    assert "hot path:%s" % expected in cli.start_table([], detached=False)


class Sink:
    def send(self, data):
        return len(data)

    def fileno(self):
        return -1

    def close(self):
        pass


def test_a_connection_takes_any_attribute_and_its_class_defaults_stay_settable(monkeypatch):
    monkeypatch.setattr(TcpConnection, "default_max_send_buffer_size", 4096)
    connection = TcpConnection(Sink(), ("127.0.0.1", 1))
    connection.user_id = 42                      # any attribute, as in Workerman
    connection.on_message = lambda c, data: None
    connection.bytes_read += 3                   # the fields read and write as before
    assert (connection.user_id, connection.max_send_buffer_size, connection.bytes_read) \
        == (42, 4096, 3)
    assert connection.send(b"x") is True and connection.bytes_written == 1


def test_without_a_build_the_pure_module_runs(monkeypatch):
    monkeypatch.setattr(speedups, "PURE", False)
    monkeypatch.setitem(speedups.COMPILED, "geventman.connection._core",
                        "geventman.connection._no_such_build")
    monkeypatch.setattr(speedups, "modules", {})
    assert speedups.load("geventman.connection._core") is _core
    assert speedups.modules == {"geventman.connection._core": "pure (not compiled)"}
    assert not speedups.compiled()


@pytest.mark.skipif(PURE_RUN, reason="needs the compiled build")
def test_a_build_older_than_its_source_is_not_used(monkeypatch, tmp_path, capsys):
    compiled = sys.modules["geventman.connection._core_c"]
    source = tmp_path / "_core.py"
    source.write_text("")
    old = time.time() - 60
    os.utime(source, (old + 30, old + 30))
    monkeypatch.setattr(compiled, "__file__", str(tmp_path / "_core_c.so"))
    (tmp_path / "_core_c.so").write_text("")
    os.utime(tmp_path / "_core_c.so", (old, old))
    monkeypatch.setattr(_core, "__file__", str(source))
    monkeypatch.setattr(speedups, "PURE", False)
    monkeypatch.setattr(speedups, "modules", {})
    assert speedups.load("geventman.connection._core") is _core
    assert "older than" in capsys.readouterr().err
    os.utime(source, (old + 1, old + 1))       # within the installer's moment: used
    assert speedups.load("geventman.connection._core") is compiled


def text_connection():
    """A text:// connection on one end of a socketpair, begun (reading); the other end."""
    server, client = socket.socketpair()
    raw = _socket.socket(fileno=server.detach())
    raw.setblocking(False)
    connection = TcpConnection(raw, ("127.0.0.1", 1), None, Text)
    connection.errors = []
    connection.on_error = lambda c, code, message: c.errors.append(message)
    connection.begin()
    return connection, client


def wake(connection):
    connection._busy = True  # as the hub sets it when it queues the wake-up
    connection._wakeup()


def test_a_read_finds_a_message_nothing_or_the_end_and_the_descriptor_goes_with_the_socket():
    # Compiled, recv(2) and send(2) run on the descriptor (_sockio.h); pure, the socket's
    # methods: the same answers either way.
    connection, client = text_connection()
    fd = connection._sock.fileno()
    assert connection._fd == fd
    connection.on_message = lambda c, line: c.send(line.upper())
    with client:
        client.sendall(b"hi\n")
        wake(connection)
        assert client.recv(100) == b"HI\n"
        wake(connection)                      # nothing to read: the connection waits
        assert connection.state is ESTABLISHED and connection.bytes_read == 3
        client.shutdown(socket.SHUT_WR)
        wake(connection)                      # the end of the stream: closed
    assert connection.state is CLOSED and connection._fd == -1
    assert connection.send("late") is False


def test_a_write_to_a_gone_peer_fails_once_and_closes():
    connection, client = text_connection()
    client.close()
    assert connection.send("x" * 100000) is False  # ECONNRESET or EPIPE, from send(2)
    assert connection.state is CLOSED and connection._fd == -1
    assert len(connection.errors) == 1 and connection.errors[0].startswith("client closed")


def test_a_module_cython_cannot_translate_leaves_the_install_pure(tmp_path):
    """setup.py: Cython's refusal is a warning; the install goes on without the build."""
    pytest.importorskip("Cython")   # a test dependency (pyproject.toml)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        (tmp_path / name).write_bytes(open(os.path.join(root, name), "rb").read())
    package = tmp_path / "geventman"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "version.py").write_text("__version__ = '0'\n")
    (package / "speedups.py").write_text('COMPILED = {"geventman.broken": "geventman.broken_c"}\n')
    # Plain Python, but Cython will not assign to its compile-time name.
    (package / "broken.py").write_text("from cython import compiled as C\nC = False\n")
    done = subprocess.run([sys.executable, "setup.py", "--name"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "geventman"
    assert "no compiled modules" in done.stderr
