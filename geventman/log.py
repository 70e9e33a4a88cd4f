"""One place that writes log lines.

Lines look like Workerman's: ``2026-01-01 12:00:00 pid:123 message``. They go to
``Worker.log_file`` and, while the master runs in the foreground, to stdout too.
The commands configure this module (cli.main); below that everything only calls ``log``.

The log file stays open. Opening it per line failed exactly when a line mattered
most: at the open-file limit the ``accept ... failed`` line was lost to EMFILE. The
descriptor is opened in the master and inherited by every child (so a child that
switched users still writes); ``reopen`` (a reload, see cli/master/worker) and a
check at most once a second that the path still names the open file pick up a file
moved away by log rotation.

Repeated lines are rate-limited per process: a client can make every process write
a line per bad request, and that must not fill the disk. At most ``PER_SECOND``
lines of one kind are written per second; the rest are counted and summed up in one
``... N more like this`` line. Lines are of one kind when they are equal once their
numbers and quoted parts (addresses, ports, escaped client bytes) are blanked.
"""
import os
import re
import sys
import time
import traceback

PER_SECOND = 10       # lines of one kind per second and per process
KINDS = 1000          # kinds remembered at most (memory bound against varied input)
CHECK_PATH = 1.0      # seconds between checks that the path still names the open file

_clock = time.monotonic
_path = None
_echo = True
_fd = None
_checked = 0.0
_kinds = {}           # kind -> [window start, written, suppressed]
_pending = set()      # kinds with suppressed lines not yet summed up
_BLANK = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|b'(?:[^'\\]|\\.)*'|\d+")


def configure(path, echo):
    """Where lines go; the file is opened by the first line (a ``status`` that logs
    nothing creates no log file)."""
    global _path, _echo, _fd
    if _fd is not None and path != _path:
        os.closerange(_fd, _fd + 1)
        _fd = None
    _path, _echo = path, echo


def reopen():
    """Open the log file again (after rotation); keep the old one if that fails."""
    global _fd, _checked
    _checked = _clock()
    if not _path:
        return
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    if _fd is not None:
        os.closerange(_fd, _fd + 1)  # not os.close: gevent defers that one for pipes
    _fd = fd


def _check():
    global _checked
    _checked = _clock()
    if _fd is None or _moved():
        reopen()


def _moved():
    """True if the path no longer names the open file (rotated, deleted). A stat
    needs no descriptor, so this works at the open-file limit too."""
    try:
        return os.stat(_path).st_ino != os.fstat(_fd).st_ino
    except OSError:
        return True


def kind_of(message):
    return _BLANK.sub("#", message.split("\n", 1)[0])[:120]


def log(message, kind=None):
    now = _clock()
    if _pending:
        _sum_up(now)
    kind = kind or kind_of(message)
    entry = _kinds.get(kind)
    if entry is None:
        if len(_kinds) >= KINDS:
            _forget(now)
        entry = _kinds[kind] = [now, 0, 0]
    elif now - entry[0] >= 1.0:
        entry[0], entry[1] = now, 0
    if entry[1] >= PER_SECOND:
        entry[2] += 1
        _pending.add(kind)
        return
    entry[1] += 1
    _write(message)


def _sum_up(now, everything=False):
    for kind in list(_pending):
        entry = _kinds.get(kind)
        if entry is not None and (everything or now - entry[0] >= 1.0) and entry[2]:
            count, entry[2] = entry[2], 0
            _pending.discard(kind)
            _write("... %d more like this (%s)" % (count, kind))


def _forget(now):
    """Drop the kinds whose second is over (their summaries written first)."""
    _sum_up(now, everything=True)
    for kind in [k for k, entry in _kinds.items() if now - entry[0] >= 1.0]:
        del _kinds[kind]
    if len(_kinds) >= KINDS:  # a thousand kinds within one second: start afresh
        _kinds.clear()


def flush():
    """Write the pending ``... N more like this`` lines (a process about to exit)."""
    _sum_up(_clock(), everything=True)


def _write(message):
    line = "%s pid:%d %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message)
    if _path:
        if _fd is None or _clock() - _checked >= CHECK_PATH:
            _check()
        if _fd is not None:
            try:
                os.write(_fd, line.encode("utf-8", "backslashreplace"))
            except OSError:
                pass
    if _echo:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def log_exception(what):
    """Log the exception being handled, with its traceback, as one entry."""
    log("%s\n%s" % (what, traceback.format_exc().rstrip()), kind=kind_of(what))
