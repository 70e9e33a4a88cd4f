"""TcpConnection end to end: close/destroy, addresses, attributes, ids, pause/resume, pipe.

The text:// app here follows the control-connection convention of test_callbacks.py:
every connection is greeted with ``welcome <id>``; a connection that says ``control``
receives the app's event lines and may ask about other connections by id.
"""
import hashlib
import os
import re
import socket
import struct
import threading

import pytest

from conftest import LineClient, free_port, wait_until
from geventman.connection.tcp import State
from geventman.protocols.frame import Frame
from geventman.protocols.text import Text
from websocket_support import server_connection
from test_callbacks import Client, Control

CONNECTION_APP = """
    from geventman import Worker
    from geventman.worker import _unread_bytes

    worker = Worker("text://127.0.0.1:PORT")
    worker.count = 1
    controls = []


    def report(*parts):
        for control in controls:
            control.send(" ".join(str(part) for part in parts))


    def clients():
        return sorted(i for i, c in worker.connections.items() if not c.is_control)


    def on_connect(connection):
        connection.is_control = False
        connection.send("welcome %d" % connection.id)


    def on_message(connection, data):
        if data == "control":
            connection.is_control = True
            controls.append(connection)
            return connection.send("control ok")
        if connection.is_control:
            return on_control(connection, *data.split())
        report("message", connection.id, data)
        command, _, argument = data.partition(" ")
        if command == "addr":
            connection.send("addr %s %s %s %s" % (
                connection.get_remote_ip(), connection.get_remote_port(),
                connection.get_local_ip(), connection.get_local_port()))
        elif command == "set":
            connection.uid = int(argument)
            connection.send("set")
        elif command == "get":
            connection.send("uid %s" % getattr(connection, "uid", None))
        elif command == "pause":
            connection.pause_recv()
        elif command == "big_close":
            connection.max_send_buffer_size = 64 << 20
            results = [connection.send("z" * 65535) for _ in range(int(argument))]
            connection.close("end")
            report("closed", connection.id, None in results)
        elif command == "big_destroy":
            connection.max_send_buffer_size = 64 << 20
            results = [connection.send("z" * 65535) for _ in range(int(argument))]
            connection.destroy()
            report("destroyed", connection.id, None in results)


    def on_control(connection, command, *arguments):
        if command == "sync":
            connection.send("synced " + arguments[0])
        elif command == "clients":
            connection.send("clients " + " ".join(str(i) for i in clients()))
        elif command == "unread":
            connection.send("unread %d" % _unread_bytes(worker.connections[int(arguments[0])]))
        elif command == "resume":
            worker.connections[int(arguments[0])].resume_recv()


    def on_close(connection):
        if connection.is_control:
            controls.remove(connection)
        else:
            report("close", connection.id)


    worker.on_connect = on_connect
    worker.on_message = on_message
    worker.on_close = on_close
"""


@pytest.fixture
def served(project):
    port = free_port()
    project.app("conn", CONNECTION_APP.replace("PORT", str(port)))
    project.start(ports=[port])
    control = Control(port)
    yield port, control
    control.close()


def receive_until_eof(sock):
    """Everything until the server closes (EOF, or a reset: unread data was dropped)."""
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_close_with_data_flushes_the_queue_then_closes(served):
    port, control = served
    client = Client(port, receive_buffer=16384)
    client.sendline("big_close 256")  # 16 MB: the kernel takes 4 MB at most
    # True: some of it was still queued in the connection when close() ran.
    control.wait_for("closed %d True" % client.id)
    for _ in range(256):
        assert client.recvline() == "z" * 65535
    assert client.recvline() == "end"
    assert client.closed_by_peer(timeout=10)
    control.wait_for("close %d" % client.id)


def test_destroy_drops_the_queue_and_closes_at_once(served):
    port, control = served
    client = Client(port, receive_buffer=16384)
    client.sendline("big_destroy 128")  # 8 MB, most of it still queued
    # True: part of it was queued (not written) when destroy() ran.
    control.wait_for("destroyed %d True" % client.id)
    control.wait_for("close %d" % client.id)
    received = receive_until_eof(client.sock)  # the socket times out after 10 s
    assert len(received) + len(client.buffer) < 128 * 65536, "the queue was not dropped"
    control.sync()
    assert control.lines.count("close %d" % client.id) == 1


