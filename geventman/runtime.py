"""Per-process counters and the guard around user callbacks.

The counters are what ``status`` shows for each process (Workerman's
``ConnectionInterface::$statistics``). Every user callback goes through ``call``:
an exception is logged with its traceback and counted, and never travels further,
so one bad handler cannot take the process or other connections with it.
"""
from gevent import GreenletExit, Timeout

from geventman.log import log_exception

statistics = {"connections": 0, "total_request": 0, "send_fail": 0, "throw_exception": 0}

# What escapes a user callback and is still that callback's failure. gevent's Timeout
# and GreenletExit derive from BaseException, so ``except Exception`` lets them by; a
# Timeout the handler started and let out, or a kill of the pooled greenlet that ran
# it, would otherwise end that greenlet and leave its connection unread for good.
CALLBACK_ERRORS = (Exception, Timeout, GreenletExit)


def call(callback, *args):
    """Run a user callback; return its result, or None if it raised."""
    if callback is None:
        return None
    try:
        return callback(*args)
    except CALLBACK_ERRORS:  # user code: anything may escape it
        callback_failed(callback)
        return None


def callback_failed(callback):
    """Count and log (with its traceback) the exception ``callback`` just raised."""
    statistics["throw_exception"] += 1
    log_exception("exception in %s" % getattr(callback, "__qualname__", callback))


def reset():
    for key in statistics:
        statistics[key] = 0
