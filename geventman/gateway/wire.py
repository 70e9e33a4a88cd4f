"""The gateway <-> business worker link: a binary, length-prefixed protocol (sans-IO).

Every packet on an inner port is one header of 36 bytes, then ``ext`` (the command's
argument, or the client's session with an event), then ``body`` (a message). All
integers are big-endian; docs/gateway-protocol.md draws it byte by byte.

====== ==== ==================================================================
offset size field
====== ==== ==================================================================
0      4    length of the whole packet, header included
4      1    command (``Cmd``)
5      1    flags (``TEXT``, ``RAW``, ``JSON``, ``HAS_DATA``)
6      4    connection id of the client on its gateway (0: none)
10     4    request id: a query waits for the REPLY carrying the same id (0: none)
14     2    client port (events only)
16     16   client IP, IPv6 or IPv4-mapped (events only)
32     4    length of ext
36     ...  ext, then body
====== ==== ==================================================================

This module only turns values into bytes and back; it never touches a socket, and
it does not import gevent: ``geventman.client`` uses it from plain Python programs.
"""
import enum
import ipaddress
import json
import struct

HEADER = struct.Struct(">IBBIIH16sI")
HEADER_SIZE = HEADER.size  # 36
#: Largest packet a link accepts unless configured otherwise (a broadcast of a big
#: message crosses a link once, so this bounds the largest message plus its argument).
MAX_PACKET_SIZE = 32 << 20


class Cmd(enum.IntEnum):
    # gateway -> business worker: what happened to a client
    CONNECT = 1
    MESSAGE = 3
    CLOSE = 4
    WEBSOCKET_CONNECT = 205
    # business worker or GatewayClient -> gateway: what to do
    SEND_TO_ONE = 5
    SEND_TO_ALL = 6
    KICK = 7
    DESTROY = 8
    UPDATE_SESSION = 9      # recursive merge
    BIND_UID = 12
    UNBIND_UID = 13
    SEND_TO_UID = 14
    JOIN_GROUP = 20
    LEAVE_GROUP = 21
    SEND_TO_GROUP = 22
    QUERY = 25              # every read: ext names the query (see Gateway._queries)
    UNGROUP = 27
    PATCH_SESSION = 29      # top-level keys set and deleted (a handler's changes)
    SET_SESSION = 204       # overwrite
    # the link itself
    WORKER_CONNECT = 200    # a business worker introduces itself (secret key, name)
    PING = 201
    CLIENT_CONNECT = 202    # a GatewayClient introduces itself (secret key)
    WORKER_LEAVING = 206    # a business worker stops: route its clients elsewhere
    LEAVE_ACK = 207         # every event for the leaving worker was sent before this
    REPLY = 208             # the answer to a request id, JSON in the body
    WELCOME = 209           # the gateway accepted a worker: ext says its client port
    REFUSED = 210           # the gateway refused the peer (bad secret key)
    RETURNED = 211          # a leaving worker gives back an event it did not start
                            # (body: the event's packet); it goes before those held


#: Events carry a session; commands that target one client carry its connection id.
EVENTS = frozenset((Cmd.CONNECT, Cmd.MESSAGE, Cmd.CLOSE, Cmd.WEBSOCKET_CONNECT))
_KNOWN = frozenset(int(cmd) for cmd in Cmd)

# flags
TEXT = 0x01      # body is UTF-8 text (a str)
RAW = 0x02       # the gateway writes body as it is, without the client protocol's encode
JSON = 0x04      # body is a JSON value (dict, list, number...)
HAS_DATA = 0x08  # KICK: the body is a last message (an empty one included)

NO_ADDRESS = bytes(16)


class WireError(ValueError):
    """A packet that does not follow this protocol."""


def pack(cmd, connection_id=0, ext=b"", body=b"", flags=0, request_id=0,
         client_port=0, client_ip=NO_ADDRESS):
    """One packet as bytes."""
    length = HEADER_SIZE + len(ext) + len(body)
    return HEADER.pack(length, cmd, flags, connection_id, request_id, client_port,
                       client_ip, len(ext)) + ext + body


def replace_ext(package, ext):
    """A packet (bytes) with another ext: an event held in a gateway gets the client's
    session as it is when the event is finally sent."""
    ext_length = _EXT_LENGTH.unpack_from(package, 32)[0]
    end = HEADER_SIZE + ext_length
    if package[HEADER_SIZE:end] == ext:
        return package
    header = bytearray(package[:HEADER_SIZE])
    _PREFIX_LENGTH.pack_into(header, 0, len(package) - ext_length + len(ext))
    _EXT_LENGTH.pack_into(header, 32, len(ext))
    return bytes(header) + ext + package[end:]