def test_addresses_attributes_and_ids(served):
    port, control = served
    first, second, third = Client(port), Client(port), Client(port)
    assert len({first.id, second.id, third.id}) == 3  # connection.id is unique
    third.close()

    remote_ip, remote_port, local_ip, local_port = first.ask("addr").split()[1:]
    client_ip, client_port = first.sock.getsockname()
    assert (remote_ip, int(remote_port)) == (client_ip, client_port)
    assert (local_ip, int(local_port)) == ("127.0.0.1", port)

    assert first.ask("get") == "uid None"
    assert first.ask("set 42") == "set"
    assert first.ask("get") == "uid 42"   # an attribute set in one message, read in the next
    assert second.ask("get") == "uid None"
    first.close()
    second.close()


def test_worker_connections_tracks_live_connections(served):
    port, control = served

    def listed():
        return [int(i) for i in control.query("clients", "clients").split()[1:]]

    # project.start() probed the port with a connection of its own: wait it out.
    wait_until(lambda: listed() == [], message="the start probe's connection gone")
    clients = [Client(port) for _ in range(3)]
    assert listed() == sorted(client.id for client in clients)
    clients[0].close()
    clients[2].close()
    wait_until(lambda: listed() == [clients[1].id], message="closed connections removed")
    clients[1].close()
    wait_until(lambda: listed() == [], message="all connections removed")


def test_pause_recv_holds_messages_until_resume_recv(served):
    port, control = served
    client = Client(port)

    def messages():
        return [line.split(" ", 2)[2] for line in control.events(client.id)
                if line.startswith("message ")]

    # "pause" and two more lines in one write: all three are read at once, and the
    # two after "pause" wait in the connection's own buffer until resume_recv().
    client.send("pause\na1\na2\n")
    control.wait_for("message %d pause" % client.id)
    control.sync()
    assert messages() == ["pause"]
    control.sendline("resume %d" % client.id)
    control.wait_for("message %d a2" % client.id)
    assert messages() == ["pause", "a1", "a2"]

    # Lines that arrive while paused wait in the kernel, unread.
    client.send("pause\n")
    control.wait_for("message %d pause" % client.id, after=len(control.lines))
    client.send("b1\nb2\n")
    wait_until(lambda: int(control.query("unread %d" % client.id, "unread").split()[1]) == 6,
               message="b1, b2 at the server, unread")
    control.sync()
    assert messages() == ["pause", "a1", "a2", "pause"]
    control.sendline("resume %d" % client.id)
    control.wait_for("message %d b2" % client.id)
    assert messages() == ["pause", "a1", "a2", "pause", "b1", "b2"]
    client.close()


def test_pause_and_resume_on_a_tcp_worker_deliver_no_empty_message(project):
    port = free_port()
    project.app("rawpause", """
        import gevent

        from geventman import Worker

        worker = Worker("tcp://127.0.0.1:%d")
        worker.count = 1


        def resume(connection):
            connection.resume_recv()
            connection.send(b"resumed")


        def on_message(connection, data):
            connection.seen = getattr(connection, "seen", []) + [data]
            if data == b"pause":
                connection.pause_recv()
                gevent.spawn_later(0.05, resume, connection)
            elif data == b"report":
                connection.send(repr(connection.seen).encode())


        worker.on_message = on_message
    """ % port)
    project.start(ports=[port])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"pause")
        assert sock.recv(100) == b"resumed"
        sock.sendall(b"report")
        assert sock.recv(100) == repr([b"pause", b"report"]).encode()


PROXY_APP = """
    import os

    from geventman import Worker
    from geventman.connection import AsyncTcpConnection

    NOTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes")

    backend = Worker("tcp://127.0.0.1:BACKEND")
    backend.name = "backend"


    def echo_connect(connection):
        connection.max_send_buffer_size = 64 << 20


    backend.on_connect = echo_connect
    backend.on_message = lambda connection, data: connection.send(data)

    proxy = Worker("tcp://127.0.0.1:PROXY")
    proxy.name = "proxy"


    def note(what):
        with open(NOTES, "a") as handle:
            handle.write(what + "\\n")


    def proxy_connect(connection):
        remote = AsyncTcpConnection("tcp://127.0.0.1:BACKEND")
        connection.pipe(remote)
        remote.pipe(connection)
        # Watch the back-pressure that pipe() set up toward the client.
        full, drain = connection.on_buffer_full, connection.on_buffer_drain
        connection.on_buffer_full = lambda c: (note("full"), full(c))
        connection.on_buffer_drain = lambda c: (note("drain"), drain(c))
        remote.connect()


    proxy.on_connect = proxy_connect
"""


