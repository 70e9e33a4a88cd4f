"""Bad input closes that connection, logs one line, and disturbs nothing else.

Every test runs one child (count = 1), so the connection that keeps being served
lives in the very process that just met the bad input. The log line is found by the
bad client's own port; its child is still the same process afterwards.
"""
import re
import socket

from conftest import LineClient, app_source, free_port, recv_exactly, wait_until

UDP_TIMEOUT = 10.0


def log_lines_about(project, client_port):
    pattern = re.compile(r"127\.0\.0\.1:%d\b" % client_port)
    return [line for line in project.log().splitlines() if pattern.search(line)]


def assert_closed_and_logged(project, client):
    """The server closed ``client`` and wrote exactly one log line about it."""
    client_port = client.sock.getsockname()[1]
    assert client.closed_by_peer(timeout=10), "server kept the connection open"
    wait_until(lambda: log_lines_about(project, client_port), message="a log line")
    lines = log_lines_about(project, client_port)
    assert len(lines) == 1, lines
    assert "Traceback" not in project.log(), project.log()
    return lines[0]


# -- text:// ---------------------------------------------------------------------

TEXT_SMALL = """
    from geventman import Worker

    worker = Worker("text://127.0.0.1:PORT")

    def on_connect(connection):
        connection.max_package_size = 64

    worker.on_connect = on_connect
    worker.on_message = lambda connection, data: connection.send("hello " + data)
"""


def start_text(project):
    port = free_port()
    project.app("small", app_source(TEXT_SMALL, port))
    project.start(ports=[port])
    return port, project.wait_children(1)


def test_text_line_over_max_package_size(project):
    port, children = start_text(project)
    with LineClient(port) as good, LineClient(port) as bad:
        assert good.ask("x" * 50) == "hello " + "x" * 50  # under the limit is fine
        assert bad.ask("tom") == "hello tom"
        bad.sendline("y" * 100)
        line = assert_closed_and_logged(project, bad)
        assert "bad package" in line
        assert good.ask("still there?") == "hello still there?"
    assert project.children() == children


def test_text_unterminated_line_reaching_max_package_size(project):
    port, children = start_text(project)
    with LineClient(port) as good, LineClient(port) as bad:
        bad.send("z" * 40)
        assert good.ask("first") == "hello first"
        bad.send("z" * 24)  # 64 bytes and still no newline
        assert_closed_and_logged(project, bad)
        assert good.ask("second") == "hello second"
    assert project.children() == children


# -- frame:// --------------------------------------------------------------------

FRAME_SMALL = """
    from geventman import Worker

    worker = Worker("frame://127.0.0.1:PORT")

    def on_connect(connection):
        connection.max_package_size = 1024

    worker.on_connect = on_connect
    worker.on_message = lambda connection, data: connection.send(b"hello " + data)
"""


def frame(payload, length=None):
    return (len(payload) + 4 if length is None else length).to_bytes(4, "big") + payload


def frame_ask(client, payload):
    client.send(frame(payload))
    answer = b"hello " + payload
    return recv_exactly(client.sock, len(answer) + 4) == frame(answer)


def start_frame(project):
    port = free_port()
    project.app("frames", app_source(FRAME_SMALL, port))
    project.start(ports=[port])
    return port, project.wait_children(1)


def test_frame_header_over_max_package_size(project):
    port, children = start_frame(project)
    with LineClient(port) as good, LineClient(port) as bad:
        assert frame_ask(good, b"a" * 1020)  # exactly max_package_size: accepted
        assert frame_ask(bad, b"tom")
        bad.send(frame(b"b" * 10, length=1025))  # announces one byte too many
        line = assert_closed_and_logged(project, bad)
        assert "1025" in line
        assert frame_ask(good, b"still there?")
    assert project.children() == children


def test_frame_header_of_four_gigabytes(project):
    port, children = start_frame(project)
    with LineClient(port) as good, LineClient(port) as bad:
        bad.send(b"\xff\xff\xff\xff")
        assert_closed_and_logged(project, bad)
        assert frame_ask(good, b"after")
    assert project.children() == children


