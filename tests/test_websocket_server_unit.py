"""websocket:// server protocol, bytes in and bytes out.

Each test drives the real TcpConnection (its package loop, send and close) over a
Sink that stands where the socket would be: no sockets, no processes.
"""
import json
import random
import struct
import zlib

import pytest

from geventman.connection.tcp import State
from geventman.protocols import websocket
from geventman.protocols.websocket import Websocket, accept_key
from websocket_support import (close_code, frame, handshake, new_key, open_connection,
                               parse_frames, server_connection)


def head_and_frames(data):
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), parse_frames(rest)


def assert_failed_with(connection, code):
    frames = parse_frames(connection.sink.take())
    assert frames and frames[-1][0] == 0x88, frames
    assert close_code(frames[-1][1]) == code, frames
    assert connection.state is State.CLOSED and connection.sink.closed
    assert connection.closes == 1


# -- the opening handshake --------------------------------------------------------


def test_handshake_answers_101_with_the_accept_of_the_key():
    connection = server_connection()
    key = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
    connection._feed(handshake(key))
    head = connection.sink.take().decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert "Upgrade: websocket\r\n" in head and "Connection: Upgrade\r\n" in head
    assert head.endswith("\r\n\r\n")
    assert connection.messages == [] and connection.state is State.ESTABLISHED


def test_on_websocket_connect_sees_path_query_headers_and_cookies():
    seen = []
    connection = server_connection(on_websocket_connect=lambda c, r: seen.append(r))
    connection._feed(handshake(path="/chat/room?uid=7&name=tom%20x", extra=[
        "Cookie: PHPSID=abc; theme=dark", "Origin: http://example.com",
        "X-Token: t1", "X-Token: t2"]))
    request = seen[0]
    assert request.path == "/chat/room" and request.query_string == "uid=7&name=tom%20x"
    assert request.get == {"uid": "7", "name": "tom x"}
    assert request.cookie == {"PHPSID": "abc", "theme": "dark"}
    assert request.header("origin") == "http://example.com"
    assert request.headers["x-token"] == "t1, t2"
    assert request.server["REQUEST_URI"] == "/chat/room?uid=7&name=tom%20x"
    assert request.server["HTTP_ORIGIN"] == "http://example.com"
    assert request.server["REMOTE_ADDR"] == "127.0.0.1"
    assert connection.websocket.request is None     # not kept after the handshake


def test_on_websocket_connect_runs_before_the_101_and_adds_headers():
    def on_websocket_connect(connection, request):
        assert connection.sink.data == b""  # nothing answered yet
        connection.headers = ["Sec-WebSocket-Protocol: chat", "X-Server: yes"]

    connection = server_connection(on_websocket_connect=on_websocket_connect)
    connection._feed(handshake(extra=["Sec-WebSocket-Protocol: chat, superchat"]))
    head = connection.sink.take().decode()
    assert "Sec-WebSocket-Protocol: chat\r\n" in head and "X-Server: yes\r\n" in head
    assert connection.websocket.subprotocol == "chat"


def test_headers_may_be_a_dict():
    connection = server_connection(
        on_websocket_connect=lambda c, r: setattr(c, "headers", {"Server": "mine"}))
    connection._feed(handshake())
    head = connection.sink.take().decode()
    assert "Server: mine\r\n" in head and "geventman" not in head


def test_on_websocket_connect_may_refuse_with_close():
    connection = server_connection(on_websocket_connect=lambda c, r: c.close())
    connection._feed(handshake())
    answer = connection.sink.take()
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert connection.state is State.CLOSED and connection.closes == 1


def test_on_websocket_connect_may_answer_itself_and_close():
    refusal = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    connection = server_connection(
        on_websocket_connect=lambda c, r: c.close(refusal, raw=True))
    connection._feed(handshake())
    assert connection.sink.take() == refusal
    assert connection.state is State.CLOSED


def test_what_is_sent_before_the_handshake_is_flushed_after_the_101():
    connection = server_connection()
    assert connection.send("welcome") is None
    assert connection.send(b"\x00\x01") is None
    assert connection.sink.data == b""
    connection._feed(handshake())
    head, frames = head_and_frames(connection.sink.take())
    assert head.startswith("HTTP/1.1 101")
    assert frames == [(0x81, b"welcome"), (0x82, b"\x00\x01")]


