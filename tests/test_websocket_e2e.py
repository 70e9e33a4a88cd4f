"""websocket:// and ws:// end to end: real processes started with start.py, real
clients (websocket-client, websockets, a raw socket client) on 127.0.0.1."""
import socket
import struct
import threading

import pytest
import websocket as websocket_client          # websocket-client
from websockets.sync.client import connect as websockets_connect

from conftest import LineClient, free_port, wait_until
from websocket_support import RawClient, close_code

HELLO_APP = """
    from geventman import Worker

    worker = Worker("websocket://127.0.0.1:%d")
    worker.count = 2
    worker.on_message = lambda connection, data: connection.send("hello " + data)
"""

ECHO_APP = """
    import json
    from geventman import Worker
    from geventman.protocols import websocket

    worker = Worker("websocket://127.0.0.1:%d")
    worker.count = 1
    pings = []

    def on_connect(connection):
        connection.max_package_size = 32 << 20
        connection.max_send_buffer_size = 64 << 20
        connection.send("welcome")                # before the handshake: queued

    def on_websocket_connect(connection, request):
        if request.path == "/private":
            return connection.close()
        if "chat" in request.header("sec-websocket-protocol", ""):
            connection.headers = {"Sec-WebSocket-Protocol": "chat"}
        connection.user = request.get.get("user", "") + "/" + request.cookie.get("sid", "")

    def on_message(connection, data):
        if data == "whoami":
            return connection.send(connection.user)
        if data == "pings":
            return connection.send(pings)
        if data == "kick":
            return websocket.close(connection, 4000, "kicked")
        connection.send(data)

    worker.on_connect = on_connect
    worker.on_websocket_connect = on_websocket_connect
    worker.on_websocket_ping = lambda connection, data: pings.append(data.decode())
    worker.on_message = on_message
"""


@pytest.fixture
def echo(project):
    port = free_port()
    project.app("echo", ECHO_APP % port)
    project.start(ports=[port])
    yield port
    assert "Traceback" not in project.log()


def connect_ws(port, path="/", **options):
    ws = websocket_client.create_connection("ws://127.0.0.1:%d%s" % (port, path),
                                            timeout=10, **options)
    assert ws.recv() == "welcome"
    return ws


def test_manual_example_hello_tom(project):
    port = free_port()
    project.app("hello", HELLO_APP % port)
    project.start(ports=[port])
    ws = websocket_client.create_connection("ws://127.0.0.1:%d" % port, timeout=10)
    ws.send("tom")
    assert ws.recv() == "hello tom"
    ws.close()
    with websockets_connect("ws://127.0.0.1:%d/" % port, open_timeout=10) as ws:
        ws.send("tom")
        assert ws.recv(timeout=10) == "hello tom"
    result = project.stop()
    assert result.returncode == 0


def test_text_binary_json_and_big_messages(echo):
    ws = connect_ws(echo)
    ws.send("héllo")
    assert ws.recv() == "héllo"
    ws.send_binary(b"\x00\x01\xff")
    opcode, data = ws.recv_data()
    assert opcode == websocket_client.ABNF.OPCODE_BINARY and data == b"\x00\x01\xff"
    big = "x" * (5 << 20)
    ws.send(big)
    assert ws.recv() == big
    ws.close()


def test_fragmented_message_with_a_ping_between_fragments(echo):
    with RawClient(echo) as client:
        assert client.recv_frame() == (0x81, b"welcome")
        client.send(0x01, "frag")
        client.send(0x89, "mid")
        client.send(0x00, "men")
        client.send(0x80, "ted")
        assert client.recv_frame() == (0x8A, b"mid")
        assert client.recv_frame() == (0x81, b"fragmented")
        assert client.ask("pings") == '["mid"]'


def test_ping_pong_with_websocket_client(echo):
    ws = connect_ws(echo)
    ws.ping("are you there")
    frame = ws.recv_frame()
    assert frame.opcode == websocket_client.ABNF.OPCODE_PONG
    assert frame.data == b"are you there"
    ws.close()


@pytest.mark.parametrize("bad, code", [
    (struct.pack("!BB", 0x81, 5) + b"hello", 1002),                 # unmasked
    (b"\x89\xfe\x00\x7e" + b"\x00" * 4 + b"x" * 126, 1002),          # ping of 126 bytes
    (b"\xc1\x81" + b"\x00" * 4 + b"x", 1002),                        # RSV1 without deflate
    (b"\x83\x81" + b"\x00" * 4 + b"x", 1002),                        # opcode 3
    (b"\x81\x81" + b"\x00" * 4 + b"\xff", 1007),                     # invalid UTF-8
])
def test_bad_frames_close_that_connection_only(echo, project, bad, code):
    with RawClient(echo) as victim, RawClient(echo) as other:
        victim.recv_frame()
        other.recv_frame()
        assert other.ask("before") == "before"
        victim.send_raw(bad)
        first, payload = victim.recv_frame()
        assert first == 0x88 and close_code(payload) == code
        assert victim.closed_by_peer()
        assert other.ask("after") == "after"
    wait_until(lambda: "closing with %d" % code in project.log(), message="log line")