def test_frame_header_below_four(project):
    port, children = start_frame(project)
    with LineClient(port) as good:
        for header in (3, 0):
            with LineClient(port) as bad:
                bad.send(frame(b"xyz", length=header))
                assert_closed_and_logged(project, bad)
            assert frame_ask(good, b"header %d" % header)
    assert project.children() == children


# -- a custom protocol that says "bad input" -------------------------------------

PICKY = """
    class Picky:
        \"\"\"Lines, but a line starting with "!" is bad (-1) and with "?" too (False).\"\"\"

        @staticmethod
        def input(buffer, connection):
            if buffer.startswith(b"!"):
                return -1
            if buffer.startswith(b"?"):
                return False
            return buffer.find(b"\\n") + 1

        @staticmethod
        def decode(buffer, connection):
            return buffer[:-1].decode()

        @staticmethod
        def encode(data, connection):
            return data.encode() + b"\\n"
"""

PICKY_START = """
    from geventman import Worker

    worker = Worker("picky://127.0.0.1:PORT")
    worker.on_message = lambda connection, data: connection.send("hello " + data)
"""


def test_custom_protocol_input_returns_negative_or_false(project):
    port = free_port()
    project.app("picky_app", app_source(PICKY_START, port), protocols__picky_py=PICKY)
    project.start(ports=[port])
    children = project.wait_children(1)
    with LineClient(port) as good:
        assert good.ask("tom") == "hello tom"
        for bad_line in ("!boom", "?huh"):
            with LineClient(port) as bad:
                assert bad.ask("fine") == "hello fine"
                bad.sendline(bad_line)
                assert_closed_and_logged(project, bad)
            assert good.ask("after " + bad_line) == "hello after " + bad_line
    assert project.children() == children


# -- udp: garbage datagrams are dropped ------------------------------------------

FRAME_UDP = """
    from geventman import Worker

    worker = Worker("frame://127.0.0.1:PORT")
    worker.transport = "udp"
    worker.on_message = lambda connection, data: connection.send(b"hello " + data)
"""

TEXT_UDP = """
    from geventman import Worker

    worker = Worker("text://127.0.0.1:PORT")
    worker.transport = "udp"
    worker.on_message = lambda connection, data: connection.send("hello " + data)
"""


class UdpClient:
    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(UDP_TIMEOUT)

    def send(self, datagram):
        self.sock.sendto(datagram, ("127.0.0.1", self.port))

    def ask(self, datagram):
        self.send(datagram)
        return self.sock.recvfrom(65535)[0]

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_udp_garbage_frames_are_dropped(project):
    port = free_port(socket.SOCK_DGRAM)
    project.app("frame_udp", app_source(FRAME_UDP, port))
    project.start()
    children = project.wait_children(1)
    garbage = [frame(b"xx", length=2),       # header below four
               frame(b"xyz", length=100),    # announces more than the datagram holds
               b"\x00\x00",                  # not even a header
               b"\xff\xff\xff\xffjunk"]
    with UdpClient(port) as client:
        assert client.ask(frame(b"tom")) == frame(b"hello tom")
        for datagram in garbage:
            client.send(datagram)
        # One child takes the datagrams off its socket in order, so an answer to any
        # of the garbage would arrive before this one.
        assert client.ask(frame(b"jerry")) == frame(b"hello jerry")
        client_port = client.sock.getsockname()[1]
    lines = wait_until(lambda: (lambda found: found if len(found) >= len(garbage) else None)(
        log_lines_about(project, client_port)), message="one log line per bad datagram")
    assert len(lines) == len(garbage), lines
    assert all("dropped" in line for line in lines), lines
    assert "Traceback" not in project.log()
    assert project.children() == children


def test_udp_text_datagram_without_newline_does_not_break_the_worker(project):
    port = free_port(socket.SOCK_DGRAM)
    project.app("text_udp", app_source(TEXT_UDP, port))
    project.start()
    children = project.wait_children(1)
    with UdpClient(port) as client:
        client.send(b"no newline here")
        assert client.ask(b"tom\n") == b"hello tom\n"
        client_port = client.sock.getsockname()[1]
    # A protocol that reads connection.max_package_size works on udp too (no
    # AttributeError traceback) and the worker keeps answering.
    assert "Traceback" not in project.log(), project.log()
    assert len(log_lines_about(project, client_port)) <= 1
    assert project.children() == children
