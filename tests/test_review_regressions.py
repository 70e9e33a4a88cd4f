"""Regressions found by a review of the core runtime: each test failed before its fix.

The apps are small text:// workers with one process (one runner pool). A connection
that stopped being served shows as a read that times out (LineClient: 5 s; the test
backends: 10 s), so every check is bounded.
"""
import os
import signal
import shutil
import socket
import struct

from conftest import LineClient, free_port, wait_until
import test_tls

certificate = test_tls.certificate  # the fixture, shared

RUNNER_APP = """
    import gevent
    from geventman import Worker

    worker = Worker("text://127.0.0.1:PORT")
    worker.count = 1
    armed = []


    def on_connect(connection):
        if armed:  # on_connect "ends its greenlet": the connection is still served
            armed.pop()
            raise gevent.GreenletExit
        connection.send("welcome")


    def on_message(connection, data):
        if data == "kill":
            # Kill the runner serving this handler: the kill lands once the handler
            # has returned and the runner waits in the pool for its next task.
            gevent.kill(gevent.getcurrent())
        elif data == "timeout":
            with gevent.Timeout(0.01):  # a Timeout of its own that the handler lets out
                gevent.sleep(5)
        elif data == "exit":
            raise gevent.GreenletExit
        elif data == "arm":
            armed.append(True)  # the next on_connect raises GreenletExit
        elif data.startswith("pause"):
            # Back-pressure: pause after each line, resume soon, from another greenlet.
            connection.pause_recv()
            gevent.spawn_later(0.001, connection.resume_recv)
        connection.send("ok " + data)


    worker.on_connect = on_connect
    worker.on_message = on_message
"""


def runner_app(project, extra=""):
    port = free_port()
    project.app("runners", RUNNER_APP.replace("PORT", str(port)) + extra)
    project.start(ports=[port])
    return port


def answers(port):
    """True if a new connection gets its ping answered within a second."""
    try:
        with LineClient(port, timeout=1) as client:
            return client.ask("ping") == "ok ping"
    except OSError:
        return False


def welcomed(port):
    client = LineClient(port)
    assert client.recvline() == "welcome"
    return client


def test_greenlet_exit_from_on_connect_leaves_the_connection_served(project):
    port = runner_app(project)
    with welcomed(port) as client:
        assert client.ask("arm") == "ok arm"
        with LineClient(port) as unwelcomed:
            assert unwelcomed.ask("ping") == "ok ping"


def test_a_handler_that_kills_its_runner_does_not_break_the_pool(project):
    port = runner_app(project)
    with welcomed(port) as first, welcomed(port) as client:
        assert client.ask("kill") == "ok kill"
        # Before the fix the killed runner stayed in the idle pool, dead: the next
        # wake-up was handed to it and silently dropped, and that connection hung.
        for attempt in range(3):
            assert client.ask("ping %d" % attempt) == "ok ping %d" % attempt
            with welcomed(port) as other:
                assert other.ask("other %d" % attempt) == "ok other %d" % attempt
        assert first.ask("first") == "ok first"


def test_timeout_or_greenlet_exit_out_of_on_message_is_counted_and_survived(project):
    port = runner_app(project)
    with welcomed(port) as client:
        client.sendline("timeout")  # no answer: the handler raised before its send
        assert client.ask("after timeout") == "ok after timeout"
        client.sendline("exit")
        assert client.ask("after exit") == "ok after exit"
    wait_until(lambda: "Timeout" in project.log(), message="the Timeout logged")
    [row] = project.status_json()["processes"]
    assert row["throw_exception"] == 2


def test_paused_text_lines_are_not_taken_for_one_oversized_package(project):
    # Many short lines arrive in one read; the handler pauses after each. The lines
    # still waiting are complete packages, not one line over max_package_size.
    port = runner_app(project, """
    from geventman.connection import TcpConnection
    TcpConnection.default_max_package_size = 1024
""")
    lines = ["pause %04d" % n for n in range(300)]  # 3,300 bytes in one send
    with welcomed(port) as client:
        client.send("".join(line + "\n" for line in lines))
        assert [client.recvline() for _ in lines] == ["ok " + line for line in lines]
    assert "bad package" not in project.log()