def test_pipe_proxy_relays_megabytes_both_ways_with_back_pressure(project):
    backend_port, proxy_port = free_port(), free_port()
    project.app("proxy", PROXY_APP.replace("BACKEND", str(backend_port))
                .replace("PROXY", str(proxy_port)))
    project.start(ports=[backend_port, proxy_port])
    notes = project.path("applications", "proxy", "notes")

    def noted():
        try:
            with open(notes) as handle:
                return handle.read().split()
        except OSError:
            return []

    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"

    payload = os.urandom(16 << 20)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", proxy_port))
    errors = []

    def send_all():
        try:
            sock.sendall(payload)
        except OSError as error:
            errors.append(error)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # The client reads nothing yet: the proxy's buffer toward it fills and the
    # proxy stops reading from the backend (pause_recv) instead of buffering 16 MB.
    wait_until(lambda: "full" in noted(), message="on_buffer_full in the proxy")
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(1 << 20)
        assert chunk, "proxy closed after %d bytes" % len(received)
        received += chunk
    sender.join(10)
    assert not errors
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert "drain" in noted()
    sock.close()
    rows = wait_until(lambda: (lambda rows: rows if all(not row["busy"] for row in rows)
                               else None)(project.status_json()["processes"]),
                      message="status of both children")
    assert [row["send_fail"] for row in rows] == [0, 0]


def test_a_second_server_on_the_same_port_does_not_start(project, tmp_path_factory):
    """The listeners are a SO_REUSEPORT group; another geventman (same user, also
    SO_REUSEPORT) on the port must not join it and take half of its connections."""
    from conftest import Project
    port = free_port()
    source = """
        from geventman import Worker

        worker = Worker("text://127.0.0.1:%d")
        worker.count = 2
        worker.on_message = lambda connection, data: connection.send("%s")
    """
    project.app("first", source % (port, "first"))
    project.start(ports=[port])
    other = Project(tmp_path_factory.mktemp("other"))
    try:
        other.app("second", source % (port, "second"))
        result = other.command("start", "-d")
        assert result.returncode == 1, result.stdout
        assert "address already in use" in result.stdout
    finally:
        other.cleanup()
    for _ in range(10):
        with LineClient(port) as client:
            assert client.ask("who") == "first"


def test_a_handler_may_loop_over_worker_connections_while_they_close(project):
    """A PHP foreach walks a copy; so does a loop over worker.connections. Here one send
    of a broadcast meets a peer that reset (its close runs inside the loop and
    broadcasts again), and a second handler closes every other connection in a loop."""
    port = free_port()
    project.app("broadcast", """
        from geventman import Worker

        worker = Worker("text://127.0.0.1:%d")
        worker.count = 1


        def broadcast(text):
            return [c.send(text) for c in worker.connections.values()].count(True)


        def on_message(connection, data):
            if data == "pause":     # its reset goes unseen until a send meets it
                connection.pause_recv()
                connection.loud = True
                connection.send("paused")
            elif data == "count":
                connection.send("count %%d" %% len(worker.connections))
            elif data == "kick":
                for other in worker.connections.values():
                    if other is not connection:
                        other.close()
                connection.send("kicked, %%d left" %% len(worker.connections))
            else:
                connection.send("delivered %%d" %% broadcast("said " + data))


        def on_close(connection):
            if getattr(connection, "loud", False):
                broadcast("left %%d" %% connection.id)


        worker.on_close = on_close
        worker.on_message = on_message
    """ % port)
    project.start(ports=[port])
    first = LineClient(port)
    reset = LineClient(port)
    assert reset.ask("pause") == "paused"
    wait_until(lambda: first.ask("count") == "count 2", message="the start probe gone")
    third = LineClient(port)
    wait_until(lambda: first.ask("count") == "count 3", message="the third accepted")
    reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.sock.close()  # a reset, which the paused server side has not read

    first.sendline("hi")
    assert first.recvline() == "said hi"
    assert re.fullmatch(r"left \d+", first.recvline())   # from inside the loop
    assert first.recvline() == "delivered 2"              # the loop went on to the third
    assert third.recvline().startswith("left ")
    assert third.recvline() == "said hi"

    fourth = LineClient(port)
    wait_until(lambda: first.ask("count") == "count 3", message="the fourth accepted")
    assert first.ask("kick") == "kicked, 1 left"
    for client in (third, fourth):
        assert client.closed_by_peer()
    first.close()


