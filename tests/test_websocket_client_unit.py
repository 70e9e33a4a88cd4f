"""ws:// client protocol, bytes in and bytes out, through the real AsyncTcpConnection
over a Sink (no sockets)."""
import struct
import zlib

import pytest

from geventman.connection import AsyncTcpConnection
from geventman.connection.tcp import State
from geventman.protocols.websocket import accept_key
from geventman.protocols.ws import Ws
from websocket_support import Sink, close_code, frame, parse_frames


def client(uri="ws://example.com:8080/chat?room=1", **attributes):
    """An AsyncTcpConnection as it is right after its TCP connect, over a Sink."""
    connection = AsyncTcpConnection(uri)
    assert connection.protocol is Ws
    connection.messages, connection.errors, connection.closes, connection.opened = [], [], 0, []

    def on_close(conn):
        conn.closes += 1

    connection.on_message = lambda conn, data: conn.messages.append(data)
    connection.on_error = lambda conn, code, message: conn.errors.append((code, message))
    connection.on_close = on_close
    connection.on_websocket_connect = lambda conn, response: conn.opened.append(response)
    for name, value in attributes.items():
        setattr(connection, name, value)
    return connection


def connect(connection):
    """What AsyncTcpConnection does once the TCP connect succeeded."""
    connection.sink = Sink()
    connection._sock = connection.sink
    connection.state = State.ESTABLISHED
    Ws.on_connect(connection)
    head = connection.sink.take().decode("latin-1")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
    return lines[0], headers


def answer(key, extra=()):
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Accept: " + accept_key(key)]
    return ("\r\n".join(lines + list(extra)) + "\r\n\r\n").encode()


def opened(**attributes):
    connection = client(**attributes)
    _, headers = connect(connection)
    connection._feed(answer(headers["sec-websocket-key"]))
    assert connection.opened, connection.errors
    return connection


def test_handshake_request():
    connection = client(headers={"Authorization": "Bearer x"},
                        websocket_origin="http://example.com",
                        websocket_client_protocol=["chat", "superchat"])
    request_line, headers = connect(connection)
    assert request_line == "GET /chat?room=1 HTTP/1.1"
    assert headers["host"] == "example.com:8080"
    assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert len(__import__("base64").b64decode(headers["sec-websocket-key"])) == 16
    assert headers["authorization"] == "Bearer x"
    assert headers["origin"] == "http://example.com"
    assert headers["sec-websocket-protocol"] == "chat, superchat"
    assert "sec-websocket-extensions" not in headers


def test_host_without_the_default_port_and_a_root_path():
    _, headers = connect(client("ws://example.com:80"))
    assert headers["host"] == "example.com"


def test_keys_are_random():
    keys = {connect(client())[1]["sec-websocket-key"] for _ in range(3)}
    assert len(keys) == 3


def test_good_answer_opens_and_flushes_what_was_sent_before():
    connection = client()
    assert connection.send("early") is None
    _, headers = connect(connection)
    connection._feed(answer(headers["sec-websocket-key"]) + frame(0x81, "hi", mask=False))
    assert connection.opened[0].status == 101
    assert connection.messages == ["hi"]
    assert parse_frames(connection.sink.take()) == [(0x81, b"early")]


def test_client_frames_are_masked_with_a_fresh_key():
    connection = opened()
    connection.send("same")
    connection.send("same")
    data = connection.sink.take()
    assert data[1] & 0x80 and data[6 + 4 + 1] & 0x80
    assert data[:10] != data[10:]                  # different mask keys
    assert parse_frames(data) == [(0x81, b"same"), (0x81, b"same")]


@pytest.mark.parametrize("reply", [
    lambda key: answer("another key"),
    lambda key: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    lambda key: answer(key).replace(b"Upgrade: websocket", b"Upgrade: h2c"),
    lambda key: answer(key, ["Sec-WebSocket-Extensions: permessage-deflate"]),
    lambda key: answer(key, ["Sec-WebSocket-Protocol: unasked"]),
])
def test_bad_answers_call_on_error_and_close(reply):
    connection = client()
    _, headers = connect(connection)
    connection._feed(reply(headers["sec-websocket-key"]))
    assert connection.opened == []
    assert connection.errors and connection.errors[0][0] == 1
    assert connection.state is State.CLOSED and connection.closes == 1


def test_masked_frame_from_the_server_fails_with_1002():
    connection = opened()
    connection._feed(frame(0x81, "x", mask=True))
    frames = parse_frames(connection.sink.take())
    assert frames[-1][0] == 0x88 and close_code(frames[-1][1]) == 1002
    assert connection.state is State.CLOSED


def test_ping_from_the_server_gets_a_masked_pong():
    connection = opened()
    connection._feed(frame(0x89, "beat", mask=False))
    data = connection.sink.take()
    assert data[1] & 0x80 and parse_frames(data) == [(0x8A, b"beat")]


def test_close_sends_a_masked_close_frame():
    connection = opened()
    connection.close()
    data = connection.sink.take()
    assert data[1] & 0x80 and parse_frames(data) == [(0x88, struct.pack("!H", 1000))]


def test_server_close_is_answered():
    connection = opened()
    connection._feed(frame(0x88, struct.pack("!H", 1001), mask=False))
    assert parse_frames(connection.sink.take()) == [(0x88, struct.pack("!H", 1001))]
    assert connection.state is State.CLOSED and connection.closes == 1


def test_subprotocol_chosen_by_the_server():
    connection = client(websocket_client_protocol="chat, superchat")
    _, headers = connect(connection)
    connection._feed(answer(headers["sec-websocket-key"], ["Sec-WebSocket-Protocol: superchat"]))
    assert connection.websocket.subprotocol == "superchat"
    assert connection.opened[0].header("Sec-WebSocket-Protocol") == "superchat"


def test_deflate_when_offered():
    connection = client(websocket_deflate=True)
    _, headers = connect(connection)
    assert headers["sec-websocket-extensions"] == "permessage-deflate; client_max_window_bits"
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(b"zipped " * 20) + compressor.flush(zlib.Z_SYNC_FLUSH)
    connection._feed(answer(headers["sec-websocket-key"],
                            ["Sec-WebSocket-Extensions: permessage-deflate; "
                             "client_max_window_bits=10"])
                     + frame(0xC1, data[:-4], mask=False))
    assert connection.messages == ["zipped " * 20]
    connection.send("out " * 30)
    (first, payload), = parse_frames(connection.sink.take())
    assert first == 0xC1
    assert zlib.decompressobj(-10).decompress(payload + b"\x00\x00\xff\xff") == b"out " * 30


def test_after_close_a_new_connection_starts_a_new_handshake():
    connection = opened()
    connection.destroy()
    assert connection.closes == 1
    connection.state = State.INITIAL        # what reconnect() does before connecting
    assert connection.send("queued for the next one") is None
    _, headers = connect(connection)
    connection._feed(answer(headers["sec-websocket-key"]))
    assert len(connection.opened) == 2
    assert parse_frames(connection.sink.take()) == [(0x81, b"queued for the next one")]


def test_wss_scheme_means_tls_and_port_443_is_left_out_of_host():
    connection = client("wss://example.com:443/feed")
    assert connection.transport == "ssl"
    request_line, headers = connect(connection)
    assert request_line == "GET /feed HTTP/1.1" and headers["host"] == "example.com"