def test_message_over_max_package_size_gets_1009(project):
    port = free_port()
    project.app("small", """
        from geventman import Worker
        worker = Worker("websocket://127.0.0.1:%d")
        worker.on_connect = lambda connection: setattr(connection, "max_package_size", 1000)
        worker.on_message = lambda connection, data: connection.send(data)
    """ % port)
    project.start(ports=[port])
    ws = websocket_client.create_connection("ws://127.0.0.1:%d" % port, timeout=10)
    ws.send("x" * 900)
    assert ws.recv() == "x" * 900
    ws.send("x" * 2000)
    frame = ws.recv_frame()
    assert frame.opcode == websocket_client.ABNF.OPCODE_CLOSE
    assert close_code(frame.data) == 1009


def test_on_websocket_connect_sees_query_and_cookie_and_sets_subprotocol(echo):
    ws = connect_ws(echo, "/room?user=tom", cookie="sid=s1", subprotocols=["chat"])
    assert ws.getsubprotocol() == "chat"
    ws.send("whoami")
    assert ws.recv() == "tom/s1"
    ws.close()


def test_on_websocket_connect_may_refuse(echo):
    with pytest.raises(websocket_client.WebSocketBadStatusException) as refused:
        websocket_client.create_connection("ws://127.0.0.1:%d/private" % echo, timeout=10)
    assert refused.value.status_code == 403


