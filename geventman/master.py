"""The master: forks the children, watches them, and acts on signals.

Signal handlers only queue the signal's name; ``run`` takes events off one queue
and dispatches by name (``handle_stop``, ``handle_reload``...), like gunicorn's
arbiter. The master knows processes, signals, the pid file and the status files;
workers are opaque to it beyond ``bind_listeners``, ``close_listeners``,
``run_child`` and a few plain attributes (name, count, reloadable, listen_address).
"""
import os
import platform
import resource
import signal
import time

import gevent
import gevent.os
import gevent.queue

from geventman import (
    log as logging, monitor, pidfile, proctitle, reserve, signals, speedups, status)
from geventman.limits import raise_open_file_limit
from geventman.log import log, log_exception
from geventman.timer import Timer
from geventman.version import __version__


def reload_order(children, reloadable):
    """Pids to replace one at a time, in slot order; ``reloadable(worker)`` filters."""
    chosen = [(worker_index, slot, pid) for pid, (worker_index, slot, worker)
              in children.items() if reloadable(worker)]
    return [pid for _, _, pid in sorted(chosen)]


def count_exit(exits, name, code):
    """Record one exit: ``exits[name][code] += 1``; codes are raw wait statuses."""
    per_worker = exits.setdefault(name, {})
    per_worker[str(code)] = per_worker.get(str(code), 0) + 1