def test_sends_before_the_handshake_are_bounded_by_the_send_buffer():
    errors = []
    connection = server_connection(max_send_buffer_size=10,
                                   on_error=lambda c, code, message: errors.append(code))
    connection.send("0123456789")
    connection.send("more")
    assert errors == [2]
    connection._feed(handshake())
    assert head_and_frames(connection.sink.take())[1] == [(0x81, b"0123456789")]


def test_handshake_in_pieces_and_a_frame_in_the_same_read():
    connection = server_connection()
    data = handshake() + frame(0x81, "tom")
    for position in range(0, len(data), 7):
        connection._feed(data[position:position + 7])
    assert connection.messages == ["tom"]


def test_connection_header_with_several_tokens_is_accepted():
    connection = server_connection()
    data = handshake().replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    connection._feed(data)
    assert connection.sink.take().startswith(b"HTTP/1.1 101")


@pytest.mark.parametrize("data, status", [
    (handshake().replace(b"Sec-WebSocket-Key: ", b"X-Key: "), 400),
    (handshake(key="c2hvcnQ="), 400),                                   # 5 bytes, not 16
    (handshake(key="not base64!!!"), 400),
    (handshake(version="8"), 426),
    (handshake(version=None), 426),
    (handshake().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
    (handshake().replace(b"Upgrade: websocket", b"Upgrade: h2c"), 400),
    (handshake().replace(b"Connection: Upgrade", b"Connection: keep-alive"), 400),
    (handshake(host=None), 400),
    (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\nUpgrade: websocket\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),            # a TLS hello
])
def test_bad_handshakes_get_an_http_error_and_close(data, status):
    connection = server_connection()
    connection._feed(data)
    answer = connection.sink.take()
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert b"\r\nConnection: close\r\n" in answer
    body = answer.partition(b"\r\n\r\n")[2]
    assert 0 < len(body) < 200
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in answer
    assert connection.state is State.CLOSED and connection.closes == 1


def test_a_plain_browser_get_gets_a_short_html_page():
    connection = server_connection()
    connection._feed(b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n")
    answer = connection.sink.take()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/html" in answer and b"WebSocket" in answer
    assert connection.state is State.CLOSED


def test_a_handshake_over_16_kb_gets_431():
    connection = server_connection()
    connection._feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000)
    assert connection.sink.take().startswith(b"HTTP/1.1 431 ")
    assert connection.state is State.CLOSED


def test_accept_key_matches_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# -- data frames --------------------------------------------------------------------


def test_text_and_binary_messages():
    connection = open_connection()
    connection._feed(frame(0x81, "hello") + frame(0x82, b"\x00\xff") + frame(0x81, ""))
    assert connection.messages == ["hello", b"\x00\xff", ""]
    assert isinstance(connection.messages[1], bytes)


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70000])
def test_payload_lengths_in_7_16_and_64_bits(size):
    connection = open_connection()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    connection._feed(frame(0x82, payload))
    assert connection.messages == [payload]
    connection.send(payload)
    assert parse_frames(connection.sink.take()) == [(0x82, payload)]


def test_64_bit_length_field_for_a_small_payload_is_accepted():
    connection = open_connection()
    connection._feed(frame(0x81, "x", length_code=127))
    assert connection.messages == ["x"]


def test_a_frame_arriving_byte_by_byte():
    connection = open_connection()
    data = frame(0x81, "é" * 300)
    for byte in data:
        connection._feed(bytes([byte]))
    assert connection.messages == ["é" * 300]


def test_unmasked_client_frame_fails_with_1002():
    connection = open_connection()
    connection._feed(frame(0x81, "hello", mask=False))
    assert connection.messages == []
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("first", [0xC1, 0xA1, 0x91, 0xF2, 0xC9])
def test_reserved_bits_without_an_extension_fail_with_1002(first):
    connection = open_connection()
    connection._feed(frame(first, "x"))
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("first", [0x83, 0x84, 0x87, 0x8B, 0x8F])
def test_unknown_opcodes_fail_with_1002(first):
    connection = open_connection()
    connection._feed(frame(first, "x"))
    assert_failed_with(connection, 1002)


def test_control_frame_over_125_bytes_fails_with_1002():
    connection = open_connection()
    connection._feed(frame(0x89, b"x" * 126))
    assert_failed_with(connection, 1002)


