"""Descriptor limits and listening failures, as the master and the workers report them.

``raise_open_file_limit`` runs in the master at start; ``limit_reached`` explains a
failed accept; ``ListenError`` says which worker could not listen where, and who
holds the port.
"""
import errno
import resource

from geventman.log import log


def raise_open_file_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit, for the master and so for every
    child (as nginx's worker_rlimit_nofile, without a setting): the soft limit is
    often 1,024 while the hard one allows far more, and each connection is one
    descriptor. Returns (before, after); logs a change."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel refuses more than fs.nr_open
        target = _nr_open(soft)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log("cannot raise the open file limit from %d to %d: %s" % (soft, target, error))
            return soft, soft
        log("open file limit raised from %d to %d" % (soft, target))
        return soft, target
    return soft, soft


def _nr_open(default):
    try:
        with open("/proc/sys/fs/nr_open") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return default


class ListenError(OSError):
    """A worker could not bind or listen; says which worker and which address, as
    ``worker web: cannot listen on http://0.0.0.0:8080: address already in use``
    (with three workers a bare "[Errno 98] Address already in use" names none)."""

    def __init__(self, worker, error):
        reason = error.strerror or str(error)
        message = "worker %s: cannot listen on %s: %s" % (
            worker.name, worker.address, reason[:1].lower() + reason[1:])
        if error.errno == errno.EADDRINUSE:
            message += holders_of(worker.port, worker.transport)
        super().__init__(error.errno, message)

    def __str__(self):
        return self.strerror


def limit_reached(number):
    """What a failed accept's errno says about descriptor limits, for its log line."""
    if number == errno.EMFILE:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (" (the process's open file limit, RLIMIT_NOFILE %d, is reached: new "
                "connections wait in the listen queue)" % soft)
    if number == errno.ENFILE:
        return " (the system's open file limit, fs.file-max, is reached)"
    return ""


def holders_of(port, transport):
    """``; held by pid 12 (title), ...`` for the processes of this user bound to
    ``port``, or "". Mostly for orphans: children of a master killed with SIGKILL
    that are stuck in a handler and so have not noticed yet (the others stop within
    milliseconds, see _Child._watch_master)."""
    import psutil
    kind = "udp" if transport == "udp" else "tcp"
    try:
        pids = sorted({c.pid for c in psutil.net_connections(kind) if c.pid and c.laddr
                       and c.laddr.port == port and (kind == "udp" or c.status == "LISTEN")})
    except (psutil.Error, OSError):
        return ""
    named = []
    for pid in pids:
        try:
            named.append("pid %d (%s)" % (pid, " ".join(psutil.Process(pid).cmdline())))
        except psutil.Error:
            continue
    return "; held by " + ", ".join(named) if named else ""
