"""Worker callbacks end to end: each one fires, in the right process, the right number of times.

The apps report what happened over a *control connection*: the test opens one text://
connection to the same worker (count = 1, so the same process), says ``control``, and from
then on the app sends every event it sees on other connections to it as one line. Lines
from one process arrive in the order the app produced them, so ``sync`` (answered with
``synced``) is a barrier: whatever the app reported before it has been read by then.
"""
import os
import re
import socket

import pytest

from conftest import LineClient, free_port, wait_until

# The app shared by most tests here. PORT is replaced by the test.
REPORTING_APP = """
    import os

    from geventman import Worker

    worker = Worker("text://127.0.0.1:PORT")
    worker.count = 1
    worker.name = "callbacks"
    controls = []


    def report(*parts):
        line = " ".join(str(part) for part in parts)
        for control in controls:
            control.send(line)


    def on_connect(connection):
        connection.is_control = False
        report("connect", connection.id)
        connection.send("welcome %d" % connection.id)


    def on_message(connection, data):
        if data == "control":
            connection.is_control = True
            controls.append(connection)
            return connection.send("control ok")
        if connection.is_control:
            return on_control(connection, data)
        report("message", connection.id, data)
        command, _, argument = data.partition(" ")
        if command in COMMANDS:
            COMMANDS[command](connection, argument)


    def on_control(connection, data):
        command, _, argument = data.partition(" ")
        if command == "sync":
            connection.send("synced " + argument)


    def on_close(connection):
        if connection.is_control:
            controls.remove(connection)
        else:
            report("close", connection.id)


    def on_error(connection, code, message):
        report("error", connection.id, code, message.replace(" ", "_"))


    def on_buffer_full(connection):
        report("full", connection.id)


    def on_buffer_drain(connection):
        report("drain", connection.id)


    def flood(connection, argument):
        chunk_size, limit, extra = (int(part) for part in argument.split())
        connection.max_send_buffer_size = limit
        codes = {True: "T", None: "N", False: "F"}
        results = [codes[connection.send("first")]]
        chunk = "x" * (chunk_size - 1)          # text:// adds the newline
        while "F" not in results and len(results) < 10000:
            results.append(codes[connection.send(chunk)])
        for _ in range(extra):
            results.append(codes[connection.send(chunk)])
        report("flood", connection.id, "".join(results))


    def boom(connection, argument):
        raise ValueError("boom-marker-" + argument)


    COMMANDS = {
        "ping": lambda connection, argument: connection.send("pong " + argument),
        "close": lambda connection, argument: connection.close(),
        "close_data": lambda connection, argument: connection.close("bye " + argument),
        "close_twice": lambda connection, argument: (connection.close(), connection.close()),
        "close_destroy": lambda connection, argument: (connection.close(), connection.destroy()),
        "destroy": lambda connection, argument: connection.destroy(),
        "destroy_twice": lambda connection, argument: (connection.destroy(),
                                                      connection.destroy()),
        "flood": flood,
        "boom": boom,
    }

    worker.on_connect = on_connect
    worker.on_message = on_message
    worker.on_close = on_close
    worker.on_error = on_error
    worker.on_buffer_full = on_buffer_full
    worker.on_buffer_drain = on_buffer_drain
"""


EVENTS = {"connect", "message", "close", "error", "full", "drain", "flood",
          "closed", "destroyed"}


class Control(LineClient):
    """The test's end of the control connection: collects the app's event lines."""

    def __init__(self, port):
        super().__init__(port, timeout=10)
        self.recvline()  # its own welcome
        assert self.ask("control") == "control ok"
        self.lines = []
        self._tokens = iter(range(1, 1 << 30))

    def wait_for(self, pattern, after=0):
        """Read event lines until one matches ``pattern`` (a regex); return the match.
        Lines already read count too, from index ``after`` on."""
        compiled = re.compile(pattern)
        for line in self.lines[after:]:
            found = compiled.fullmatch(line)
            if found:
                return found
        while True:
            line = self.recvline()  # times out after 10 s: the test fails
            self.lines.append(line)
            found = compiled.fullmatch(line)
            if found:
                return found

    def query(self, command, answer):
        """Send ``command``; return the reply, the first later line starting with ``answer``."""
        mark = len(self.lines)
        self.sendline(command)
        return self.wait_for(re.escape(answer) + "( .*)?", after=mark).group(0)

    def sync(self):
        """Barrier: every event the app reported before this call has been read."""
        token = next(self._tokens)
        self.sendline("sync %d" % token)
        self.wait_for("synced %d" % token)

    def events(self, connection_id):
        """The event lines (``<event> <connection id> ...``) about one connection."""
        return [line for line in self.lines if line.split(" ")[0] in EVENTS and
                line.split(" ")[1] == str(connection_id)]


