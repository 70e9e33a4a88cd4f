"""WebSocket framing (RFC 6455 section 5), shared by the server (websocket://) and the
client (ws://) protocols.

Sans-IO like every protocol: ``frame_length`` is the body of ``input`` once the
handshake is done, ``receive`` the body of ``decode``, ``build`` makes the bytes of
one frame. The per-connection state lives in a ``Session`` at ``connection.websocket``.

Every frame is one package of the connection: ``frame_length`` checks the frame
header as soon as it is complete (so a bad frame is refused before its payload
arrives) and returns header + payload length; ``receive`` gets the whole frame,
unmasks it, and returns the message when the frame ends one, or NOTHING for control
frames and for the fragments of a message still being reassembled.

A protocol error fails the connection (section 7.1.7): one log line, a close frame
with the status code, and the TCP connection is closed once that frame is written.

A fragmented message is bounded three ways, each failing it with 1009: every byte of
it on the wire (frame headers and masks included) counts against
``max_package_size``; it may have at most ``MAX_FRAGMENTS`` frames; and its fragments
are appended to one bytearray, so memory stays about its payload whatever the frame
sizes (measured before: 10,000,000 one-byte fragments, each kept as an object, grew a
process by 536 MB).
"""
import codecs
import enum
import json
import struct
import sys
from os import urandom

from geventman.log import log
from geventman.protocols import NOTHING
from geventman.runtime import call, statistics

try:  # the C mask of the websockets package. Measured against the fallback below:
    # 0.06 against 0.34 µs for 16 bytes, 19 µs against 4 ms for 1 MiB.
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - depends on what is installed
    def apply_mask(data, mask):
        """XOR ``data`` with the 4-byte ``mask`` repeated (section 5.3)."""
        size = len(data)
        if not size:
            return b""
        repeated = mask * (size >> 2) + mask[:size & 3]
        value = int.from_bytes(data, sys.byteorder) ^ int.from_bytes(repeated, sys.byteorder)
        return value.to_bytes(size, sys.byteorder)

# Opcodes (section 5.2).
CONTINUATION, TEXT, BINARY = 0x0, 0x1, 0x2
CLOSE, PING, PONG = 0x8, 0x9, 0xA

# Close codes (section 7.4.1) this package sends.
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
TOO_BIG = 1009

FIN = 0x80
RSV1 = 0x40
RSV_ALL = 0x70
MASKED = 0x80

SEND_FAIL = 2  # on_error code, as geventman.connection.tcp.SEND_FAIL (Workerman's)

#: Frames of one fragmented message, at most (``websocket_max_fragments`` on the
#: connection or the worker changes it). Autobahn's case 9.3.1 sends 4 MiB in 64-byte
#: fragments: 65,536 of them.
MAX_FRAGMENTS = 1 << 17

#: Close codes a peer may send (section 7.4.1 plus the IANA registry: 1012-1014), and
#: 3000-4999 for libraries and applications (section 7.4.2).
VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                               1012, 1013, 1014))

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


class Phase(enum.Enum):
    HANDSHAKE = 0   # waiting for the opening handshake
    OPEN = 1        # frames flow both ways
    CLOSING = 2     # a close frame went out (or the connection failed): input is ignored
    CLOSED = 3


HANDSHAKE, OPEN, CLOSING, CLOSED = Phase  # cheaper to read than Phase.OPEN (see tcp.py)

