"""Timer: Workerman's ``Timer::add`` / ``Timer::del`` / ``Timer::delAll`` on gevent.

Each timer is one libev timer watcher of the process's hub. When it fires, the
callback runs in a fresh greenlet, so it may block (sleep, query a database) like
any handler without stalling the loop. A repeating timer whose previous run is still
blocked skips that tick: runs of one timer never overlap, as in Workerman. Ids are small integers, unique within the
process. Children call ``delete_all`` right after fork: timers made in the master
are not inherited.
"""
import itertools

import gevent

from geventman.log import log
from geventman.runtime import call


class Timer:
    _timers = {}
    _running = set()  # ids of timers whose callback is still running
    _ids = itertools.count(1)

    @classmethod
    def add(cls, interval, callback, args=(), persistent=True):
        """Call ``callback(*args)`` every ``interval`` seconds (once if not persistent).

        Returns the timer id, or False for a non-positive interval (as Workerman does).
        """
        if interval <= 0:
            log("bad time_interval %r" % (interval,))
            return False
        timer_id = next(cls._ids)
        watcher = gevent.get_hub().loop.timer(interval, interval if persistent else 0)
        cls._timers[timer_id] = watcher
        watcher.start(cls._fire, timer_id, callback, tuple(args), persistent)
        return timer_id

    @classmethod
    def _fire(cls, timer_id, callback, args, persistent):
        if not persistent:
            cls._forget(timer_id)
        elif timer_id in cls._running:
            return  # the previous run still blocks: skip this tick rather than pile up
        cls._running.add(timer_id)
        gevent.spawn_raw(cls._run, timer_id, callback, args)

    @classmethod
    def _run(cls, timer_id, callback, args):
        try:
            call(callback, *args)
        finally:
            cls._running.discard(timer_id)

    @classmethod
    def delete(cls, timer_id):
        """Stop a timer; True if it existed."""
        return cls._forget(timer_id)

    @classmethod
    def delete_all(cls):
        for timer_id in list(cls._timers):
            cls._forget(timer_id)

    @classmethod
    def count(cls):
        return len(cls._timers)

    @classmethod
    def _forget(cls, timer_id):
        watcher = cls._timers.pop(timer_id, None)
        if watcher is None:
            return False
        watcher.stop()
        watcher.close()
        return True