class Client(LineClient):
    def __init__(self, port, receive_buffer=None, timeout=10):
        if receive_buffer is None:
            super().__init__(port, timeout=timeout)
        else:
            # A small receive buffer set before connect keeps the kernel from taking
            # megabytes for a client that does not read (loopback autotunes to 32 MB).
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
            self.buffer = b""
        self.id = int(self.recvline().split()[1])


@pytest.fixture
def reporting(project):
    port = free_port()
    project.app("callbacks", REPORTING_APP.replace("PORT", str(port)))
    project.start(ports=[port])
    control = Control(port)
    yield project, port, control
    control.close()


def test_worker_start_and_stop_run_in_each_child(project):
    port = free_port()
    project.app("ids", """
        import os

        from geventman import Worker

        HERE = os.path.dirname(os.path.abspath(__file__))
        worker = Worker("text://127.0.0.1:%d")
        worker.count = 2


        def mark(what, worker):
            with open(os.path.join(HERE, "%%s-%%d-%%d" %% (what, worker.id, os.getpid())), "w"):
                pass


        worker.on_worker_start = lambda worker: mark("start", worker)
        worker.on_worker_stop = lambda worker: mark("stop", worker)
        worker.on_message = lambda connection, data: connection.send(str(worker.id))
    """ % port)
    marks = project.path("applications", "ids")
    project.start(ports=[port])
    children = project.wait_children(2)

    def found(what):
        names = [name.split("-") for name in os.listdir(marks) if name.startswith(what + "-")]
        return sorted((int(slot), int(pid)) for _, slot, pid in names)

    started = wait_until(lambda: (lambda seen: seen if len(seen) == 2 else None)(found("start")),
                         message="on_worker_start in both children")
    assert [slot for slot, _ in started] == [0, 1]
    assert sorted(pid for _, pid in started) == children
    assert found("stop") == []

    assert project.stop().returncode == 0
    assert found("stop") == started


def test_connect_message_close_when_the_client_closes(reporting):
    project, port, control = reporting
    client = Client(port)
    control.wait_for("connect %d" % client.id)
    assert client.ask("ping 1") == "pong 1"
    control.wait_for("message %d ping 1" % client.id)
    client.close()
    control.wait_for("close %d" % client.id)
    control.sync()
    assert control.events(client.id) == [
        "connect %d" % client.id, "message %d ping 1" % client.id, "close %d" % client.id]


@pytest.mark.parametrize("command", ["close", "close_twice", "close_destroy", "destroy",
                                     "destroy_twice", "close_data"])
def test_on_close_runs_once_when_the_server_closes(reporting, command):
    project, port, control = reporting
    client = Client(port)
    client.sendline(command + " now")
    if command == "close_data":
        assert client.recvline() == "bye now"
    assert client.closed_by_peer(timeout=10)
    control.wait_for("close %d" % client.id)
    # A second connection is served after the first is gone, and the barrier makes
    # sure any duplicate on_close of the first would have been read already.
    other = Client(port)
    assert other.ask("ping 2") == "pong 2"
    control.sync()
    assert control.events(client.id).count("close %d" % client.id) == 1
    other.close()


