"""The commands of ``python start.py <command>``: a dispatch table of small functions.

This module is imported before gevent patches anything (start.py parses the command
line first, to detach before the patch), so it imports nothing heavy at module level.
"""
import json
import os
import signal
import sys
import time

from geventman import pidfile, report
from geventman.report import say
from geventman.signals import NUMBER

USAGE = """Usage: python start.py <command> [mode]
Commands:
  start [-d]        start in the foreground, or detached with -d
  stop [-g]         stop now, or gracefully with -g (wait for connections to close)
  restart [-d] [-g] stop, then start
  reload [-g]       replace the children one at a time (-g: wait for their connections)
  status [-d] [--json]  show the status (-d: refresh every second)
  connections       list the connections of every process
Options:
  --app NAME        only the application applications/NAME (repeatable)
  --watch           start: reload when a .py file under applications/ changes"""


class Command:
    def __init__(self, name, daemon=False, graceful=False, json=False, apps=()):
        self.name, self.daemon, self.graceful, self.json = name, daemon, graceful, json
        self.apps = list(apps)
        self.workers = []  # the Worker objects to start; main() fills it
        self.watch = False

    @property
    def starts(self):
        return self.name in ("start", "restart")


class UsageError(Exception):
    pass


_current = None


def parse(argv):
    """``['start.py', 'start', '-d']`` -> Command; remembered for ``main``."""
    global _current
    args = list(argv[1:])
    if not args or args[0] not in COMMANDS:
        raise UsageError(USAGE)
    command = Command(args.pop(0))
    while args:
        arg = args.pop(0)
        if arg == "-d":
            command.daemon = True
        elif arg == "-g":
            command.graceful = True
        elif arg == "--json":
            command.json = True
        elif arg == "--watch":
            command.watch = True
        elif arg == "--app" and args:
            command.apps.append(args.pop(0))
        else:
            raise UsageError("unknown option %r\n%s" % (arg, USAGE))
    _current = command
    return command


def current(argv):
    if _current is not None:
        return _current
    return parse(argv)


def main(config, workers, argv=None):
    """Run the parsed command against the Worker settings ``config`` and the
    ``workers`` made so far; the exit code. The caller (``Worker.run_all``) hands
    both in, so this module never imports geventman.worker: the arrow points from
    worker to cli only."""
    from geventman import log
    try:
        command = current(argv or sys.argv)
    except UsageError as error:
        say(str(error))
        return 64
    command.workers = list(workers)
    start_file = os.path.abspath((argv or sys.argv)[0])
    fill_defaults(config, start_file, command)
    detached = command.starts and (command.daemon or config.daemonize)
    log.configure(config.log_file, echo=not detached)
    code = COMMANDS[command.name](command, config, start_file)
    report.finish(code)
    return code


def fill_defaults(config, start_file, command):
    base = os.path.dirname(start_file)
    suffix = "".join("." + app for app in sorted(command.apps))
    if not config.pid_file:
        config.pid_file = os.path.join(base, "geventman%s.pid" % suffix)
    if not config.log_file:
        config.log_file = os.path.join(base, "geventman.log")
    config.pid_file = os.path.abspath(config.pid_file)
    config.log_file = os.path.abspath(config.log_file)


def _running(config, quiet=False):
    pid = pidfile.read(config.pid_file)
    if pid is None and not quiet:
        say("geventman is not running (no live master in %s)" % config.pid_file)
    return pid


# -- commands ------------------------------------------------------------------

def do_start(command, config, start_file):
    from geventman.master import Master
    if config.daemonize and not command.daemon:
        # Detaching must happen before gevent is loaded: start again, as with -d.
        os.execv(sys.executable, [sys.executable] + sys.argv + ["-d"])
    pid = _running(config, quiet=True)
    if pid is not None:
        say("geventman[%s] already running (master pid %d)" % (start_file, pid))
        return 1
    detached = command.daemon or config.daemonize
    master = Master(command.workers, config, start_file, foreground=not detached)
    try:
        master.bind()
    except (OSError, ValueError, LookupError) as error:
        say("geventman[%s] start failed: %s" % (start_file, error))
        dead = pidfile.stale(config.pid_file)
        if dead is not None:
            say("geventman[%s] the last master (pid %d in %s) is gone without stopping: "
                "processes it left may still be running" % (start_file, dead, config.pid_file))
        return 1
    say(start_table(master.workers, detached))
    report.finish(0)
    if detached:
        _redirect_std(config.stdout_file)
    master.watch = command.watch or (config.file_monitor and not detached)
    return master.run()


