"""Detaching for ``start -d`` with python-daemon, before gevent is imported.

python-daemon's own fork makes the shell's process exit at once, so we fork first:
the launching process stays and waits on a pipe for the daemon's report (the start
table, or why it failed) and exits with the daemon's status. The pid file is our own
(geventman.pidfile): python-daemon's lockfile-based one fails after detaching on a
stale file, where the shell can no longer see it.
"""
import os
import sys

from geventman import report


def detach():
    """Return in the daemon; the launching process exits inside this call."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        os._exit(report.relay(read_end))
    os.close(read_end)
    import daemon  # python-daemon
    context = daemon.DaemonContext(
        working_directory=os.getcwd(), umask=0o022, detach_process=True,
        files_preserve=[write_end], signal_map={}, prevent_core=False)
    context.open()
    report.use_pipe(write_end)
    sys.excepthook = report.crashed