def test_bad_header_is_refused_before_the_payload_arrives():
    connection = open_connection()
    connection._feed(frame(0x89, b"x" * 126)[:4])   # header only: 126 announced
    assert_failed_with(connection, 1002)


def test_fragmented_control_frame_fails_with_1002():
    connection = open_connection()
    connection._feed(frame(0x09, "ping"))
    assert_failed_with(connection, 1002)


def test_continuation_without_a_message_fails_with_1002():
    connection = open_connection()
    connection._feed(frame(0x80, "x"))
    assert_failed_with(connection, 1002)


def test_new_message_inside_a_fragmented_one_fails_with_1002():
    connection = open_connection()
    connection._feed(frame(0x01, "a") + frame(0x81, "b"))
    assert connection.messages == []
    assert_failed_with(connection, 1002)


def test_fragments_are_reassembled_with_control_frames_between_them():
    pongs = []
    connection = open_connection(on_websocket_ping=lambda c, data: pongs.append(data))
    connection._feed(frame(0x01, "Hel") + frame(0x89, "p1") + frame(0x00, "lo ")
                     + frame(0x8A, "unsolicited") + frame(0x80, "world"))
    assert connection.messages == ["Hello world"]
    assert parse_frames(connection.sink.take()) == [(0x8A, b"p1")]
    assert pongs == [b"p1"]


def test_binary_fragments_are_reassembled():
    connection = open_connection()
    connection._feed(frame(0x02, b"\x01") + frame(0x00, b"") + frame(0x80, b"\x02\x03"))
    assert connection.messages == [b"\x01\x02\x03"]


def test_utf8_character_split_across_frames():
    connection = open_connection()
    data = "κόσμε €".encode()
    connection._feed(frame(0x01, data[:2]) + frame(0x00, data[2:3])
                     + frame(0x80, data[3:]))
    assert connection.messages == ["κόσμε €"]


def test_invalid_utf8_in_a_first_fragment_fails_at_once_with_1007():
    connection = open_connection()
    connection._feed(frame(0x01, b"ok\xff"))     # the message is not finished
    assert_failed_with(connection, 1007)


def test_text_ending_in_the_middle_of_a_character_fails_with_1007():
    connection = open_connection()
    connection._feed(frame(0x01, "ok".encode()) + frame(0x80, "€".encode()[:2]))
    assert_failed_with(connection, 1007)


