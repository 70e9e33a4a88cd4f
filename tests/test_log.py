"""geventman.log without processes: the file stays open, follows rotation, and
repeated lines are rate-limited per kind."""
import os

import pytest

from geventman import log


@pytest.fixture
def logfile(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(log, "_clock", lambda: now[0])
    monkeypatch.setattr(log, "_kinds", {})
    monkeypatch.setattr(log, "_pending", set())
    monkeypatch.setattr(log, "_fd", None)
    path = str(tmp_path / "geventman.log")
    log.configure(path, echo=False)
    yield path, now
    log.configure(None, echo=True)


def lines(path):
    with open(path) as handle:
        return handle.read().splitlines()


def test_repeated_lines_are_summed_up(logfile):
    path, now = logfile
    for number in range(25):
        log.log("bad package from 127.0.0.1:%d (package length %d), closing"
                % (40000 + number, number))
    log.log("something else")
    assert len(lines(path)) == log.PER_SECOND + 1
    now[0] += 1.5
    log.log("bad package from 10.0.0.1:1 (package length 3), closing")
    written = lines(path)
    assert written[-2].endswith("... 15 more like this (bad package from #.#.#.#:# "
                                "(package length #), closing)")
    assert "10.0.0.1" in written[-1]


def test_quoted_client_bytes_do_not_make_new_kinds(logfile):
    path, now = logfile
    for number in range(50):
        log.log("refused handshake: method %r" % ("X\n%d" % number))
    log.flush()
    written = lines(path)
    assert len(written) == log.PER_SECOND + 1
    assert written[-1].split("pid:")[1].split(" ", 1)[1].startswith("... 40 more like this")


def test_kinds_are_bounded(logfile, monkeypatch):
    path, now = logfile
    monkeypatch.setattr(log, "KINDS", 5)
    for word in "abcdefghijkl":
        log.log("kind %s" % word)
    assert len(log._kinds) <= 5
    assert len(lines(path)) == 12


def test_the_file_stays_open_and_follows_rotation(logfile):
    path, now = logfile
    log.log("first")
    fd = log._fd
    log.log("second")
    assert log._fd == fd                       # not opened per line
    os.rename(path, path + ".1")               # logrotate moves it away
    log.log("third")                           # within CHECK_PATH: still the old file
    now[0] += log.CHECK_PATH
    log.log("fourth")
    assert [line.split()[-1] for line in lines(path + ".1")] == ["first", "second", "third"]
    assert [line.split()[-1] for line in lines(path)] == ["fourth"]


def test_reopen_after_rotation(logfile):
    path, now = logfile
    log.log("before")
    os.rename(path, path + ".1")
    log.reopen()                               # what a reload does
    log.log("after")
    assert [line.split()[-1] for line in lines(path)] == ["after"]