class Session:
    """The WebSocket state of one connection, kept at ``connection.websocket``.

    ``request`` is the handshake request while ``on_websocket_connect`` runs (server
    side), ``response`` the handshake answer (client side); ``subprotocol`` is the
    negotiated Sec-WebSocket-Protocol.
    """

    __slots__ = ("phase", "client", "header_size", "first_byte", "message_opcode",
                 "compressed", "data", "wire_size", "fragment_count", "utf8", "deflate",
                 "pending", "pending_size", "close_sent", "request", "response",
                 "subprotocol", "key", "mark", "scanned", "ping_timer")

    def __init__(self, client=False):
        self.phase = HANDSHAKE
        self.client = client          # True: we are the client (we mask, the peer does not)
        self.header_size = 0          # header of the frame input() measured last
        self.first_byte = 0
        self.message_opcode = 0       # TEXT or BINARY while a fragmented message is open
        self.compressed = False       # the open message is compressed (RSV1 on its 1st frame)
        self.data = None              # bytearray: the payload of the open message so far
        self.wire_size = 0            # its bytes on the wire, headers included
        self.fragment_count = 0
        self.utf8 = None              # incremental decoder of the open text message
        self.deflate = None           # PerMessageDeflate once negotiated
        self.pending = []             # what was sent before the handshake completed
        self.pending_size = 0
        self.close_sent = False
        self.request = self.response = self.subprotocol = None
        self.key = None               # client: the Sec-WebSocket-Key it sent
        self.mark = 0                 # server: bytes written when the handshake began
        self.scanned = 0              # server: handshake bytes searched for its end so far
        self.ping_timer = None

    def reset_message(self):
        self.message_opcode = 0
        self.compressed = False
        self.data = None
        self.wire_size = 0
        self.fragment_count = 0
        self.utf8 = None


def session_of(connection, client=False):
    """The connection's Session, made on first use (``send`` may come before any input)."""
    session = getattr(connection, "websocket", None)
    if session is None:
        session = connection.websocket = Session(client)
        if getattr(connection, "websocket_type", None) is None:  # read on every send
            connection.websocket_type = getattr(connection.worker, "websocket_type", None)
    return session


# -- reading ---------------------------------------------------------------------


def frame_length(buffer, connection, session):
    """``input`` for an open connection: the size of the next frame, 0 if its header is
    incomplete, or 0 after failing the connection for a bad header."""
    size = len(buffer)
    if size < 2:
        return 0
    first = buffer[0]
    second = buffer[1]
    length = second & 0x7F
    header = 2
    if length >= 126:
        if length == 126:
            if size < 4:
                return 0
            length = (buffer[2] << 8) | buffer[3]
            header = 4
        else:
            if size < 10:
                return 0
            length = int.from_bytes(buffer[2:10], "big")
            header = 10
            if length >> 63:
                return refuse(connection, PROTOCOL_ERROR, "64-bit length with the top bit set")
    if second & MASKED:
        if session.client:  # section 5.1: a server never masks
            return refuse(connection, PROTOCOL_ERROR, "masked frame from the server")
        header += 4
    elif not session.client:  # section 5.1: a client always masks
        return refuse(connection, PROTOCOL_ERROR, "unmasked frame from the client")
    if (first != 0x81 and first != 0x82) or session.message_opcode:  # else: nothing to check
        error = _header_error(first, length, session)
        if error is not None:
            return refuse(connection, PROTOCOL_ERROR, error)
    if first & 0x08 == 0 and session.wire_size + header + length > \
            connection.max_package_size:  # a data frame: the message's wire bytes so far
        return refuse(connection, TOO_BIG, "message over max_package_size (%d)" %
                      connection.max_package_size)
    session.header_size = header
    session.first_byte = first
    return header + length


def _header_error(first, length, session):
    """Why a frame header breaks section 5, or None."""
    opcode = first & 0x0F
    if first & RSV_ALL:
        # Section 5.2: RSV bits need an extension; permessage-deflate uses RSV1 on the
        # first frame of a data message only (RFC 7692 section 6).
        if (first & RSV_ALL) != RSV1 or session.deflate is None \
                or opcode not in (TEXT, BINARY):
            return "reserved bits set (0x%02x)" % (first & RSV_ALL)
    if opcode >= CLOSE:
        if opcode > PONG:
            return "unknown opcode %d" % opcode
        if not first & FIN:  # section 5.5
            return "fragmented control frame"
        if length > 125:
            return "control frame of %d bytes (max 125)" % length
        return None
    if opcode == CONTINUATION:
        if not session.message_opcode:
            return "continuation frame without a message to continue"
        return None
    if opcode > BINARY:
        return "unknown opcode %d" % opcode
    if session.message_opcode:
        return "new message inside a fragmented message"
    return None