@pytest.mark.parametrize("payload", [b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"])
def test_invalid_utf8_text_fails_with_1007(payload):
    connection = open_connection()
    connection._feed(frame(0x81, payload))
    assert connection.messages == []
    assert_failed_with(connection, 1007)


def test_message_over_max_package_size_fails_with_1009_before_its_payload():
    connection = open_connection(max_package_size=1000)
    connection._feed(frame(0x82, b"x" * 2000)[:8])
    assert_failed_with(connection, 1009)


def test_fragmented_message_over_max_package_size_fails_with_1009():
    connection = open_connection(max_package_size=1000)
    connection._feed(frame(0x02, b"x" * 600))
    assert connection.state is State.ESTABLISHED
    connection._feed(frame(0x80, b"x" * 600))
    assert_failed_with(connection, 1009)


def test_fragment_headers_count_against_max_package_size():
    """Empty continuation frames carry no payload, but each is 6 bytes on the wire:
    the message's wire bytes reach the limit and it fails with 1009."""
    connection = open_connection(max_package_size=1000)
    connection._feed(frame(0x02, b"") + frame(0x00, b"") * 165)   # 996 bytes
    assert connection.state is State.ESTABLISHED
    connection._feed(frame(0x00, b""))
    assert_failed_with(connection, 1009)


def test_one_byte_fragments_count_their_headers_too():
    connection = open_connection(max_package_size=700)
    connection._feed(frame(0x01, "a") + frame(0x00, "b") * 98)   # 7 bytes each: 693
    assert connection.state is State.ESTABLISHED
    connection._feed(frame(0x00, "cd"))   # 701 bytes: one over
    assert_failed_with(connection, 1009)


def test_fragments_per_message_are_bounded():
    connection = open_connection(websocket_max_fragments=100)
    connection._feed(frame(0x02, b"x") + frame(0x00, b"") * 99)
    assert connection.state is State.ESTABLISHED
    connection._feed(frame(0x00, b""))
    assert connection.messages == []
    assert_failed_with(connection, 1009)


def test_the_fragment_bound_is_per_message():
    connection = open_connection(websocket_max_fragments=3)
    for _ in range(5):
        connection._feed(frame(0x01, "a") + frame(0x00, "b") + frame(0x80, "c"))
    assert connection.messages == ["abc"] * 5


def test_fragments_are_kept_in_one_bytearray_the_size_of_their_payload():
    connection = open_connection()
    connection._feed(frame(0x01, "a") + frame(0x00, "x") * 5000)
    session = connection.websocket
    assert type(session.data) is bytearray and len(session.data) == 5001
    assert session.fragment_count == 5001 and session.wire_size == 5001 * 7
    connection._feed(frame(0x80, "é"))
    assert connection.messages == ["a" + "x" * 5000 + "é"]
    assert session.data is None and session.wire_size == 0


def test_a_bad_frame_logs_one_line(capsys):
    connection = open_connection()
    connection._feed(frame(0x81, "x", mask=False))
    lines = [line for line in capsys.readouterr().out.splitlines() if "websocket" in line]
    assert len(lines) == 1 and "unmasked" in lines[0] and "1002" in lines[0]


# -- control frames -------------------------------------------------------------------


def test_ping_is_answered_with_a_pong_of_the_same_payload():
    connection = open_connection()
    connection._feed(frame(0x89, b"\x00abc"))
    assert parse_frames(connection.sink.take()) == [(0x8A, b"\x00abc")]
    assert connection.messages == []


def test_pong_calls_on_websocket_pong():
    pongs = []
    connection = open_connection(on_websocket_pong=lambda c, data: pongs.append(data))
    connection._feed(frame(0x8A, "beat"))
    assert pongs == [b"beat"] and connection.sink.take() == b""


def test_close_is_answered_with_the_peers_code_then_tcp_closes():
    connection = open_connection()
    connection._feed(frame(0x88, struct.pack("!H", 1001) + b"bye") + frame(0x81, "late"))
    frames = parse_frames(connection.sink.take())
    assert frames == [(0x88, struct.pack("!H", 1001))]
    assert connection.messages == []
    assert connection.state is State.CLOSED and connection.closes == 1


def test_empty_close_is_answered_with_an_empty_close():
    connection = open_connection()
    connection._feed(frame(0x88, b""))
    assert parse_frames(connection.sink.take()) == [(0x88, b"")]
    assert connection.state is State.CLOSED


@pytest.mark.parametrize("code", [1000, 1003, 1011, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(code):
    connection = open_connection()
    connection._feed(frame(0x88, struct.pack("!H", code)))
    assert parse_frames(connection.sink.take()) == [(0x88, struct.pack("!H", code))]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_fail_with_1002(code):
    connection = open_connection()
    connection._feed(frame(0x88, struct.pack("!H", code)))
    assert_failed_with(connection, 1002)


def test_close_with_one_byte_fails_with_1002():
    connection = open_connection()
    connection._feed(frame(0x88, b"\x03"))
    assert_failed_with(connection, 1002)


def test_close_reason_must_be_utf8():
    connection = open_connection()
    connection._feed(frame(0x88, struct.pack("!H", 1000) + b"\xff"))
    assert_failed_with(connection, 1007)


def test_on_close_runs_once_when_the_peer_then_the_tcp_goes():
    connection = open_connection()
    connection._feed(frame(0x88, struct.pack("!H", 1000)))
    connection.destroy()
    connection.close()
    assert connection.closes == 1


# -- many frames in one read ------------------------------------------------------------
# Short whole text and binary frames take the connection's fast path (_core.py,
# _feed_frames); anything else, and what follows it, the general one. Each mix below
# must come out as the general path alone would give it.


def test_fast_and_general_frames_mixed_in_one_read_keep_their_order():
    connection = open_connection()
    first, last = frame(0x81, "c" * 130), frame(0x82, b"end")  # 130 bytes: a 16-bit length
    connection._feed(frame(0x81, "a") + frame(0x89, "p") + frame(0x82, b"b") + first
                     + frame(0x81, "d") + last[:3])
    assert connection.messages == ["a", b"b", "c" * 130, "d"]
    assert parse_frames(connection.sink.take()) == [(0x8A, b"p")]
    connection._feed(last[3:])                   # the end of the frame a read left
    connection._feed(frame(0x81, "again"))       # and the fast way again
    assert connection.messages[4:] == [b"end", "again"]


def test_a_bad_frame_after_good_ones_fails_only_there():
    connection = open_connection()
    connection._feed(frame(0x81, "ok") + frame(0x81, b"\xff") + frame(0x81, "never"))
    assert connection.messages == ["ok"]
    assert_failed_with(connection, 1007)


def test_a_short_frame_over_max_package_size_fails_with_1009():
    connection = open_connection()
    connection.max_package_size = 20
    connection._feed(frame(0x81, "x" * 14) + frame(0x81, "x" * 15) + frame(0x81, "never"))
    assert connection.messages == ["x" * 14]    # 6 + 14 bytes: at the limit
    assert_failed_with(connection, 1009)


def test_a_handler_that_pauses_leaves_the_rest_of_the_read_for_resume():
    connection = open_connection()

    def on_message(conn, data):
        conn.messages.append(data)
        if data == "pause":
            conn.pause_recv()
    connection.on_message = on_message
    connection._feed(frame(0x81, "pause") + frame(0x81, "b") + frame(0x82, b"c"))
    assert connection.messages == ["pause"]
    connection._paused = False                   # what resume_recv does, then _resume:
    connection._feed(b"")
    assert connection.messages == ["pause", "b", b"c"]


def test_a_handler_that_closes_ends_the_read():
    connection = open_connection()
    connection.on_message = lambda conn, data: (conn.messages.append(data), conn.close())
    connection._feed(frame(0x81, "bye") + frame(0x81, "never"))
    assert connection.messages == ["bye"]
    assert parse_frames(connection.sink.take())[0][0] == 0x88
    assert connection.state is State.CLOSED


def random_frames(rng):
    """Frames of every kind the fast path must tell apart, now and then a bad one."""
    frames = []
    for _ in range(rng.randrange(1, 12)):
        kind = rng.randrange(10)
        if kind < 4:
            frames.append(frame(0x81, "é" * rng.randrange(0, 70)))
        elif kind < 6:
            frames.append(frame(0x82, bytes(rng.randrange(256) for _ in range(rng.randrange(130)))))
        elif kind == 6:
            frames.append(frame(0x89, b"p"))
        elif kind == 7:
            frames += [frame(0x01, "frag"), frame(0x80, "ment")]
        elif kind == 8:
            frames.append(frame(0x81, "x" * 200))  # a 16-bit length
        else:
            frames.append(rng.choice([frame(0x81, b"\xff"), frame(0x81, "u", mask=False),
                                      frame(0x83, "?")]))  # 1007, 1002, 1002
    return b"".join(frames)


def test_the_fast_path_answers_as_the_protocol_alone_for_any_mix_and_any_cut():
    rng = random.Random(13)
    for case in range(300):
        data = random_frames(rng)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(4))))
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        fast, general = open_connection(), open_connection()
        for piece in pieces:
            if fast.state is State.ESTABLISHED:
                fast._feed(piece)              # _feed_frames first
            if general.state is State.ESTABLISHED:
                general._feed_packages(piece)  # the protocol's input and decode only
        assert fast.messages == general.messages, case
        assert fast.sink.take() == general.sink.take(), case
        assert fast.state is general.state, case


# -- sending --------------------------------------------------------------------------


def test_str_is_text_bytes_is_binary_dict_and_list_are_json():
    connection = open_connection()
    connection.send("hé")
    connection.send(b"\x00")
    connection.send(bytearray(b"\x01"))
    connection.send({"type": "say", "to": ["tom"]})
    connection.send([1, "é"])
    connection.send(42)
    frames = parse_frames(connection.sink.take())
    assert frames[:3] == [(0x81, "hé".encode()), (0x82, b"\x00"), (0x82, b"\x01")]
    assert frames[3][0] == 0x81 and json.loads(frames[3][1]) == {"type": "say", "to": ["tom"]}
    assert frames[4] == (0x81, '[1,"é"]'.encode())
    assert frames[5] == (0x81, b"42")


def test_send_of_an_unsupported_type_raises():
    connection = open_connection()
    with pytest.raises(TypeError):
        connection.send(object())


@pytest.mark.parametrize("kind, first", [(Websocket.BINARY_TYPE_BLOB, 0x81),
                                         (Websocket.BINARY_TYPE_ARRAYBUFFER, 0x82),
                                         ("text", 0x81), ("binary", 0x82)])
def test_websocket_type_forces_one_kind_of_frame(kind, first):
    connection = open_connection()
    connection.websocket_type = kind
    connection.send("abc")
    connection.send(b"abc")
    assert parse_frames(connection.sink.take()) == [(first, b"abc"), (first, b"abc")]


def test_websocket_type_set_before_the_handshake_is_kept():
    connection = server_connection()
    connection.websocket_type = Websocket.BINARY_TYPE_ARRAYBUFFER
    connection._feed(handshake())
    connection.sink.take()
    connection.send("abc")
    assert parse_frames(connection.sink.take()) == [(0x82, b"abc")]


def test_server_frames_are_not_masked():
    connection = open_connection()
    connection.send("x" * 300)
    data = connection.sink.take()
    assert data[1] == 126 and not data[1] & 0x80


def test_close_sends_a_close_frame_1000_then_closes():
    connection = open_connection()
    connection.close("bye")
    assert parse_frames(connection.sink.take()) == [(0x81, b"bye"), (0x88, b"\x03\xe8")]
    assert connection.state is State.CLOSED


def test_close_with_an_application_code():
    connection = open_connection()
    websocket.close(connection, 4000, "kicked")
    assert parse_frames(connection.sink.take()) == [(0x88, struct.pack("!H", 4000) + b"kicked")]
    assert connection.state is State.CLOSED and connection.closes == 1


def test_send_after_close_fails():
    connection = open_connection()
    connection.close()
    connection.sink.take()
    assert connection.send("late") is False


# -- http:// upgrade --------------------------------------------------------------------


class FakeHttp:
    """Stands for the HTTP protocol: one package per head, upgrade on request."""

    @staticmethod
    def input(buffer, connection):
        end = buffer.find(b"\r\n\r\n")
        return end + 4 if end >= 0 else 0

    @staticmethod
    def decode(package, connection):
        if b"upgrade: websocket" in package.lower():
            return websocket.upgrade(connection, package)
        return "http request"

    @staticmethod
    def encode(data, connection):
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data.encode())


