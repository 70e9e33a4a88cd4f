"""What each signal means, in one table the master, the children, the commands and
docs/commands.md share. The meanings are Workerman 3.x's (3.5.2 and later)."""
import signal

SIGNALS = (
    # (signal, action, command that sends it, meaning)
    (signal.SIGINT, "stop", "stop", "stop now: children close their connections and exit"),
    (signal.SIGTERM, "graceful_stop", "stop -g",
     "graceful stop: stop accepting, exit when the last connection has closed"),
    (signal.SIGUSR1, "reload", "reload",
     "replace the children one at a time; each finishes the requests it is serving"),
    (signal.SIGQUIT, "graceful_reload", "reload -g",
     "replace the children one at a time; each waits for its connections to close"),
    (signal.SIGUSR2, "status", "status", "write the status files"),
    (signal.SIGIO, "connections", "connections", "write the connection lists"),
)

ACTION = {number: action for number, action, _, _ in SIGNALS}
NUMBER = {action: number for number, action, _, _ in SIGNALS}


def markdown_table():
    """The table of docs/commands.md, made from SIGNALS."""
    rows = ["| signal | command | meaning |", "|---|---|---|"]
    for number, _, command, meaning in SIGNALS:
        rows.append("| %s | `%s` | %s |" % (signal.Signals(number).name, command, meaning))
    return "\n".join(rows)