def receive(package, connection, session):
    """``decode`` for an open connection: the message this frame completes, or NOTHING."""
    header = session.header_size
    first = session.first_byte
    if session.client:
        payload = package[header:]
    else:
        payload = apply_mask(package[header:], package[header - 4:header])
    if first == 0x81:  # fast path: a whole text message in one frame, no extension
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return fail(connection, INVALID_DATA, "invalid UTF-8 in a text message")
    if first == 0x82:
        return payload
    opcode = first & 0x0F
    if opcode >= CLOSE:
        return _control(opcode, payload, connection, session)
    if opcode:
        session.message_opcode = opcode
        session.compressed = bool(first & RSV1)
        session.data = bytearray()
        if opcode == TEXT:
            session.utf8 = _utf8_decoder()
    return _fragment(payload, bool(first & FIN), len(package), connection, session)


def _fragment(payload, fin, wire, connection, session):
    session.wire_size += wire
    session.fragment_count += 1
    if session.fragment_count > _max_fragments(connection):
        return fail(connection, TOO_BIG, "message of over %d fragments"
                    % _max_fragments(connection))
    if session.compressed:
        limit = connection.max_package_size - len(session.data)
        payload = session.deflate.decompress(payload, fin, limit)
        if payload is None:
            return fail(connection, TOO_BIG, "inflated message over max_package_size (%d)"
                        % connection.max_package_size)
        if payload is False:
            return fail(connection, INVALID_DATA, "bad permessage-deflate data")
    if session.utf8 is not None:
        try:  # section 8.1: fail as soon as the text is known to be bad
            session.utf8.decode(payload, fin)  # checks only: the text is decoded once, below
        except UnicodeDecodeError:
            return fail(connection, INVALID_DATA, "invalid UTF-8 in a text message")
    if not fin:
        session.data += payload
        return NOTHING
    text = session.utf8 is not None
    data = session.data
    session.reset_message()
    if not data:  # a message in one frame (a compressed one), or after empty ones
        return payload.decode("utf-8") if text else bytes(payload)
    data += payload
    return data.decode("utf-8") if text else bytes(data)


def _max_fragments(connection):
    limit = getattr(connection, "websocket_max_fragments", None)
    if limit is None:
        limit = getattr(connection.worker, "websocket_max_fragments", None) or MAX_FRAGMENTS
    return limit


def _control(opcode, payload, connection, session):
    if opcode == PING:
        connection.send(build(PONG, payload, session.client), True)
        call_hook(connection, "on_websocket_ping", payload)
    elif opcode == PONG:
        call_hook(connection, "on_websocket_pong", payload)
    else:
        _peer_closed(payload, connection, session)
    return NOTHING


def call_hook(connection, name, *args):
    call(getattr(connection, name, None), connection, *args)


def _peer_closed(payload, connection, session):
    """Section 5.5.1 and 7: check the peer's close frame, answer it with its own code."""
    if len(payload) == 1:
        return fail(connection, PROTOCOL_ERROR, "close frame with a 1-byte payload")
    reply = b""
    if payload:
        code = (payload[0] << 8) | payload[1]
        if code not in VALID_CLOSE_CODES and not 3000 <= code <= 4999:
            return fail(connection, PROTOCOL_ERROR, "close code %d is not allowed" % code)
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            return fail(connection, INVALID_DATA, "close reason is not UTF-8")
        reply = payload[:2]
    if session.close_sent:  # this answers ours: the handshake is over
        session.phase = CLOSED
        connection.destroy()
        return NOTHING
    session.close_sent = True
    session.phase = CLOSING
    connection.close(build(CLOSE, reply, session.client), True)
    return NOTHING


def refuse(connection, code, reason):
    """``fail`` for ``input``: 0, and the connection is no longer ESTABLISHED."""
    fail(connection, code, reason)
    return 0