def test_upgrade_hands_an_http_connection_over_to_websocket():
    seen = []
    connection = server_connection(FakeHttp, on_websocket_connect=lambda c, r: seen.append(r))
    connection._feed(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
    assert connection.messages == ["http request"]
    connection.sink.take()
    connection._feed(handshake(path="/ws?room=1") + frame(0x81, "tom"))
    assert connection.protocol is Websocket
    assert connection.sink.take().startswith(b"HTTP/1.1 101 ")
    assert seen[0].get == {"room": "1"}
    assert connection.messages == ["http request", "tom"]
    connection.send("hello tom")
    assert parse_frames(connection.sink.take()) == [(0x81, b"hello tom")]


def test_upgrade_with_a_bad_handshake_answers_400():
    connection = server_connection(FakeHttp)
    connection._feed(handshake(version="12").replace(b"Sec-WebSocket-Key", b"X-Nokey"))
    assert connection.sink.take().startswith(b"HTTP/1.1 400 ")
    assert connection.state is State.CLOSED


# -- permessage-deflate -----------------------------------------------------------------


def deflate_connection(offer="permessage-deflate; client_max_window_bits", **attributes):
    connection = server_connection(**attributes)
    connection._feed(handshake(extra=["Sec-WebSocket-Extensions: " + offer]))
    head = connection.sink.take().decode()
    assert head.startswith("HTTP/1.1 101")
    return connection, head


def compress(data, compressor=None):
    compressor = compressor or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data, decompressor=None):
    decompressor = decompressor or zlib.decompressobj(-15)
    return decompressor.decompress(data + b"\x00\x00\xff\xff")