class Packet:
    """A decoded packet; ``ext`` and ``body`` are bytes (see ``data`` and ``argument``)."""

    __slots__ = ("cmd", "flags", "connection_id", "request_id", "client_port",
                 "client_ip", "ext", "body")

    def __init__(self, cmd, flags, connection_id, request_id, client_port, client_ip,
                 ext, body):
        self.cmd, self.flags = cmd, flags
        self.connection_id, self.request_id = connection_id, request_id
        self.client_port, self.client_ip = client_port, client_ip
        self.ext, self.body = ext, body

    @property
    def data(self):
        """The message in the body: str, bytes, or a JSON value, as it was sent."""
        return decode_data(self.body, self.flags)

    @property
    def argument(self):
        """ext as a JSON value (None when empty)."""
        return json.loads(self.ext) if self.ext else None

    @property
    def remote_ip(self):
        return ip_text(self.client_ip)

    def __repr__(self):
        return "<Packet %s conn=%d req=%d ext=%d body=%d>" % (
            _name(self.cmd), self.connection_id, self.request_id, len(self.ext),
            len(self.body))


def packet_length(buffer, max_size=MAX_PACKET_SIZE):
    """``input`` of the link protocol: 0 for "need more", the packet length, or -1."""
    if len(buffer) < HEADER_SIZE:
        return 0
    length, cmd, ext_length = _CHECKED.unpack_from(buffer)
    if (length < HEADER_SIZE or length > max_size or cmd not in _KNOWN
            or ext_length > length - HEADER_SIZE):
        return -1
    return length


_CHECKED = struct.Struct(">IB27xI")  # length, command, ext length: what input() checks
_EXT_LENGTH = _PREFIX_LENGTH = struct.Struct(">I")


def unpack(package):
    """A whole packet (as ``packet_length`` measured it) -> Packet."""
    (length, cmd, flags, connection_id, request_id, client_port, client_ip,
     ext_length) = HEADER.unpack_from(package)
    if length != len(package) or ext_length > length - HEADER_SIZE:
        raise WireError("packet length %d does not match its header" % len(package))
    end = HEADER_SIZE + ext_length
    return Packet(cmd, flags, connection_id, request_id, client_port, client_ip,
                  package[HEADER_SIZE:end], package[end:])


class GatewayProtocol:
    """The link protocol in Workerman's three functions; ``decode`` gives a Packet.

    A peer that sends a packet of an unknown command, a length below the header or
    above ``connection.max_package_size`` is bad input: the connection logs one line
    and closes (TcpConnection does both for a negative ``input``)."""

    @staticmethod
    def input(buffer, connection):
        return packet_length(buffer, connection.max_package_size)

    @staticmethod
    def decode(package, connection):
        return unpack(package)

    @staticmethod
    def encode(data, connection):
        return data  # callers hand finished packets to send(..., raw=True)


# -- messages and arguments ----------------------------------------------------------

def encode_data(data):
    """A message -> (body bytes, flags). str travels as UTF-8 text, bytes as they are,
    anything else as JSON (a dict sent to a WebSocket client becomes a JSON text frame,
    as ``connection.send(dict)`` does)."""
    kind = data.__class__
    if kind is str:
        return data.encode("utf-8"), TEXT
    if kind is bytes:
        return data, 0
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data), 0
    return dumps(data), JSON


def decode_data(body, flags):
    if flags & TEXT:
        return body.decode("utf-8", "replace")
    if flags & JSON:
        return json.loads(body)
    return body


def dumps(value):
    """Compact JSON bytes (ext arguments, sessions, replies)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(raw):
    return json.loads(raw) if raw else None


# -- addresses and client ids ------------------------------------------------------

def ip_bytes(text):
    """'10.0.0.1' or '::1' -> 16 bytes (IPv4 as IPv4-mapped IPv6)."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


def ip_text(packed):
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(byte) for byte in packed[12:])
    return str(ipaddress.IPv6Address(packed))


_CLIENT_ID = struct.Struct(">4sHI")


def client_id(lan_ip, lan_port, connection_id):
    """The client id of connection ``connection_id`` on the gateway at lan_ip:lan_port:
    20 lower-case hex digits (4 bytes of IPv4 address, 2 of port, 4 of connection id),
    GatewayWorker's format, so any process can tell which gateway holds the client."""
    return _CLIENT_ID.pack(ipaddress.IPv4Address(lan_ip).packed, lan_port,
                           connection_id).hex()


def parse_client_id(value):
    """client id -> ('10.0.0.1', 2300, 17); WireError if it is not one."""
    if not isinstance(value, str) or len(value) != 20:
        raise WireError("not a client id: %r" % (value,))
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise WireError("not a client id: %r" % (value,)) from None
    ip, port, connection_id = _CLIENT_ID.unpack(raw)
    return str(ipaddress.IPv4Address(ip)), port, connection_id


def _name(cmd):
    try:
        return Cmd(cmd).name
    except ValueError:
        return str(cmd)