def test_tls_reconnect_sends_what_was_queued_while_connecting(project, certificate):
    # send() between reconnect() and the new handshake used to go through the old
    # session's TLS object: the new session then carried old ciphertext as plaintext.
    port, relay_port = free_port(), free_port()
    cert, key = certificate
    project.app("secure", """
        from geventman import Worker
        from geventman.connection import AsyncTcpConnection

        worker = Worker("text://127.0.0.1:%(port)d", context={"ssl": {
            "local_cert": %(cert)r, "local_pk": %(key)r}})
        worker.transport = "ssl"
        worker.on_message = lambda connection, data: connection.send("hello " + data)

        relay = Worker("text://127.0.0.1:%(relay_port)d")


        def ask(connection, data):
            upstream = AsyncTcpConnection("text://127.0.0.1:%(port)d",
                                          {"ssl": {"verify_peer": False}})
            upstream.transport = "ssl"

            def answered(up, answer):
                if answer == "hello first":
                    up.reconnect()
                    up.send("second")  # queued until the new handshake is done
                else:
                    connection.send(answer)
                    up.close()

            upstream.on_message = answered
            upstream.send("first")
            upstream.connect()

        relay.on_message = ask
    """ % dict(port=port, relay_port=relay_port, cert=cert, key=key))
    project.start(ports=[port, relay_port])
    with LineClient(relay_port) as client:
        assert client.ask("go") == "hello second"


def test_reconnect_from_on_message_starts_with_an_empty_buffer(project):
    # The backend ends a line and starts another in one write; the handler of the
    # first line reconnects. The unfinished line belonged to the old link: it used
    # to be kept and glued in front of the new link's first line.
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(8)
    backend.settimeout(10)
    project.app("link", """
        from geventman import Worker
        from geventman.connection import AsyncTcpConnection

        worker = Worker()


        def on_message(link, data):
            if data == "bye":
                link.reconnect()
            else:
                link.send("echo " + data)


        def on_worker_start(worker):
            worker.link = AsyncTcpConnection("text://127.0.0.1:%d")
            worker.link.on_message = on_message
            worker.link.connect()


        worker.on_worker_start = on_worker_start
    """ % backend.getsockname()[1])
    project.start()
    try:
        first, _ = backend.accept()
        first.sendall(b"bye\npartial line of the old link")
        second, _ = backend.accept()
        second.settimeout(10)
        second.sendall(b"hello\n")
        reader = second.makefile("rb")
        assert reader.readline() == b"echo hello\n"
        first.close()
        second.close()
    finally:
        backend.close()


def test_a_status_file_that_cannot_be_written_does_not_stop_the_master(project):
    # Two status commands at once clear each other's files; a full disk fails the
    # write. Either used to raise out of the master's loop and end the master.
    port = runner_app(project)
    master = project.master_pid()
    shutil.rmtree(project.pid_file + ".status")
    os.kill(master, signal.SIGUSR2)  # what `status` sends, with nowhere to write
    wait_until(lambda: "cannot write" in project.log(), message="the failed write logged")
    assert project.master_pid() == master
    assert [row["pid"] for row in project.status_json()["processes"]] == project.children()
    with welcomed(port) as client:
        assert client.ask("ping") == "ok ping"


def test_out_of_descriptors_pauses_accepting_instead_of_spinning(project):
    # EMFILE leaves the listening socket readable: a watcher left on called accept
    # (and log) in a tight loop, thousands of lines a second, until a descriptor freed.
    port = free_port()
    project.app("tight", """
        import os
        import resource

        from geventman import Worker

        worker = Worker("text://127.0.0.1:%d")
        worker.on_message = lambda connection, data: connection.send("ok " + data)


        def on_worker_start(worker):
            highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 4, hard))


        worker.on_worker_start = on_worker_start
    """ % port)
    project.start(ports=[port])
    failures = lambda: project.foreground_output().count("accept on")  # noqa: E731
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
    wait_until(failures, message="accept failing for want of descriptors")
    for client in clients:
        client.close()
    wait_until(lambda: answers(port), message="accepting again once descriptors are free")
    assert failures() < 50, "%d accept failures logged" % failures()