@pytest.mark.parametrize("offer, answer", [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate",
     "permessage-deflate"),                      # zlib cannot do 8: the next offer
    ("permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover"),
    ('permessage-deflate; client_max_window_bits="10"', "permessage-deflate"),
])
def test_deflate_negotiation(offer, answer):
    connection, head = deflate_connection(offer)
    assert "\r\nSec-WebSocket-Extensions: %s\r\n" % answer in head


@pytest.mark.parametrize("offer", [
    "x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; server_max_window_bits", "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
])
def test_deflate_offers_that_cannot_be_accepted_are_declined(offer):
    connection, head = deflate_connection(offer)
    assert "Sec-WebSocket-Extensions" not in head
    connection._feed(frame(0xC1, "x"))   # RSV1 is then a protocol error
    assert_failed_with(connection, 1002)


def test_deflate_switched_off_per_worker():
    class Worker:
        websocket_deflate = False
        websocket_type = None
        _stopping = False

    connection = server_connection()
    connection.worker = Worker()
    connection._feed(handshake(extra=["Sec-WebSocket-Extensions: permessage-deflate"]))
    assert b"Sec-WebSocket-Extensions" not in connection.sink.take()


def test_compressed_messages_in_and_out_with_context_takeover():
    connection, _ = deflate_connection()
    client_out = zlib.compressobj(6, zlib.DEFLATED, -15)
    for text in ["hello " * 50, "hello " * 50 + "again"]:
        connection._feed(frame(0xC1, compress(text.encode(), client_out)))
    assert connection.messages == ["hello " * 50, "hello " * 50 + "again"]
    client_in = zlib.decompressobj(-15)
    connection.send("reply " * 40)
    connection.send("reply " * 40)
    frames = parse_frames(connection.sink.take())
    assert [first for first, _ in frames] == [0xC1, 0xC1]
    assert [inflate(payload, client_in) for _, payload in frames] == [b"reply " * 40] * 2
    assert len(frames[1][1]) < len(frames[0][1])  # the second used the first as history


