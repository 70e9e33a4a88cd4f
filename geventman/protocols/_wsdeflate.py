"""permessage-deflate (RFC 7692) for the WebSocket protocols.

The server accepts the first offer it can honour; the client offers
``permessage-deflate; client_max_window_bits``. Inflating is bounded: a message
inflates to at most what is left of ``max_package_size``, so a zip bomb is refused
with 1009 after at most that many bytes of output, never by running out of memory.
"""
import zlib

NAME = "permessage-deflate"
#: Messages shorter than this are sent uncompressed (RSV1 off), as RFC 7692 section
#: 6.1 allows per message. 0: every message is compressed. With 64, kosoku's runner
#: of Autobahn 12.x.1/13.x.1 (16-byte messages) crashed on the uncompressed echoes
#: ("Strings must be encoded before hashing"), a bug of the runner, not of the wire.
THRESHOLD = 0
#: zlib settings for outgoing messages (measured in docs/websocket.md): level 1 costs
#: about half of the default 6 for 4 KB messages, for a few percent of size; memLevel
#: 5 instead of 8 gave the same size and speed and 41 KB instead of 96 KB per
#: connection (compressor + decompressor, measured as RSS over 2,000 of them).
LEVEL = 1
MEM_LEVEL = 5
_TAIL = b"\x00\x00\xff\xff"


class NegotiationError(ValueError):
    pass


class PerMessageDeflate:
    """One side's compression state. "local" is what we send, "remote" what we read."""

    __slots__ = ("local_bits", "local_no_context", "remote_no_context", "threshold",
                 "encoder", "decoder")

    def __init__(self, local_bits=15, local_no_context=False, remote_no_context=False):
        self.local_bits = local_bits
        self.local_no_context = local_no_context
        self.remote_no_context = remote_no_context
        self.threshold = THRESHOLD
        self.encoder = self.decoder = None

    def compress(self, payload):
        """The compressed payload of one message (section 7.2.1)."""
        encoder = self.encoder
        if encoder is None:
            encoder = zlib.compressobj(LEVEL, zlib.DEFLATED, -self.local_bits, MEM_LEVEL)
        data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
        self.encoder = None if self.local_no_context else encoder
        if data.endswith(_TAIL):
            data = data[:-4]
        return data or b"\x00"  # section 7.2.3.6

    def decompress(self, data, fin, limit):
        """Inflate one frame of a compressed message; None if the output would pass
        ``limit`` bytes, False if the data is not valid deflate."""
        if limit < 0:
            return None
        decoder = self.decoder
        if decoder is None:
            # A window of 15 reads what any smaller window produced.
            decoder = self.decoder = zlib.decompressobj(-15)
        if fin:
            data += _TAIL  # section 7.2.2
        try:
            output = decoder.decompress(data, limit + 1)
        except zlib.error:
            return False
        if len(output) > limit or decoder.unconsumed_tail:
            return None
        if fin and self.remote_no_context:
            self.decoder = None
        return output


def parse_offers(header):
    """``Sec-WebSocket-Extensions`` -> [(name, [(param, value or None), ...]), ...]."""
    offers = []
    for item in header.split(","):
        parts = [part.strip() for part in item.split(";")]
        if not parts[0]:
            continue
        params = []
        for part in parts[1:]:
            if not part:
                continue
            key, sep, value = part.partition("=")
            value = value.strip().strip('"') if sep else None
            params.append((key.strip().lower(), value))
        offers.append((parts[0].lower(), params))
    return offers


def _params(params):
    """Check RFC 7692 section 7.1 parameters: a dict, or NegotiationError."""
    found = {}
    for key, value in params:
        if key in found:
            raise NegotiationError("duplicate parameter %r" % key)
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise NegotiationError("%r takes no value" % key)
        elif key in ("server_max_window_bits", "client_max_window_bits"):
            if value is not None:
                if not (value.isdigit() and 8 <= int(value) <= 15 and value[0] != "0"):
                    raise NegotiationError("bad %r=%r" % (key, value))
                value = int(value)
            elif key == "server_max_window_bits":
                raise NegotiationError("server_max_window_bits needs a value")
        else:
            raise NegotiationError("unknown parameter %r" % key)
        found[key] = value
    return found


def accept(header):
    """Server side: (response header value, PerMessageDeflate) for the first acceptable
    permessage-deflate offer in ``header``, or (None, None)."""
    for name, params in parse_offers(header):
        if name != NAME:
            continue
        try:
            found = _params(params)
        except NegotiationError:
            continue
        bits = found.get("server_max_window_bits", 15)
        if bits == 8:  # zlib cannot compress with a 256-byte window (zlib issue 171)
            continue
        response = [NAME]
        if "server_no_context_takeover" in found:
            response.append("server_no_context_takeover")
        if "client_no_context_takeover" in found:
            response.append("client_no_context_takeover")
        if "server_max_window_bits" in found:
            response.append("server_max_window_bits=%d" % bits)
        deflate = PerMessageDeflate(bits, "server_no_context_takeover" in found,
                                    "client_no_context_takeover" in found)
        return "; ".join(response), deflate
    return None, None


OFFER = NAME + "; client_max_window_bits"


def accepted(header):
    """Client side: the PerMessageDeflate for the server's answer to OFFER;
    NegotiationError if the answer is not one the offer allows."""
    offers = parse_offers(header)
    if len(offers) != 1 or offers[0][0] != NAME:
        raise NegotiationError("unexpected extensions %r" % header)
    found = _params(offers[0][1])
    bits = found.get("client_max_window_bits") or 15
    if bits == 8:
        raise NegotiationError("client_max_window_bits=8 is not supported by zlib")
    return PerMessageDeflate(bits, "client_no_context_takeover" in found,
                             "server_no_context_takeover" in found)
