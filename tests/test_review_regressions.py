"""Regressions found by a review of the core runtime: each test failed before its fix.

The apps here are text:// workers with count = 1 (one process, one runner pool);
a connection that stopped being served shows as a read that times out (LineClient,
5 s), so every check is bounded.
"""
import os
import signal
import shutil
import socket

from conftest import LineClient, free_port, wait_until
from test_tls import certificate  # noqa: F401  (a fixture)

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
    with welcomed(port), welcomed(port) as client:
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
    with welcomed(port), welcomed(port) as client:
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
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    wait_until(failures, message="accept failing for want of descriptors")
    for client in clients:
        client.close()
    wait_until(lambda: LineClient(port, timeout=1).ask("ping") == "ok ping", timeout=15,
               message="accepting again once descriptors are free")
    assert failures() < 50, "%d accept failures logged" % failures()
