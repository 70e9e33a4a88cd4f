"""The master's pid file: written atomically, trusted only if that process is alive."""
import os


def write(path, pid):
    temporary = "%s.%d.tmp" % (path, pid)
    with open(temporary, "w") as handle:
        handle.write("%d\n" % pid)
    os.replace(temporary, path)


def read(path):
    """The pid in ``path`` if that process is alive, else None."""
    try:
        with open(path) as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or not alive(pid):
        return None
    return pid


def stale(path):
    """The pid in ``path`` if that process is gone (killed with SIGKILL, say), else None."""
    try:
        with open(path) as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and not alive(pid) else None


def alive(pid):
    """True if ``pid`` runs (a zombie, dead but not yet waited for, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove(path, pid):
    """Remove ``path`` only if it still names ``pid`` (a newer master may own it)."""
    try:
        with open(path) as handle:
            if int(handle.read().strip() or 0) != pid:
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
