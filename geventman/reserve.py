"""One descriptor held in reserve, for the writes that must work at the open-file limit.

At the limit (EMFILE) a process cannot open anything, and ``status`` needs every
child to write its report file: without help the children show as ``[busy]`` with
N/A counters exactly when someone looks. Each process keeps /dev/null open; a write
that fails with EMFILE/ENFILE closes it, tries again with the freed slot, and takes
it back (the classic reserve-descriptor trick; nothing can run in between, as
these writes do not yield to other greenlets).
"""
import errno
import os

_fd = None
FULL = (errno.EMFILE, errno.ENFILE)


def hold():
    """Take the reserve descriptor if not held yet (at the start of each process)."""
    global _fd
    if _fd is None:
        try:
            _fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass


def retry(action, *args):
    """``action(*args)``; on EMFILE/ENFILE, once more with the reserve freed."""
    global _fd
    try:
        return action(*args)
    except OSError as error:
        if error.errno not in FULL or _fd is None:
            raise
    os.closerange(_fd, _fd + 1)  # not os.close: gevent may defer that one
    _fd = None
    try:
        return action(*args)
    finally:
        hold()