def test_handlers_that_block_do_not_hold_up_the_other_connections(project):
    """Twenty connections ask at once; each handler blocks until released. Wake-ups that
    arrive in the same turn of the loop are served by one runner in a row, so the rest
    must move to other runners while the first blocks, or their handlers never start."""
    port = free_port()
    project.app("blocking", """
        import gevent.event

        from geventman import Worker

        worker = Worker("text://127.0.0.1:%d")
        worker.count = 1
        released = gevent.event.Event()
        waiting = []


        def on_message(connection, data):
            if data == "count":
                connection.send("waiting %%d" %% len(waiting))
            elif data == "release":
                released.set()
                connection.send("released")
            else:
                waiting.append(connection.id)
                released.wait()  # blocks this handler's greenlet only
                connection.send("done " + data)


        worker.on_message = on_message
    """ % port)
    project.start(ports=[port])
    control = LineClient(port)
    clients = [LineClient(port) for _ in range(20)]
    for number, client in enumerate(clients):
        client.sock.sendall(b"wait%d\n" % number)  # a burst: no reply awaited in between
    wait_until(lambda: control.ask("count") == "waiting 20", message="20 handlers waiting")
    assert control.ask("release") == "released"
    for number, client in enumerate(clients):
        assert client.recvline() == "done wait%d" % number
        client.close()
    control.close()


# -- buffering: work per read proportional to the new bytes (sans socket) ------------


class UntilNewline:
    """A protocol whose input cannot tell a length before the package's last byte,
    and looks at that byte only (O(1)): what the connection costs shows alone."""

    seen = []

    @staticmethod
    def input(buffer, connection):
        UntilNewline.seen.append(buffer)
        return len(buffer) if buffer[-1:] == b"\n" else 0

    @staticmethod
    def decode(package, connection):
        assert type(package) is bytes
        return package

    @staticmethod
    def encode(data, connection):
        return data


def test_a_package_dribbled_a_byte_per_read_grows_one_buffer_in_place():
    """Before: each read joined the whole kept buffer with the new byte (a new bytes
    object per read: quadratic work for a package that arrives slowly)."""
    UntilNewline.seen = []
    connection = server_connection(protocol=UntilNewline)
    for _ in range(3000):
        connection._feed(b"x")
    connection._feed(b"\n")
    buffers = UntilNewline.seen[1:]          # the first read is handed over as it came
    assert len(buffers) == 3000 and len({id(buffer) for buffer in buffers}) == 1
    assert connection.messages == [b"x" * 3000 + b"\n"]
    assert not connection._recv_buffer


def test_many_packages_in_one_read_and_a_rest_kept_for_the_next():
    connection = server_connection(protocol=Frame)
    packages = [Frame.encode(b"%d" % number, None) for number in range(20000)]
    data = b"".join(packages)
    connection._feed(data + packages[0][:3])
    connection._feed(packages[0][3:] + packages[1][:1])
    connection._feed(packages[1][1:])
    assert connection.messages == [b"%d" % n for n in range(20000)] + [b"0", b"1"]
    assert all(type(message) is bytes for message in connection.messages)
    assert not connection._recv_buffer and connection._pending is None


def test_a_text_line_dribbled_a_byte_per_read_is_searched_in_its_new_bytes_only():
    connection = server_connection(protocol=Text)
    connection._feed(b"first\nx")
    kept = connection._recv_buffer
    for _ in range(3000):
        connection._feed(b"y")
    assert connection._recv_buffer is kept and len(kept) == 3001   # grown in place
    connection._feed(b"z\r\nlast\n")
    assert connection.messages == ["first", "x" + "y" * 3000 + "z", "last"]


def test_a_read_of_one_whole_line_is_cut_as_text_decode_cuts_it():
    """The one-line read is served apart (_core.py); each ending as Text.decode takes it."""
    for sent, line in [(b"a\n", "a"), (b"a\r\n", "a"), (b"a\r\r\n", "a"), (b"\r\n", ""),
                       (b"\n", ""), (b"\r\ra\r\n", "\r\ra"), (b"\xff\n", "\ufffd")]:
        connection = server_connection(protocol=Text)
        connection._feed(sent)
        assert connection.messages == [Text.decode(sent, None)] == [line], sent


def test_an_unfinished_text_line_is_still_bounded():
    connection = server_connection(protocol=Text, max_package_size=100)
    connection._feed(b"x" * 60)
    connection._feed(b"y" * 39)
    assert connection.state is State.ESTABLISHED
    connection._feed(b"z")
    assert connection.state is State.CLOSED and connection.messages == []


def test_a_package_of_known_length_dribbled_is_kept_in_one_buffer():
    """Before: a list with one bytes object per read (about 40 bytes each for 1-byte
    reads), joined at the end."""
    connection = server_connection(protocol=Frame)
    package = Frame.encode(b"y" * 5000, None)
    connection._feed(package[:10])
    kept = connection._pending
    for byte in package[10:-1]:
        connection._feed(bytes((byte,)))
    assert connection._pending is kept and type(kept) is bytearray
    assert len(kept) == len(package) - 1
    connection._feed(package[-1:] + package[:2])
    assert connection.messages == [b"y" * 5000] and connection._pending is None
    connection._feed(package[2:])
    assert connection.messages == [b"y" * 5000] * 2