def test_compressed_fragmented_message_with_rsv1_on_the_first_frame_only():
    connection, _ = deflate_connection()
    data = compress("fragmented é".encode() * 20)
    connection._feed(frame(0x41, data[:5]) + frame(0x89, b"") + frame(0x00, data[5:9])
                     + frame(0x80, data[9:]))
    assert connection.messages == ["fragmented é" * 20]


def test_rsv1_on_a_continuation_frame_fails_with_1002():
    connection, _ = deflate_connection()
    data = compress(b"abc" * 30)
    connection._feed(frame(0x41, data[:3]) + frame(0xC0, data[3:]))
    assert_failed_with(connection, 1002)


def test_rsv1_on_a_control_frame_fails_with_1002():
    connection, _ = deflate_connection()
    connection._feed(frame(0xC9, b""))
    assert_failed_with(connection, 1002)


def test_compressed_invalid_utf8_fails_with_1007():
    connection, _ = deflate_connection()
    connection._feed(frame(0xC1, compress(b"abc\xff")))
    assert_failed_with(connection, 1007)


def test_corrupt_deflate_data_fails_with_1007():
    connection, _ = deflate_connection()
    connection._feed(frame(0xC2, b"\xff\xff\xff\xff\xff"))
    assert_failed_with(connection, 1007)


def test_zip_bomb_fails_with_1009_without_inflating_it_all():
    connection, _ = deflate_connection(max_package_size=1 << 20)
    bomb = compress(bytes(200 << 20))             # 200 MiB of zeros, about 200 KB
    assert len(bomb) < 1 << 20
    connection._feed(frame(0xC2, bomb))
    assert connection.messages == []
    assert_failed_with(connection, 1009)


def test_no_context_takeover_resets_both_sides():
    connection, head = deflate_connection(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    for _ in range(2):
        connection._feed(frame(0xC1, compress(b"same text " * 20)))
        connection.send("same text " * 20)
    frames = parse_frames(connection.sink.take())
    assert frames[0] == frames[1]                  # each message compressed alone
    assert inflate(frames[1][1]) == b"same text " * 20
    assert connection.messages == ["same text " * 20] * 2


def test_new_key_is_random():
    assert new_key() != new_key()


def test_ping_helper_and_pong_hook():
    pongs = []
    connection = open_connection(on_websocket_pong=lambda c, data: pongs.append(data))
    assert websocket.ping(connection, "are you there") is True
    assert parse_frames(connection.sink.take()) == [(0x89, b"are you there")]
    connection._feed(frame(0x8A, "are you there"))
    assert pongs == [b"are you there"]
    assert websocket.ping(server_connection()) is False     # no handshake yet
