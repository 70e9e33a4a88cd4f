"""The compiled hot path (geventman.speedups): chosen as the run asks, and the same
object to a user as the pure-Python one.

tests/run.sh runs the whole suite twice: compiled (the default) and with
GEVENTMAN_PURE_PYTHON=1. The first test here makes sure each run tests what it says:
a compiled run whose build silently fell back to pure Python would test nothing new.
"""
import os
import sys
import time

import pytest

from geventman import cli, speedups
from geventman.connection import _core
from geventman.connection.tcp import ConnectionCore, TcpConnection

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
