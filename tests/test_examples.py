"""The Worker-chapter examples of the Workerman 3.x manual, ported to geventman.

Each example is a real application (applications/<name>/start.py, written the way
the manual writes it, in Python) started with the project's start.py and driven by
a real socket client on loopback. The websocket:// and http:// examples belong to
the tests of those protocols; the Worker-chapter callback examples, which the
manual shows on websocket://, are run here on text:// as well.
"""
import json
import os
import re
import socket

from conftest import LineClient, app_source, free_port, recv_exactly, wait_until

UDP_TIMEOUT = 10.0


def recv_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed by server after %r" % data)
        data += chunk
    return data


def udp_ask(port, datagram, timeout=UDP_TIMEOUT):
    """One datagram out, one back. The master binds before forking, so a datagram
    sent while the child is still starting waits in the socket for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(datagram, ("127.0.0.1", port))
        data, address = sock.recvfrom(65535)
        assert address == ("127.0.0.1", port)
        return data


# -- 入门指引 / 简单的开发实例: 实例三, "直接使用TCP传输数据" ----------------------

TCP_ECHO = """
    from geventman import Worker

    # A worker on port PORT that uses no application protocol.
    tcp_worker = Worker("tcp://127.0.0.1:PORT")
    tcp_worker.count = 4

    def on_message(connection, data):
        # tcp:// hands the bytes as they came
        connection.send(b"hello " + data)

    tcp_worker.on_message = on_message
"""


def test_tcp_echo_tom(project):
    port = free_port()
    project.app("tcp_test", app_source(TCP_ECHO, port))
    project.start(ports=[port])
    project.wait_children(4)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"tom\r\n")  # what telnet sends
        assert recv_exactly(sock, len(b"hello tom\r\n")) == b"hello tom\r\n"
        sock.sendall(b"jerry\r\n")
        assert recv_exactly(sock, len(b"hello jerry\r\n")) == b"hello jerry\r\n"


TEXT_ECHO = """
    from geventman import Worker

    text_worker = Worker("text://127.0.0.1:PORT")
    text_worker.count = 4
    text_worker.on_message = lambda connection, data: connection.send("hello " + data)
"""


def test_text_echo_tom(project):
    port = free_port()
    project.app("text_test", app_source(TEXT_ECHO, port))
    project.start(ports=[port])
    with LineClient(port) as client:
        assert client.ask("tom") == "hello tom"
        client.send("tom\r\n")  # telnet's line end is stripped
        assert client.recvline() == "hello tom"
        client.send("a\nb\nc")  # several lines in one segment, the last one split
        assert client.recvline() == "hello a"
        assert client.recvline() == "hello b"
        client.send("d\n")
        assert client.recvline() == "hello cd"


# -- 开发流程 / 基本流程: the SimpleChat example (telnet://, one process) -------------

SIMPLE_CHAT = """
    from geventman import Worker

    global_uid = 0
    connections_array = {}

    # A client connects: give it a uid and keep the connection.
    def handler_connection(connection):
        global global_uid
        global_uid += 1
        connection.uid = global_uid
        connections_array[connection.uid] = connection

    # A client says something: forward it to everybody.
    def handle_message(connection, data):
        for conn in list(connections_array.values()):
            conn.send("user[%s] said: %s" % (connection.uid, data))

    # A client leaves: forget its connection.
    def handle_close(connection):
        del connections_array[connection.uid]

    # A telnet (text) worker on port PORT.
    telnet_worker = Worker("telnet://127.0.0.1:PORT")
    # One process only, so that the clients can reach each other.
    telnet_worker.count = 1

    telnet_worker.on_connect = handler_connection
    telnet_worker.on_message = handle_message
    telnet_worker.on_close = handle_close