def test_plain_browser_get_and_bad_handshake(echo):
    with socket.create_connection(("127.0.0.1", echo), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        page = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            page += chunk
    assert page.startswith(b"HTTP/1.1 200 OK") and b"<!doctype html>" in page
    with LineClient(echo) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert client.recvline().startswith("HTTP/1.1 400 ")
        assert client.closed_by_peer()


def test_server_close_code_reaches_the_client(echo):
    ws = connect_ws(echo)
    ws.send("kick")
    frame = ws.recv_frame()
    assert frame.opcode == websocket_client.ABNF.OPCODE_CLOSE
    assert close_code(frame.data) == 4000 and frame.data[2:] == b"kicked"


def test_deflate_with_the_websockets_client(echo):
    with websockets_connect("ws://127.0.0.1:%d/" % echo, open_timeout=10) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert ws.recv(timeout=10) == "welcome"
        text = "compress me " * 10000
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(b"\x00" * 100000)
        assert ws.recv(timeout=10) == b"\x00" * 100000


def test_a_big_message_does_not_hold_up_other_connections(echo):
    """One client is half-way through uploading 24 MiB, then does not read its 24 MiB
    echo; another client is served all along."""
    from websocket_support import frame
    heavy, light = RawClient(echo, timeout=30), RawClient(echo)
    heavy.recv_frame()
    light.recv_frame()
    data = frame(0x82, bytes(24 << 20))
    heavy.send_raw(data[:len(data) // 2])          # the server waits for the rest
    for index in range(5):
        assert light.ask("during upload %d" % index) == "during upload %d" % index
    sender = threading.Thread(target=heavy.send_raw, args=(data[len(data) // 2:],),
                              daemon=True)
    sender.start()                                 # the echo fills the socket buffers
    for index in range(5):
        assert light.ask("during echo %d" % index) == "during echo %d" % index
    first, payload = heavy.recv_frame()
    sender.join(30)
    assert first == 0x82 and payload == bytes(24 << 20)
    heavy.close()
    light.close()


RELAY_APP = """
    from geventman import Worker
    from geventman.connection import AsyncTcpConnection

    server = Worker("websocket://127.0.0.1:%(ws)d")
    server.name = "wsserver"

    def on_server_message(connection, data):
        if data == "kick":
            return connection.close()
        connection.send("hello " + data)

    server.on_message = on_server_message

    relay = Worker("text://127.0.0.1:%(text)d")
    relay.name = "relay"

    def on_connect(connection):
        upstream = AsyncTcpConnection("ws://127.0.0.1:%(ws)d/relay?from=text")
        upstream.websocket_ping_interval = 0.2
        upstream.opened = 0

        def on_websocket_connect(ws, response):
            ws.opened += 1
            connection.send("opened %%d %%d" %% (ws.opened, response.status))

        def on_close(ws):
            if connection.state.name == "ESTABLISHED":
                ws.reconnect(0.1)

        upstream.on_websocket_connect = on_websocket_connect
        upstream.on_message = lambda ws, data: connection.send(data)
        upstream.on_close = on_close
        upstream.connect()
        connection.upstream = upstream

    def on_message(connection, line):
        connection.upstream.send(line)

    def on_close(connection):
        connection.upstream.close()

    relay.on_connect = on_connect
    relay.on_message = on_message
    relay.on_close = on_close
"""


def test_ws_client_relays_and_reconnects(project):
    ws_port, text_port = free_port(), free_port()
    project.app("relay", RELAY_APP % {"ws": ws_port, "text": text_port})
    project.start(ports=[ws_port, text_port])
    with LineClient(text_port, timeout=10) as client:
        client.sendline("tom")          # sent before the ws handshake completes: queued
        assert client.recvline() == "opened 1 101"
        assert client.recvline() == "hello tom"
        client.sendline("kick")         # the server closes; the client reconnects
        assert client.recvline() == "opened 2 101"
        assert client.ask("jerry") == "hello jerry"
    assert "Traceback" not in project.log()


def test_ws_client_sends_periodic_pings(project):
    port = free_port()
    project.app("pinged", """
        from geventman import Worker
        from geventman.connection import AsyncTcpConnection
        from geventman.log import log

        server = Worker("websocket://127.0.0.1:%d")
        server.on_websocket_ping = lambda connection, data: connection.send("pinged")

        probe = Worker()
        def on_worker_start(worker):
            client = AsyncTcpConnection("ws://127.0.0.1:%d/")
            client.websocket_ping_interval = 0.1
            client.on_message = lambda connection, data: log("client got " + data)
            client.connect()
        probe.on_worker_start = on_worker_start
    """ % (port, port))
    project.start(ports=[port])
    wait_until(lambda: project.log().count("client got pinged") >= 3, message="3 pings")


def test_http_worker_accepts_a_websocket_upgrade(project):
    """As in Workerman, an http:// worker takes WebSocket upgrades on the same port."""
    import urllib.request
    port = free_port()
    project.app("both", """
        from geventman import Worker

        worker = Worker("http://127.0.0.1:%d")

        def on_websocket_connect(connection, request):
            connection.path = request.path

        def on_message(connection, data):
            if isinstance(data, str):                 # a WebSocket text message
                return connection.send("ws %%s %%s" %% (connection.path, data))
            connection.send("http " + data.server["REQUEST_URI"])

        worker.on_websocket_connect = on_websocket_connect
        worker.on_message = on_message
    """ % port)
    project.start(ports=[port])
    with urllib.request.urlopen("http://127.0.0.1:%d/page?x=1" % port, timeout=10) as answer:
        assert answer.read() == b"http /page?x=1"
    ws = websocket_client.create_connection("ws://127.0.0.1:%d/live" % port, timeout=10)
    ws.send("tom")
    assert ws.recv() == "ws /live tom"
    ws.ping("p")
    assert ws.recv_frame().data == b"p"
    ws.close()
    assert "Traceback" not in project.log()


def test_wss_server_and_wss_client(project, tmp_path):
    """websocket:// with transport "ssl" is a wss:// server; AsyncTcpConnection("wss://")
    and ws:// with transport "ssl" (Workerman's way) are wss:// clients."""
    import ssl
    import subprocess
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    port, text_port = free_port(), free_port()
    project.app("secure", """
        from geventman import Worker
        from geventman.connection import AsyncTcpConnection

        server = Worker("websocket://127.0.0.1:%(port)d", context={"ssl": {
            "local_cert": %(cert)r, "local_pk": %(key)r}})
        server.transport = "ssl"
        server.on_message = lambda connection, data: connection.send("hello " + data)

        relay = Worker("text://127.0.0.1:%(text_port)d")

        def on_message(connection, line):
            scheme, name = line.split()
            upstream = AsyncTcpConnection(scheme + "://127.0.0.1:%(port)d/",
                                          {"ssl": {"verify_peer": False}})
            if scheme == "ws":
                upstream.transport = "ssl"
            upstream.on_message = lambda ws, data: (connection.send(data), ws.close())
            upstream.send(name)        # queued until TLS and the handshake are done
            upstream.connect()

        relay.on_message = on_message
    """ % dict(port=port, text_port=text_port, cert=cert, key=key))
    project.start(ports=[port, text_port])
    ws = websocket_client.create_connection("wss://127.0.0.1:%d/" % port, timeout=10,
                                            sslopt={"cert_reqs": ssl.CERT_NONE})
    ws.send("tom")
    assert ws.recv() == "hello tom"
    ws.close()
    with LineClient(text_port, timeout=10) as client:
        assert client.ask("wss jerry") == "hello jerry"
        assert client.ask("ws spike") == "hello spike"
    assert "Traceback" not in project.log()