class Master:
    watch = False   # reload on edits of applications/*.py (geventman/monitor.py)

    def __init__(self, workers, config, start_file, foreground=True):
        self.workers = list(workers)
        self.foreground = foreground
        self.config = config
        self.start_file = start_file
        self.status_dir = config.pid_file + ".status"
        self.children = {}              # pid -> (worker index, slot, worker)
        self.born = {}                  # pid -> time.time() of its fork (status: timestamp)
        self.exits = {worker.name: {} for worker in self.workers}
        self.events = gevent.queue.Queue()
        self.stopping = None            # None, "stop" or "graceful_stop"
        self.reload_queue = []
        self.reload_signal = None
        self.replacing = None
        self.start_time = time.time()
        self._signal_handles = []
        self._killers = {}
        self._lifeline = None           # (read fd, write fd): see _open_lifeline

    # -- start ---------------------------------------------------------------

    def bind(self):
        """Bind every listening socket; raises OSError (port in use...) before any fork."""
        try:
            for worker in self.workers:
                worker.bind_listeners()
        except BaseException:
            for worker in self.workers:
                worker.close_listeners()
            raise

    def run(self):
        """Fork the children and serve signals until stopped; returns the exit code."""
        proctitle.set_title("geventman: master process  start_file=%s" % self.start_file)
        pidfile.write(self.config.pid_file, os.getpid())
        os.makedirs(self.status_dir, exist_ok=True)
        for number, action, _, _ in signals.SIGNALS:
            self._signal_handles.append(
                gevent.signal_handler(number, self.events.put, ("signal", action)))
        self._handle_hangup()
        log("geventman[%s] start" % self.start_file)
        raise_open_file_limit()
        reserve.hold()
        self._share_files()
        self._open_lifeline()
        for index, worker in enumerate(self.workers):
            for slot in range(worker.count):
                self.spawn(index, worker, slot)
        if self.watch:
            monitor.start(self)
        try:
            self._loop()
        finally:
            self._finish()
        return 0

    def _handle_hangup(self):
        """Closing the terminal of a foreground start ends every process (as
        Workerman's debug mode): SIGHUP is a stop. A daemon has no terminal, so a
        stray SIGHUP is ignored rather than killing the master without its cleanup.
        Children always ignore it (_become_child): the hangup reaches every process
        of the terminal's session, and the master stops them in order instead."""
        if self.foreground:
            self._signal_handles.append(
                gevent.signal_handler(signal.SIGHUP, self.events.put, ("signal", "stop")))
        else:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _open_lifeline(self):
        """A pipe whose write end only the master holds (each child closes its copy
        at once) and on which nobody writes: when the master dies, even by SIGKILL,
        the kernel closes that end and every child's read end turns readable (EOF)
        at that instant. Polling getppid() once a second measured up to 3.2 s of
        orphans still serving; the pipe takes milliseconds."""
        self._lifeline = os.pipe()

    def _share_files(self):
        """Children that switch to another user must still answer status and log:
        let them write the status folder and append to the log file (Workerman makes
        its log file 0622 for the same reason)."""
        if os.getuid() != 0 or not any(w.user or w.group for w in self.workers):
            return
        os.chmod(self.status_dir, 0o1777)
        if os.path.exists(self.config.log_file):
            os.chmod(self.config.log_file, 0o622)

    def _loop(self):
        while not (self.stopping and not self.children):
            try:
                event = self.events.get(timeout=1)
            except gevent.queue.Empty:
                continue
            try:
                if event[0] == "signal":
                    getattr(self, "handle_" + event[1])()
                else:
                    self.reap(*event[1:])
            except Exception:  # a failed fork, a full disk: log it, keep the children
                log_exception("master: handling %r failed" % (event,))

    def spawn(self, index, worker, slot):
        pid = gevent.os.fork_and_watch(callback=self._child_exited)
        if pid == 0:
            self._become_child()
            worker.run_child(slot, self.workers, self.status_dir,  # never returns
                             lifeline=self._lifeline[0])
        self.children[pid] = (index, slot, worker)
        self.born[pid] = time.time()
        return pid

    def _child_exited(self, watcher):
        self.events.put(("exit", watcher.pid, watcher.rstatus))

    def _become_child(self):
        for handle in self._signal_handles:
            handle.cancel()
        # Until the child installs its own handlers: SIGUSR2 and SIGIO terminate by
        # default, and a `status` at this moment must not kill a child being born.
        for action in ("status", "connections"):
            signal.signal(signals.NUMBER[action], signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # see _handle_hangup
        _close_now(self._lifeline[1])  # only the master may hold the write end
        for killer in self._killers.values():
            killer.kill(block=False)
        Timer.delete_all()

    # -- children ------------------------------------------------------------

    def reap(self, pid, code):
        entry = self.children.pop(pid, None)
        self.born.pop(pid, None)
        if entry is None:
            return
        index, slot, worker = entry
        killer = self._killers.pop(pid, None)
        if killer is not None:
            killer.kill(block=False)
        count_exit(self.exits, worker.name, code)
        if code != 0:
            log("worker[%s:%d] exit with status %d" % (worker.name, pid, code))
        if not self.stopping:
            self.spawn(index, worker, slot)
        if pid == self.replacing:
            self.replacing = None
            self._reload_next()

    def _kill_later(self, pid, timeout):
        def kill():
            if pid in self.children:
                log("worker[%d] did not stop within %ss, sending SIGKILL" % (pid, timeout))
                _signal(pid, signal.SIGKILL)
        self._killers[pid] = gevent.spawn_later(timeout, kill)

    # -- signal handlers -----------------------------------------------------

    def handle_stop(self):
        self._stop("stop")

    def handle_graceful_stop(self):
        self._stop("graceful_stop")

    def _stop(self, how):
        if self.stopping == "stop":
            return
        self.stopping = how
        self.reload_queue, self.replacing = [], None
        for worker in self.workers:
            worker.close_listeners()  # no child will replace these: refuse, do not queue
        log("geventman[%s] stopping (%s)" % (self.start_file, how.replace("_", " ")))
        for pid in list(self.children):
            _signal(pid, signals.NUMBER[how])
            if how == "stop":
                self._kill_later(pid, self.config.stop_timeout)

    def handle_reload(self):
        self._reload("reload")

    def handle_graceful_reload(self):
        self._reload("graceful_reload")

    def _reload(self, how):
        logging.reopen()  # a rotated log file: the new one from now on
        if self.stopping:
            log("reload ignored: already stopping")
            return
        if self.reload_queue or self.replacing:
            if how == "reload" and self.reload_signal == signals.NUMBER["graceful_reload"]:
                self._hurry_reload()
            else:
                log("reload ignored: already reloading")
            return
        log("geventman[%s] reloading" % self.start_file)
        self.reload_signal = signals.NUMBER[how]
        for pid, (_, _, worker) in list(self.children.items()):
            if not worker.reloadable:
                _signal(pid, self.reload_signal)  # it only runs on_worker_reload
        self.reload_queue = reload_order(self.children, lambda worker: worker.reloadable)
        self._reload_next()

    def _hurry_reload(self):
        """A plain reload during a graceful one (which may wait for days on a long
        connection): the child being replaced stops now, as do the ones still queued."""
        log("geventman[%s] reload: graceful reload upgraded to reload" % self.start_file)
        self.reload_signal = signals.NUMBER["reload"]
        if self.replacing is not None and self.replacing in self.children:
            _signal(self.replacing, self.reload_signal)
            self._kill_later(self.replacing, self.config.stop_timeout + 1)

    def _reload_next(self):
        while self.reload_queue:
            pid = self.reload_queue.pop(0)
            if pid in self.children:
                self.replacing = pid
                _signal(pid, self.reload_signal)
                if self.reload_signal == signals.NUMBER["reload"]:
                    self._kill_later(pid, self.config.stop_timeout + 1)
                return
        log("geventman[%s] reload done" % self.start_file)

    def handle_status(self):
        status.write_json(os.path.join(self.status_dir, "master.json"), self.report())
        self._forward("status")

    def handle_connections(self):
        status.write_json(os.path.join(self.status_dir, "master.json"), self.report())
        self._forward("connections")

    def _forward(self, action):
        for pid in list(self.children):
            _signal(pid, signals.NUMBER[action])

    def report(self):
        return {
            "version": __version__, "python": platform.python_version(),
            "hot_path": speedups.describe(),
            "start_time": self.start_time, "load": list(os.getloadavg()),
            "master_pid": os.getpid(),
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "workers": [{"name": w.name, "listen": w.listen_address, "count": w.count}
                        for w in self.workers],
            "children": [self._child_report(pid) for pid in sorted(
                self.children, key=lambda pid: self.children[pid][:2])],
            "exits": self.exits,
        }

    def _child_report(self, pid):
        _, slot, worker = self.children[pid]
        return {"pid": pid, "name": worker.name, "listen": worker.listen_address, "id": slot,
                "start_time": self.born.get(pid)}

    def _finish(self):
        for worker in self.workers:
            worker.close_listeners()
        pidfile.remove(self.config.pid_file, os.getpid())
        log("geventman[%s] has been stopped" % self.start_file)
        logging.flush()


def _close_now(fd):
    """Close ``fd`` at once. gevent (25.8 and later) patches os.close to defer the
    close of a pipe to the loop's next turn; just after a fork that turn did not come
    (measured: the write end was still open in the children seconds later)."""
    os.closerange(fd, fd + 1)  # not patched


def _signal(pid, number):
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
