"""The file monitor (development mode): reload when a ``.py`` file of the applications
changes, as ``python start.py reload`` would.

On with ``python start.py start --watch``, or ``Worker.file_monitor = True`` in a
start.py (then only in the foreground: a daemon watches only when asked with
``--watch``). It runs in the master as one greenlet that compares the modification
times and sizes of the ``.py`` files under ``applications/`` every ``INTERVAL``
seconds. Polling, not inotify: no dependency, any platform, and watchdog breaks
under gevent's patch_all (DESIGN.md section 5). A look at 300 files took 1.5 ms here
(0.1 ms for the 7 of the demos): little, in a master whose hub only waits for
signals, and a reload takes longer than the half second the polling may add.

A change found while a reload is under way waits for it to finish, then causes one
more reload, so the last version of every file is what the children run. The master
imports no business code, so this module never imports what it watches.
"""
import os

import gevent

from geventman.log import log

INTERVAL = 0.5   # seconds between two looks
SKIPPED = ("__pycache__", "node_modules")


def snapshot(root):
    """``{path: (mtime_ns, size)}`` of the ``.py`` files under ``root`` (hidden folders
    and caches left out)."""
    found = {}
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders
                      if not name.startswith(".") and name not in SKIPPED]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue   # removed between listing and looking
                found[path] = (info.st_mtime_ns, info.st_size)
    return found


def changes(before, after):
    """The paths added, removed or changed from one snapshot to the next, sorted."""
    return sorted(path for path in before.keys() | after.keys()
                  if before.get(path) != after.get(path))


class FileMonitor:
    """Looks at ``root`` every ``interval`` seconds; calls ``reload()`` after a change,
    once ``busy()`` (a reload under way) is false."""

    def __init__(self, root, reload, busy, interval=INTERVAL):
        self.root, self.reload, self.busy, self.interval = root, reload, busy, interval
        self.pid = os.getpid()
        self.pending = []
        self.known = snapshot(root)

    def look(self):
        """One look: note what changed, reload if something did and nothing is under way.
        Returns the paths that caused a reload (empty if none)."""
        current = snapshot(self.root)
        for path in changes(self.known, current):
            if path not in self.pending:
                self.pending.append(path)
        self.known = current
        if not self.pending or self.busy():
            return []
        changed, self.pending = self.pending, []
        self.reload()
        return changed

    def run(self):
        # A child forked from the master inherits this greenlet: it ends there at once.
        while os.getpid() == self.pid:
            gevent.sleep(self.interval)
            if os.getpid() != self.pid:
                return
            changed = self.look()
            if changed:
                log("file monitor: %s changed, reloading" % ", ".join(
                    os.path.relpath(path, os.path.dirname(self.root)) for path in changed))
                if any(os.path.basename(path) == "start.py" for path in changed):
                    log("file monitor: a reload does not pick up start.py files "
                        "(the master imported them): restart for those")


def start(master):
    """Watch ``applications/`` beside the master's start file; reload as SIGUSR1 does."""
    root = os.path.join(os.path.dirname(master.start_file), "applications")
    monitor = FileMonitor(root, lambda: master.events.put(("signal", "reload")),
                          lambda: bool(master.reload_queue or master.replacing))
    log("file monitor: watching %s for changes of .py files" % root)
    return gevent.spawn(monitor.run)
