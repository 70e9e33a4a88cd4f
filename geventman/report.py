"""Where command output goes: the terminal, or, while ``start -d`` detaches, a pipe
back to the launching process, which prints it and exits with the reported status."""
import os
import sys
import traceback

_pipe = None


def use_pipe(fd):
    global _pipe
    _pipe = fd


def say(text):
    if _pipe is not None:
        os.write(_pipe, (text + "\n").encode())
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def finish(code):
    """Tell the launcher how the start went; later output goes to Worker.stdout_file."""
    global _pipe
    if _pipe is not None:
        os.write(_pipe, b"\0%d\n" % code)
        # Closed now, before the master forks: gevent's patched os.close defers a
        # pipe's close to the loop, and children forked meanwhile kept the pipe
        # open, so the launcher waited for EOF for ever (measured).
        os.closerange(_pipe, _pipe + 1)
        _pipe = None


def crashed(kind, value, trace):
    """``sys.excepthook`` of the daemon: its stderr is /dev/null, so an exception that
    ends it (an application that fails to import) is told to the launcher."""
    say("".join(traceback.format_exception(kind, value, trace)).rstrip())
    finish(1)


def relay(fd):
    """Launcher side: print what the daemon reports; return its status (1 if it died)."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    text, _, code = b"".join(chunks).partition(b"\0")
    sys.stdout.write(text.decode(errors="replace"))
    sys.stdout.flush()
    try:
        return int(code.strip())
    except ValueError:
        sys.stdout.write("the daemon exited before it reported its start\n")
        return 1
