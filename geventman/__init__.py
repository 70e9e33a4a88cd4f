"""geventman: Workerman 3.x for Python, on gevent.

Names are imported lazily so that ``start.py`` can parse its command line and
detach before gevent is loaded (see geventman.boot).
"""
from geventman.version import __version__

__all__ = ["Worker", "Timer", "WebServer", "__version__"]


def __getattr__(name):
    if name == "Worker":
        from geventman.worker import Worker
        return Worker
    if name == "Timer":
        from geventman.timer import Timer
        return Timer
    if name == "WebServer":
        from geventman.webserver import WebServer
        return WebServer
    raise AttributeError("module 'geventman' has no attribute %r" % name)