"""


def uid_of(said):
    return int(re.match(r"user\[(\d+)\]", said).group(1))


def test_simple_chat_broadcasts_to_every_connection(project):
    port = free_port()
    project.app("SimpleChat", app_source(SIMPLE_CHAT, port))
    project.start(ports=[port])  # its probe connection takes a uid too
    with LineClient(port) as alice:
        said = alice.ask("hi")
        assert re.fullmatch(r"user\[\d+\] said: hi", said), said
        a = uid_of(said)
        with LineClient(port) as bob:
            said = bob.ask("yo")
            b = uid_of(said)
            assert b > a and said == "user[%d] said: yo" % b
            assert alice.recvline() == said
            with LineClient(port) as carol:
                carol.send("hey all\r\n")
                said = carol.recvline()
                c = uid_of(said)
                assert c > b and said == "user[%d] said: hey all" % c
                assert alice.recvline() == said
                assert bob.recvline() == said
                bob.close()
                assert alice.ask("bob left?") == "user[%d] said: bob left?" % a
                assert carol.recvline() == "user[%d] said: bob left?" % a
                assert carol.ask("bye") == "user[%d] said: bye" % c
                assert alice.recvline() == "user[%d] said: bye" % c
    # handle_close ran for bob: no exception about a missing uid (KeyError) was logged
    assert "Traceback" not in project.log()


# -- 定制通讯协议 / 如何定制协议: JsonNL in applications/MyApp/protocols/jsonnl.py ----

JSONNL = """
    import json
    import os

    # Who imported this module (the test checks the master never does).
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "imported_by"), "a") as f:
        f.write("%d\\n" % os.getpid())


    class JsonNL:
        @staticmethod
        def input(buffer):
            \"\"\"Check whether a whole package arrived: its length in the buffer if the
            length is known, else 0 to wait for more data.\"\"\"
            # where the newline is
            pos = buffer.find(b"\\n")
            # no newline: the package length is unknown, wait for more data
            if pos < 0:
                return 0
            # a newline: the package length, newline included
            return pos + 1

        @staticmethod
        def encode(buffer):
            \"\"\"Pack what is sent: JSON, then a newline that ends the package.\"\"\"
            return json.dumps(buffer) + "\\n"

        @staticmethod
        def decode(buffer):
            \"\"\"Unpack a whole package (input() gave its length) for on_message.\"\"\"
            # drop the newline, back to a dict
            return json.loads(buffer.strip())
"""

JSONNL_START = """
    from geventman import Worker

    json_worker = Worker("JsonNL://127.0.0.1:PORT")
    json_worker.count = 2

    def on_message(connection, data):
        connection.send({"type": "reply", "echo": data, "kind": type(data).__name__})

    json_worker.on_message = on_message
"""


def imported_by(project):
    path = project.path("applications", "MyApp", "protocols", "imported_by")
    try:
        with open(path) as handle:
            return {int(line) for line in handle if line.strip()}
    except OSError:
        return set()


def test_jsonnl_custom_protocol(project):
    port = free_port()
    project.app("MyApp", app_source(JSONNL_START, port), protocols__jsonnl_py=JSONNL)
    project.start(ports=[port])
    request = {"type": "message", "content": "hello"}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b'{"type":"message","content":"hello"}\n')
        assert json.loads(recv_line(sock)) == {"type": "reply", "echo": request,
                                               "kind": "dict"}
        # two packages in one write, then one package in two writes
        sock.sendall(b'{"n": 1}\n{"n": 2}\n{"n"')
        assert json.loads(recv_line(sock))["echo"] == {"n": 1}
        assert json.loads(recv_line(sock))["echo"] == {"n": 2}
        sock.sendall(b': 3}\n')
        assert json.loads(recv_line(sock))["echo"] == {"n": 3}

    master = project.master_pid()
    children = project.wait_children(2)
    # Every child imports the protocol when it starts; the master never does.
    wait_until(lambda: set(children) <= imported_by(project), message="children import jsonnl")
    assert master not in imported_by(project)
    assert imported_by(project) == set(children)


# -- udp:// and frame://, and text:// with transport = 'udp' ----------------------

UDP_ECHO = """
    from geventman import Worker

    udp_worker = Worker("udp://127.0.0.1:PORT")
    udp_worker.count = 2

    def on_message(connection, data):
        connection.send(b"hello " + data)

    udp_worker.on_message = on_message
"""


def test_udp_echo(project):
    port = free_port(socket.SOCK_DGRAM)
    project.app("udp_test", app_source(UDP_ECHO, port))
    project.start()
    assert udp_ask(port, b"tom") == b"hello tom"
    assert udp_ask(port, b"tom\njerry\n") == b"hello tom\njerry\n"  # one datagram, one message


FRAME_ECHO = """
    from geventman import Worker

    frame_worker = Worker("frame://127.0.0.1:PORT")
    frame_worker.count = 2

    def on_message(connection, data):
        connection.send(b"hello " + data)

    frame_worker.on_message = on_message