def test_send_results_buffer_full_error_and_drain(reporting):
    """A client that does not read: send() gives True, then None (queued), then False
    past max_send_buffer_size with on_buffer_full once and on_error(conn, 2, msg)
    per refused send; once the client reads, on_buffer_drain fires and every accepted
    package arrives."""
    project, port, control = reporting
    client = Client(port, receive_buffer=16384)
    chunk, limit, extra = 16384, 256 * 1024, 2
    client.sendline("flood %d %d %d" % (chunk, limit, extra))
    results = control.wait_for(r"flood %d ([TNF]+)" % client.id).group(1)
    # The kernel takes some megabytes (True) before the rest is queued (None).
    assert re.fullmatch(r"T+N+F{%d}" % (1 + extra), results), results
    queued = results.count("N")
    assert queued * chunk >= limit  # nothing refused before the buffer was over the limit

    mine = [line.split()[0] for line in control.events(client.id)]
    assert mine.count("full") == 1
    assert mine.count("drain") == 0
    errors = [line for line in control.lines if line.startswith("error %d " % client.id)]
    assert len(errors) == 1 + extra
    assert all(line.split()[2] == "2" for line in errors), errors
    assert mine.index("full") < mine.index("error")

    assert client.recvline() == "first"
    for _ in range(results.count("T") - 1 + queued):
        assert client.recvline() == "x" * (chunk - 1)
    control.wait_for("drain %d" % client.id)
    # The refused packages were dropped, not sent late; the connection still works.
    assert client.ask("ping 3") == "pong 3"
    control.sync()
    assert [line.split()[0] for line in control.events(client.id)].count("drain") == 1
    client.close()


def test_send_never_blocks_the_caller_on_a_slow_peer(project):
    """One process (count = 1): a handler sends 16 MB to a client that does not read.
    If send() blocked on the slow peer, the handler would never get to tell the
    watching client "flooded"; meanwhile that client is served as usual."""
    port = free_port()
    project.app("slow", """
        from geventman import Worker

        worker = Worker("text://127.0.0.1:%d")
        worker.count = 1
        watchers = []


        def on_message(connection, data):
            if data == "watch":
                watchers.append(connection)
                connection.send("watching")
            elif data == "flood":
                connection.max_send_buffer_size = 64 << 20
                chunk = "y" * 65535
                results = [connection.send(chunk) for _ in range(256)]
                for watcher in watchers:
                    watcher.send("flooded %%s %%s" %% (False not in results, None in results))
            else:
                connection.send("echo " + data)


        worker.on_message = on_message
    """ % port)
    project.start(ports=[port])
    fast = LineClient(port, timeout=10)
    assert fast.ask("watch") == "watching"
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    slow.settimeout(10)
    slow.connect(("127.0.0.1", port))
    slow.sendall(b"flood\n")
    # Nothing sent by the flood all went out (some was queued: None), none refused.
    assert fast.recvline() == "flooded True True"
    for number in range(20):
        assert fast.ask("hi %d" % number) == "echo hi %d" % number
    received = 0
    while received < 256 * 65536:
        chunk = slow.recv(1 << 20)
        assert chunk, "closed before the flood arrived"
        received += len(chunk)
    assert received == 256 * 65536
    slow.close()
    fast.close()


def test_exception_in_on_message_is_logged_counted_and_survived(reporting):
    project, port, control = reporting
    first, second = Client(port), Client(port)
    first.sendline("boom first")
    assert first.ask("ping after") == "pong after"
    assert second.ask("ping other") == "pong other"
    wait_until(lambda: "boom-marker-first" in project.log(), message="the exception logged")
    log = project.log()
    assert "Traceback (most recent call last)" in log
    assert "ValueError: boom-marker-first" in log
    assert "in boom" in log  # the frame of the user function that raised
    [row] = wait_until(lambda: [row for row in project.status_json()["processes"]
                                if not row["busy"]], message="status of the child")
    assert row["throw_exception"] == 1
    first.close()
    second.close()


def test_listen_in_a_worker_made_inside_on_worker_start(project):
    """A Worker with no address (a task process) creates another Worker in its
    on_worker_start and calls listen(): that worker serves in the same process."""
    port = free_port()
    project.app("nested", """
        import os

        from geventman import Worker

        tasks = Worker()
        tasks.name = "tasks"
        tasks.count = 1


        def on_worker_start(worker):
            inner = Worker("text://127.0.0.1:%d")
            inner.on_message = lambda connection, data: connection.send(
                "inner %%s %%d" %% (data, os.getpid()))
            inner.listen()
            worker.inner = inner


        tasks.on_worker_start = on_worker_start
    """ % port)
    project.start(ports=[port])
    [child] = project.wait_children(1)
    with LineClient(port) as client:
        assert client.ask("hello") == "inner hello %d" % child
    [row] = wait_until(lambda: project.status_json()["processes"], message="status")
    # The process is shown as the worker it was forked for, not the one it made.
    assert (row["name"], row["listen"]) == ("tasks", "none")
