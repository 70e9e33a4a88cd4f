"""AsyncTcpConnection end to end: a task process links to a backend the test runs itself.

The backend is a plain listening socket in the test, so the test decides when it is up,
when it drops the link and when it comes back. The app greets every new link with one
``hello`` line carrying its counters, and writes its sequence of events (E: on_error,
C: on_close) to a file, so the test can wait for a failed attempt without sleeping.
"""
import re
import socket

import pytest

from conftest import free_port, wait_until

LINK_APP = """
    import os

    import gevent

    from geventman import Worker
    from geventman.connection import AsyncTcpConnection

    HERE = os.path.dirname(os.path.abspath(__file__))
    worker = Worker()
    worker.name = "link"
    state = {"connects": 0, "closes": 0, "errors": [], "sequence": ""}


    def record(letter):
        state["sequence"] += letter
        with open(os.path.join(HERE, "sequence.tmp"), "w") as handle:
            handle.write(state["sequence"])
        os.replace(os.path.join(HERE, "sequence.tmp"), os.path.join(HERE, "sequence"))


    def on_connect(link):
        state["connects"] += 1
        link.send("hello connects=%d closes=%d sequence=%s errors=%s remote=%s:%d" % (
            state["connects"], state["closes"], state["sequence"] or "-",
            ",".join(state["errors"]) or "-", link.get_remote_ip(), link.get_remote_port()))


    def on_message(link, data):
        if data == "switch":  # reconnect, then block until the new link is up and busy
            before = state["connects"]
            link.reconnect()
            while state["connects"] == before:
                gevent.sleep(0.01)
            gevent.sleep(0.3)
            return record("S")
        link.send("echo " + data)


    def on_close(link):
        state["closes"] += 1
        record("C")
        link.reconnect(0.1)


    def on_error(link, code, message):
        state["errors"].append("%d:%s" % (code, "BACKEND" in message))
        record("E")


    def on_worker_start(worker):
        link = AsyncTcpConnection("text://127.0.0.1:BACKEND")
        link.on_connect = on_connect
        link.on_message = on_message
        link.on_close = on_close
        link.on_error = on_error
        link.send("early 1")    # before connect(): queued, sent once connected
        link.send("early 2")
        link.connect()
        worker.link = link


    worker.on_worker_start = on_worker_start
"""


class Backend:
    """A one-connection-at-a-time text server run by the test."""

    def __init__(self, port):
        self.port = port
        self.listener = None

    def up(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(8)
        self.listener.settimeout(10)

    def down(self):
        self.listener.close()
        self.listener = None

    def accept(self):
        sock, _ = self.listener.accept()  # 10 s without a connection fails the test
        sock.settimeout(10)
        return sock, sock.makefile("rb")


def line(reader):
    got = reader.readline()
    assert got.endswith(b"\n"), "link closed: %r" % got
    return got.decode().rstrip("\n")


@pytest.fixture
def link(project):
    port = free_port()
    project.app("link", LINK_APP.replace("BACKEND", str(port)))
    backend = Backend(port)

    def sequence():
        try:
            with open(project.path("applications", "link", "sequence")) as handle:
                return handle.read()
        except OSError:
            return ""

    yield project, backend, sequence
    if backend.listener is not None:
        backend.down()


def test_queued_data_callbacks_and_reconnect_after_the_backend_restarts(link):
    project, backend, sequence = link
    backend.up()
    project.start()
    sock, reader = backend.accept()
    # What was sent before connect() comes first, then what on_connect sent.
    assert line(reader) == "early 1"
    assert line(reader) == "early 2"
    assert line(reader) == ("hello connects=1 closes=0 sequence=- errors=- remote=127.0.0.1:%d"
                            % backend.port)
    sock.sendall(b"ping\n")
    assert line(reader) == "echo ping"

    # The backend goes away: on_close, then reconnect(0.1) attempts fail until it is back.
    reader.close()
    sock.close()
    backend.down()
    wait_until(lambda: sequence().startswith("CE"), message="a failed reconnect attempt")
    backend.up()
    sock, reader = backend.accept()
    hello = line(reader)
    found = re.fullmatch(r"hello connects=2 closes=(\d+) sequence=(C(?:EC)+) errors=(\S+) "
                         r"remote=127.0.0.1:(\d+)", hello)
    assert found, hello
    closes, events, errors, remote_port = found.groups()
    assert int(closes) == events.count("C")
    assert errors.split(",") == ["1:True"] * events.count("E")
    assert int(remote_port) == backend.port
    sock.sendall(b"again\n")
    assert line(reader) == "echo again"  # the queue of the old link was not replayed
    reader.close()
    sock.close()


def test_connect_failure_gives_on_error_1_then_on_close(link):
    project, backend, sequence = link
    project.start()  # nothing listens on the backend port yet
    # Each failed attempt: on_error(link, 1, "connect ... fail ...") and then on_close,
    # whose reconnect(0.1) tries again.
    wait_until(lambda: len(sequence()) >= 4, message="two failed attempts")
    assert re.fullmatch(r"(EC)+E?", sequence()), sequence()
    backend.up()
    sock, reader = backend.accept()
    # The queue made before the first attempt went with that failed link (destroy()
    # drops what is queued, as in Workerman), so hello comes first; it tells how the
    # failures were reported.
    hello = line(reader)
    found = re.fullmatch(r"hello connects=1 closes=(\d+) sequence=((?:EC)+) errors=(\S+) "
                         r"remote=\S+", hello)
    assert found, hello
    assert found.group(3).split(",") == ["1:True"] * found.group(2).count("E")
    reader.close()
    sock.close()


def test_a_handler_that_reconnects_and_blocks_leaves_the_new_link_alone(link):
    """The rest of the old link's input is dropped, and when the handler returns it
    does not touch the new link (which is being served meanwhile)."""
    project, backend, sequence = link
    backend.up()
    project.start()
    old, old_reader = backend.accept()
    for _ in range(3):  # early 1, early 2, hello
        line(old_reader)
    old.sendall(b"switch\nstale\n")   # one read on the app's side
    new, reader = backend.accept()
    assert line(reader).startswith("hello connects=2 ")
    new.sendall(b"ping\n")             # served while the switch handler still sleeps
    assert line(reader) == "echo ping"
    wait_until(lambda: sequence() == "CS", message="the switch handler's return")
    new.sendall(b"after\n")
    assert line(reader) == "echo after"
    for sock in (old_reader, old, reader, new):
        sock.close()