def test_on_close_runs_once_when_the_protocols_last_words_fail(project):
    # close() lets the protocol send its last words (before_close, e.g. a WebSocket
    # close frame). When that send failed on a reset peer it destroyed the
    # connection, and close() then destroyed it again: on_close ran twice.
    port = free_port()
    project.app("polite", """
        from geventman import Worker
        from geventman.protocols import register
        from geventman.protocols.text import Text


        class Polite(Text):
            @staticmethod
            def before_close(connection):
                connection.send("bye")


        register("polite", Polite)
        worker = Worker("polite://127.0.0.1:%d")
        closes = []


        def on_message(connection, data):
            command, _, argument = data.partition(" ")
            target = worker.connections[int(argument)]
            if command == "pause":  # so the server does not read the reset itself
                target.pause_recv()
                connection.send("paused")
            elif command == "close":
                target.close()
                connection.send("closes " + str(closes.count(target.id)))


        worker.on_connect = lambda connection: connection.send("welcome " + str(connection.id))
        worker.on_message = on_message
        worker.on_close = lambda connection: closes.append(connection.id)
    """ % port)
    project.start(ports=[port])
    with LineClient(port) as control, LineClient(port) as victim:
        control.recvline()
        victim_id = int(victim.recvline().split()[1])
        assert control.ask("pause %d" % victim_id) == "paused"
        victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()  # a reset: the server's next send to it fails
        assert control.ask("close %d" % victim_id) == "closes 1"


def test_start_d_reports_why_an_application_failed_to_load(project):
    # Detached, stderr is /dev/null and the log is not set up yet while the
    # applications load: the launcher only said the daemon exited, never why.
    project.app("broken", """
        raise RuntimeError("broken-app-marker")
    """)
    result = project.start_daemon()
    assert result.returncode == 1
    assert "RuntimeError: broken-app-marker" in result.stdout, result.stdout
    assert project.master_pid() is None


def test_reconnect_resolves_the_host_name_again(project):
    # A link made by name reconnected to the address of its first connection, so a
    # backend that moved (DNS failover) was never found. The app's resolver moves
    # "backend.test" from 127.0.0.1 to 127.0.0.2 after the first lookup.
    old, new = socket.socket(), socket.socket()
    old.bind(("127.0.0.1", 0))
    port = old.getsockname()[1]
    new.bind(("127.0.0.2", port))
    for backend in (old, new):
        backend.listen(8)
        backend.settimeout(10)
    project.app("link", """
        import socket

        import gevent.socket
        from geventman import Worker
        from geventman.connection import AsyncTcpConnection

        worker = Worker()
        lookups = []
        real_getaddrinfo = gevent.socket.getaddrinfo


        def getaddrinfo(host, port, *args):
            if host == "backend.test":
                lookups.append(host)
                host = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
            return real_getaddrinfo(host, port, *args)


        gevent.socket.getaddrinfo = getaddrinfo


        def on_worker_start(worker):
            worker.link = AsyncTcpConnection("text://backend.test:%d")
            worker.link.on_connect = lambda link: link.send("hello")
            worker.link.on_close = lambda link: link.reconnect(0.1)
            worker.link.connect()


        worker.on_worker_start = on_worker_start
    """ % port)
    project.start()
    try:
        first, _ = old.accept()
        first.close()  # the link reconnects, to where the name points now
        second, _ = new.accept()
        second.settimeout(10)
        assert second.makefile("rb").readline() == b"hello\n"
        second.close()
    finally:
        old.close()
        new.close()


def test_pause_recv_holds_a_wake_up_that_was_already_queued(project):
    # Two connections become readable in one turn of the loop, so both wake-ups are
    # queued before either runs. The first handler pauses the other connection; its
    # queued wake-up used to read and deliver anyway (tcp:// has no per-line check).
    port = free_port()
    project.app("pausing", """
        import gevent
        from gevent import monkey

        from geventman import Worker

        block = monkey.get_original("time", "sleep")
        worker = Worker("tcp://127.0.0.1:%d")
        worker.count = 1
        paused = set()
        racers = set()


        def on_message(connection, data):
            if data == b"block":
                connection.send(b"blocking")
                block(0.5)  # the whole process: both peers' data waits in the kernel
            elif data == b"go" and len(racers) == 2:
                racers.discard(connection)
                other = racers.pop()  # the racer whose wake-up is queued behind ours
                other.pause_recv()
                paused.add(other)
                gevent.spawn_later(0.3, resume, other)
                connection.send(b"first")
            else:
                if data == b"warm":
                    racers.add(connection)
                connection.send(b"early" if connection in paused else b"late")


        def resume(connection):
            paused.discard(connection)
            connection.resume_recv()


        worker.on_message = on_message
    """ % port)
    project.start(ports=[port])
    racers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    blocker = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        for racer in racers:
            racer.sendall(b"warm")
            assert racer.recv(64) == b"late"
        blocker.sendall(b"block")
        assert blocker.recv(64) == b"blocking"
        for racer in racers:
            racer.sendall(b"go")
        answers = sorted(racer.recv(64) for racer in racers)
        assert answers == [b"first", b"late"]
    finally:
        for sock in racers + [blocker]:
            sock.close()