"""


def test_frame_echo(project):
    port = free_port()
    project.app("frame_test", app_source(FRAME_ECHO, port))
    project.start(ports=[port])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x00\x00\x00\x09jhdxr")
        assert recv_exactly(sock, 15) == b"\x00\x00\x00\x0fhello jhdxr"
        # a frame split inside its header and its payload, then two frames at once
        for piece in (b"\x00\x00", b"\x00\x07t", b"om"):
            sock.sendall(piece)
        assert recv_exactly(sock, 13) == b"\x00\x00\x00\x0dhello tom"
        sock.sendall(b"\x00\x00\x00\x05a\x00\x00\x00\x04")
        assert recv_exactly(sock, 11) == b"\x00\x00\x00\x0bhello a"
        assert recv_exactly(sock, 10) == b"\x00\x00\x00\x0ahello "
        payload = os.urandom(200000)
        sock.sendall((len(payload) + 4).to_bytes(4, "big") + payload)
        assert recv_exactly(sock, len(payload) + 10) == (
            (len(payload) + 10).to_bytes(4, "big") + b"hello " + payload)


FRAME_UDP = """
    from geventman import Worker

    frame_worker = Worker("frame://127.0.0.1:PORT")
    frame_worker.transport = "udp"

    def on_message(connection, data):
        connection.send(b"hello " + data)

    frame_worker.on_message = on_message
"""


def test_frame_over_udp(project):
    port = free_port(socket.SOCK_DGRAM)
    project.app("frame_udp", app_source(FRAME_UDP, port))
    project.start()
    assert udp_ask(port, b"\x00\x00\x00\x09jhdxr") == b"\x00\x00\x00\x0fhello jhdxr"


TEXT_UDP = """
    from geventman import Worker

    # The same business code; only the transport changes (one attribute).
    text_worker = Worker("text://127.0.0.1:PORT")
    text_worker.transport = "udp"
    text_worker.count = 2
    text_worker.on_message = lambda connection, data: connection.send("hello " + data)
"""


def test_text_over_udp(project):
    port = free_port(socket.SOCK_DGRAM)
    project.app("text_udp", app_source(TEXT_UDP, port))
    project.start()
    assert udp_ask(port, b"tom\n") == b"hello tom\n"
    assert udp_ask(port, b"jerry\r\n") == b"hello jerry\n"
    # Nothing listens on TCP: the transport really is udp.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# -- 基于Worker开发 / Worker类的回调接口 and Connection类提供的接口 ------------------
# The manual shows these on websocket://8484; here on text:// so that they run
# without the websocket protocol.

CALLBACKS = """
    from geventman import Worker

    worker = Worker("text://127.0.0.1:PORT")

    def on_worker_start(worker):
        print("Worker starting...", flush=True)

    def on_worker_stop(worker):
        print("Worker stopping...", flush=True)

    def on_connect(connection):
        print("new connection from address " +
              connection.get_remote_ip() + ":" + str(connection.get_remote_port()), flush=True)

    def on_message(connection, data):
        if data == "quit":
            connection.close("bye")
        else:
            connection.send("receive success")

    def on_close(connection):
        print("connection closed", flush=True)

    worker.on_worker_start = on_worker_start
    worker.on_worker_stop = on_worker_stop
    worker.on_connect = on_connect
    worker.on_message = on_message
    worker.on_close = on_close
"""


def test_worker_chapter_callbacks(project):
    port = free_port()
    project.app("callbacks", app_source(CALLBACKS, port))
    process = project.start(ports=[port])
    with LineClient(port) as client:
        local_port = client.sock.getsockname()[1]
        assert client.ask("hello") == "receive success"
        assert client.ask("quit") == "bye"
        assert client.closed_by_peer()
    assert project.stop().returncode == 0
    output = project.foreground_output()
    lines = output.splitlines()
    for expected in ("Worker starting...",
                     "new connection from address 127.0.0.1:%d" % local_port,
                     "connection closed", "Worker stopping..."):
        assert expected in lines, output
    order = [lines.index(line) for line in ("Worker starting...", "connection closed",
                                            "Worker stopping...")]
    assert order == sorted(order), output


def test_unknown_scheme_fails_the_start(project):
    project.app("typo", """
        from geventman import Worker
        worker = Worker("jsonlm://127.0.0.1:%d")
    """ % free_port())
    result = project.command("start", "-d")
    assert result.returncode == 1
    assert "no protocol 'jsonlm'" in result.stdout
    assert project.master_pid() is None