def start_table(workers, detached):
    import getpass
    from geventman import table
    from geventman import speedups
    from geventman.version import __version__
    rows = table.format_rows(("user", "worker", "listen", "processes", "status"), [
        (worker.user or getpass.getuser(), worker.name, worker.listen_address, worker.count,
         "[OK]") for worker in workers])
    facts = ["geventman version:%s   Python version:%s   hot path:%s" % (
        __version__, sys.version.split()[0], speedups.describe())]
    width = table.width(facts + rows)
    lines = [table.title(" geventman ", width)] + facts + [table.title(" WORKERS ", width)]
    lines += rows + ["-" * width]
    if detached:
        lines.append('Input "python %s stop" to stop. Start success.' % os.path.basename(sys.argv[0]))
    else:
        lines.append("Press Ctrl+C to stop. Start success.")
    return "\n".join(lines)


def _redirect_std(path):
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.closerange(fd, fd + 1)  # at once, not deferred by gevent (see report.finish)
    # stdout to a file is block-buffered: a handler's print() would show up only
    # when 8 KB have piled up or the child exits. Workerman's echo lands at once.
    sys.stdout.reconfigure(line_buffering=True)


def do_stop(command, config, start_file):
    pid = _running(config)
    if pid is None:
        return 1
    how = "graceful_stop" if command.graceful else "stop"
    say("geventman[%s] is stopping ..." % start_file)
    os.kill(pid, NUMBER[how])
    limit = None if command.graceful else config.stop_timeout + 3
    if not _wait_gone(pid, limit):
        say("geventman[%s] stop fail: master %d did not exit in %ss, killed" % (
            start_file, pid, limit))
        _kill(pid)
        return 1
    say("geventman[%s] stop success" % start_file)
    return 0


def _wait_gone(pid, limit):
    deadline = None if limit is None else time.monotonic() + limit
    while pidfile.alive(pid):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def do_restart(command, config, start_file):
    if _running(config, quiet=True) is not None:
        code = do_stop(command, config, start_file)
        if code:
            return code
    return do_start(command, config, start_file)


def do_reload(command, config, start_file):
    pid = _running(config)
    if pid is None:
        return 1
    os.kill(pid, NUMBER["graceful_reload" if command.graceful else "reload"])
    say("geventman[%s] reload%s signal sent" % (start_file, " -g" if command.graceful else ""))
    return 0


def _gather(config, pid, action, suffix):
    from geventman import status
    directory = config.pid_file + ".status"
    status.clear(directory)
    os.kill(pid, NUMBER[action])
    return status.collect(directory, suffix)


def do_status(command, config, start_file):
    from geventman import status
    pid = _running(config)
    if pid is None:
        return 1
    previous = None
    while True:
        master, answers = _gather(config, pid, "status", ".json")
        if master is None:
            say("the master (pid %d) did not answer" % pid)
            return 1
        rows = status.process_rows(master, answers)
        if command.json:
            say(json.dumps({"global": {k: v for k, v in master.items() if k != "children"},
                            "processes": rows}, indent=1))
            return 0
        qps = _qps(previous, rows)
        previous = rows
        if command.daemon:
            sys.stdout.write("\x1b[2J\x1b[H")
        say(status.render(master, rows, qps))
        if not command.daemon:
            return 0
        time.sleep(1)


def _qps(previous, rows):
    if not previous:
        return {}
    before = {row["pid"]: row["total_request"] for row in previous}
    return {row["pid"]: row["total_request"] - before[row["pid"]] for row in rows
            if row["total_request"] is not None and before.get(row["pid"]) is not None}


def do_connections(command, config, start_file):
    from geventman import status
    pid = _running(config)
    if pid is None:
        return 1
    master, answers = _gather(config, pid, "connections", ".connections.json")
    if master is None:
        say("the master (pid %d) did not answer" % pid)
        return 1
    if command.json:
        say(json.dumps(answers))
    else:
        say(status.render_connections(master, answers))
    return 0


COMMANDS = {"start": do_start, "stop": do_stop, "restart": do_restart, "reload": do_reload,
            "status": do_status, "connections": do_connections}
