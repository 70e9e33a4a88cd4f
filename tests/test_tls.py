"""transport = 'ssl': TLS on accepted connections and on AsyncTcpConnection."""
import socket
import ssl
import subprocess

import pytest

from conftest import free_port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def tls_client(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "closed early: %r" % data
        data += chunk
    return data.decode()


def test_text_over_tls_and_async_tls_client(project, certificate):
    port, relay_port = free_port(), free_port()
    cert, key = certificate
    project.app("secure", """
        from geventman import Worker
        from geventman.connection import AsyncTcpConnection

        worker = Worker("text://127.0.0.1:%(port)d", context={"ssl": {
            "local_cert": %(cert)r, "local_pk": %(key)r}})
        worker.transport = "ssl"
        worker.on_message = lambda connection, data: connection.send("hello " + data)

        # A plain text port that asks the TLS port through an AsyncTcpConnection.
        relay = Worker("text://127.0.0.1:%(relay_port)d")

        def ask(connection, data):
            upstream = AsyncTcpConnection("text://127.0.0.1:%(port)d",
                                          {"ssl": {"verify_peer": False}})
            upstream.transport = "ssl"
            upstream.on_message = lambda up, answer: (connection.send(answer), up.close())
            upstream.send(data)   # queued until the handshake is done
            upstream.connect()

        relay.on_message = ask
    """ % dict(port=port, relay_port=relay_port, cert=cert, key=key))
    project.start(ports=[port, relay_port])
    with tls_client(port) as sock:
        sock.sendall(b"tom\n")
        assert read_line(sock) == "hello tom\n"
    with socket.create_connection(("127.0.0.1", relay_port), timeout=5) as sock:
        sock.sendall(b"jerry\n")
        assert read_line(sock) == "hello jerry\n"
    # Plain bytes on the TLS port: that connection is closed, the server goes on.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        try:
            while sock.recv(4096):  # a TLS alert at most, then end of stream
                pass
        except ConnectionResetError:
            pass
    with tls_client(port) as sock:
        sock.sendall(b"again\n")
        assert read_line(sock) == "hello again\n"
    assert "TLS error" in project.log()


def test_ssl_without_certificate_fails_start(project):
    port = free_port()
    project.app("broken", """
        from geventman import Worker
        worker = Worker("text://127.0.0.1:%d")
        worker.transport = "ssl"
    """ % port)
    result = project.command("start", "-d")
    assert result.returncode == 1
    assert "local_cert" in result.stdout


def test_what_is_sent_before_the_handshake_is_bounded(project, certificate):
    """on_connect runs before the TLS handshake is done: what it sends waits as
    plaintext, and max_send_buffer_size bounds it as it bounds the send buffer."""
    port = free_port()
    cert, key = certificate
    project.app("early", """
        from geventman import Worker

        worker = Worker("text://127.0.0.1:%(port)d", context={"ssl": {
            "local_cert": %(cert)r, "local_pk": %(key)r}})
        worker.transport = "ssl"
        worker.count = 1


        def on_connect(connection):
            connection.max_send_buffer_size = 256 * 1024
            connection.events = []
            connection.results = [connection.send("x" * 65535) for _ in range(8)]


        def on_message(connection, data):
            connection.send("results %%s events %%s" %% (
                ",".join(str(result) for result in connection.results),
                ",".join(connection.events)))


        worker.on_connect = on_connect
        worker.on_message = on_message
        worker.on_error = lambda connection, code, message: connection.events.append(
            "error%%d" %% code)
        worker.on_buffer_full = lambda connection: connection.events.append("full")
        worker.on_buffer_drain = lambda connection: connection.events.append("drain")
    """ % dict(port=port, cert=cert, key=key))
    project.start(ports=[port])
    with tls_client(port) as sock:
        for _ in range(4):  # 4 x 64 KiB reach the 256 KiB bound; the rest was dropped
            assert read_line(sock) == "x" * 65535 + "\n"
        sock.sendall(b"report\n")
        assert read_line(sock) == ("results None,None,None,None,False,False,False,False "
                                   "events full,error2,error2,error2,error2,drain\n")
