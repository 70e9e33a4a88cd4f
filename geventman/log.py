"""One place that writes log lines.

Lines look like Workerman's: ``2026-01-01 12:00:00 pid:123 message``. They go to
``Worker.log_file`` and, while the master runs in the foreground, to stdout too.
The worker configures this module in ``run_all``; below that everything only calls ``log``.
"""
import os
import sys
import time
import traceback

_path = None
_echo = True


def configure(path, echo):
    global _path, _echo
    _path, _echo = path, echo


def log(message):
    line = "%s pid:%d %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message)
    if _path:
        try:
            with open(_path, "a") as handle:
                handle.write(line)
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
    log("%s\n%s" % (what, traceback.format_exc().rstrip()))