def fail(connection, code, reason):
    """Fail the WebSocket connection (section 7.1.7): log, send close ``code``, close.

    Returns NOTHING, so that ``decode`` can ``return fail(...)``."""
    session = session_of(connection)
    log("websocket %s:%s: %s, closing with %d" % (
        connection.get_remote_ip(), connection.get_remote_port(), reason, code))
    session.reset_message()
    if session.close_sent or session.phase is not OPEN:
        session.phase = CLOSING
        connection.close()
        return NOTHING
    session.close_sent = True
    session.phase = CLOSING
    connection.close(close_frame(code, reason if len(reason) <= 120 else "", session.client),
                     True)
    return NOTHING


# -- writing ---------------------------------------------------------------------


def build(opcode_or_first, payload, masked=False):
    """The bytes of one frame. ``opcode_or_first`` is an opcode (FIN is added) or a
    whole first byte (FIN and RSV bits already set)."""
    first = opcode_or_first if opcode_or_first & 0xF0 else opcode_or_first | FIN
    size = len(payload)
    if masked:
        mask = urandom(4)
        payload = apply_mask(payload, mask)
        if size < 126:
            return bytes((first, size | MASKED)) + mask + payload
        if size < 65536:
            return _pack_short(first, 126 | MASKED, size) + mask + payload
        return _pack_long(first, 127 | MASKED, size) + mask + payload
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _pack_short(first, 126, size) + payload
    return _pack_long(first, 127, size) + payload


def close_frame(code=NORMAL, reason="", masked=False):
    payload = struct.pack("!H", code) + reason.encode("utf-8") if code else b""
    return build(CLOSE, payload, masked)


#: ``connection.websocket_type`` values, as Workerman's Websocket::BINARY_TYPE_*: force
#: every send to text frames (BLOB) or to binary frames (ARRAYBUFFER).
BINARY_TYPE_BLOB = "\x81"
BINARY_TYPE_ARRAYBUFFER = "\x82"
_FORCED = {BINARY_TYPE_BLOB: TEXT, BINARY_TYPE_ARRAYBUFFER: BINARY,
           "text": TEXT, "binary": BINARY, TEXT: TEXT, BINARY: BINARY}


def message_frame(data, connection, session):
    """``encode`` for an open connection: str -> text frame, bytes -> binary frame,
    dict/list/tuple -> JSON in a text frame; ``connection.websocket_type`` may force one kind."""
    kind = data.__class__
    if kind is str:
        payload, opcode = data.encode("utf-8"), TEXT
    elif kind is bytes:
        payload, opcode = data, BINARY
    else:
        payload, opcode = _payload_of(data)
    forced = connection.websocket_type
    if forced is not None:
        opcode = _FORCED[forced]
    deflate = session.deflate
    if deflate is not None and len(payload) >= deflate.threshold:
        return build(opcode | FIN | RSV1, deflate.compress(payload), session.client)
    if session.client:
        return build(opcode, payload, True)
    size = len(payload)
    if size < 126:
        return bytes((opcode | FIN, size)) + payload
    return build(opcode, payload)


def _payload_of(data):
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), BINARY
    if isinstance(data, str):
        return data.encode("utf-8"), TEXT
    if isinstance(data, (dict, list, tuple)):
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), TEXT
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return str(data).encode(), TEXT
    raise TypeError("websocket send() takes str, bytes, dict, list or a number, not %s"
                    % kind_name(data))


def kind_name(value):
    return type(value).__name__


def queue_before_open(data, connection, session):
    """Keep what the application sends before the handshake completes (bounded like the
    send buffer); it is sent right after the handshake. Returns b"" (send() -> None)."""
    if session.pending_size >= connection.max_send_buffer_size:
        statistics["send_fail"] += 1
        call_hook(connection, "on_error", SEND_FAIL, "send buffer full and drop package")
        return b""
    session.pending.append(data)
    session.pending_size += len(data) if isinstance(data, (str, bytes)) else 1
    if session.pending_size >= connection.max_send_buffer_size:
        call_hook(connection, "on_buffer_full")
    return b""


def flush_pending(connection, session):
    pending, session.pending, session.pending_size = session.pending, [], 0
    for data in pending:
        connection.send(data)
