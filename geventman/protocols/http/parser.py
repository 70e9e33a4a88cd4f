"""Request framing: where one HTTP/1.x request ends, or why it is rejected.

The request line and header fields are checked by httptools (llhttp, the C parser
uvicorn uses): CRLF line ends only, no obsolete line folding, token header names,
no control bytes in values, one Content-Length, never Content-Length together with
Transfer-Encoding. httptools is fed each byte once and never past the end of the
head, so a pipelined request behind this one is never parsed early. On top of it
this module adds what llhttp lets through: the version must be HTTP/1.0 or HTTP/1.1
(llhttp also takes 0.9, 2.0, RTSP/ and ICE/), exactly one space between the three
parts of the request line, one Host in HTTP/1.1 (RFC 9112 3.2), and only the chunked
transfer coding (RFC 9112 6.1). Chunked bodies are cut by ``ChunkScanner``: httptools
cannot say at which byte a message ended.

Everything here is sans-IO: ``read_head(buffer, state)`` and ``ChunkScanner.scan``
see bytes and return numbers or raise ``Reject(status, reason)``.
"""
import re

import httptools

HEADER_LIMIT = 16384      # request line + header fields, bytes (-> 431)
CHUNK_LINE_LIMIT = 4096   # one chunk-size line with its extensions (-> 400)

_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_METHODS = {name.encode(): name for name in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")}

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF; like llhttp, no whitespace inside.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:;%s(?:=(?:%s|%s))?)*)\r\n" % (
    _TOKEN, _TOKEN, _QUOTED))
_FIELD_LINE = re.compile(rb"%s:[ \t]*[^\x00-\x08\x0a-\x1f\x7f]*\r\n" % _TOKEN)


class Reject(Exception):
    """Bad input: answer ``status`` and close the connection."""

    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class Head:
    """What the framing needs to know about one request; the Request grows from it."""

    __slots__ = ("method", "target", "version", "head", "head_end", "keep_alive",
                 "length", "chunked", "expect", "upgrade")

    def __repr__(self):
        return "<Head %s %r HTTP/%s>" % (self.method, self.target, self.version)


class ParseState:
    """Per-connection progress: the httptools parser, how much of it was fed."""

    __slots__ = ("parser", "fed")

    def __init__(self):
        self.parser = None
        self.fed = 0


def read_head(buffer, state, limit=HEADER_LIMIT):
    """The Head of the request at the start of ``buffer``, or None: need more bytes."""
    start = 0
    if buffer[:1] in (b"\r", b"\n"):  # RFC 9112 2.2: ignore empty lines before a request
        start = len(buffer) - len(buffer.lstrip(b"\r\n"))
    end = buffer.find(b"\r\n\r\n", max(start, state.fed - 3))
    stop = end + 4 if end >= 0 else len(buffer)
    if stop - start > limit or (end < 0 and len(buffer) - start >= limit):
        raise Reject(431, "request line and headers over %d bytes" % limit)
    upgrade = _feed(state, buffer, stop)
    if end < 0:
        return None
    state.fed = 0
    return _head(buffer, start, end, state, upgrade)


def _feed(state, buffer, stop):
    parser = state.parser
    if parser is None:
        parser = state.parser = httptools.HttpRequestParser(_NoCallbacks)
    fed = state.fed
    state.fed = stop
    if fed >= stop:
        return False
    try:
        parser.feed_data(buffer if fed == 0 and stop == len(buffer) else buffer[fed:stop])
    except httptools.HttpParserUpgrade:
        return True
    except httptools.HttpParserError as error:
        state.parser = None
        raise Reject(400, "bad request: %s" % (error.args[0] if error.args else error))
    return False


class _NoCallbacks:
    """httptools calls only the callbacks that exist: none, so no Python per header."""


def _head(buffer, start, end, state, upgrade):
    line_end = buffer.find(b"\r\n", start)
    parts = buffer[start:line_end].split(b" ")
    version = _VERSIONS.get(parts[-1])
    if len(parts) != 3 or version is None:
        state.parser = None
        raise Reject(400, "bad request line %r" % buffer[start:line_end][:100])
    head = Head()
    head.method = _METHODS.get(parts[0]) or parts[0].decode("ascii")
    head.target = parts[1]
    head.version = version
    head.head = buffer[line_end:end + 2]  # CRLF, then field lines each ending in CRLF
    head.head_end = end + 4
    head.upgrade = upgrade
    try:
        _frame(head, head.head.lower())
    finally:
        if head.chunked or head.length or upgrade or not head.keep_alive:
            state.parser = None  # it stands inside a body, or after the last request
    return head


def _frame(head, fields):
    """Body framing and the checks llhttp leaves to us (``fields`` is lower-case).
    (``in`` before ``_field``: most requests have none of these fields.)"""
    head.length = 0
    head.chunked = False
    head.expect = None
    head.keep_alive = False
    hosts = fields.count(b"\r\nhost:")
    if hosts != 1 and (hosts or head.version == "1.1"):
        raise Reject(400, "%s Host fields in an HTTP/%s request" % (hosts, head.version))
    if b"\r\ntransfer-encoding:" in fields:
        coding = _field(fields, b"\r\ntransfer-encoding:")
        if head.version == "1.0":
            raise Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
        if coding.replace(b" ", b"").strip(b",") != b"chunked":
            raise Reject(501, "transfer coding %r not implemented" % coding)
        head.chunked = True
    elif b"\r\ncontent-length:" in fields:
        head.length = int(_field(fields, b"\r\ncontent-length:"))  # llhttp checked it
    if b"\r\nexpect:" in fields and head.version == "1.1":
        head.expect = _field(fields, b"\r\nexpect:")
    # RFC 9112 9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive".
    # (llhttp's should_keep_alive() forgets once the message is complete.)
    if b"\r\nconnection:" in fields:
        tokens = [token.strip() for token in _field(fields, b"\r\nconnection:").split(b",")]
        head.keep_alive = (b"close" not in tokens and
                           (head.version == "1.1" or b"keep-alive" in tokens))
    else:
        head.keep_alive = head.version == "1.1"


def _field(fields, name):
    """The stripped value of field ``name`` (CRLF + lower-case name + colon), or None."""
    position = fields.find(name)
    if position < 0:
        return None
    position += len(name)
    return fields[position:fields.find(b"\r\n", position)].strip(b" \t")


class ChunkScanner:
    """Cuts a chunked body (RFC 9112 7.1), resuming where the last call stopped.

    ``scan(buffer)`` returns the length of the whole request (head, chunks,
    trailer section) once the last chunk and the trailers are in, else 0.
    The decoded body is in ``body`` afterwards. Trailer fields are checked and dropped.
    """

    __slots__ = ("position", "chunks", "size", "in_trailers", "limit")

    def __init__(self, head_end, limit):
        self.position = head_end
        self.chunks = []
        self.size = 0
        self.in_trailers = False
        self.limit = limit

    @property
    def body(self):
        return b"".join(self.chunks)

    def scan(self, buffer):
        while not self.in_trailers:
            if not self._chunk(buffer):
                return 0
        return self._trailers(buffer)

    def _chunk(self, buffer):
        position = self.position
        match = _CHUNK_LINE.match(buffer, position)
        if match is None:
            _incomplete_line(buffer, position, "chunk size line")
            return False
        size = int(match.group(1), 16)
        if size == 0:
            self.position = match.end()
            self.in_trailers = True
            return True
        if self.size + size > self.limit:
            raise Reject(413, "chunked body over %d bytes" % self.limit)
        data_start = match.end()
        data_end = data_start + size
        if len(buffer) < data_end + 2:
            return False
        if buffer[data_end:data_end + 2] != b"\r\n":
            raise Reject(400, "chunk data not followed by CRLF")
        self.chunks.append(buffer[data_start:data_end])
        self.size += size
        self.position = data_end + 2
        return True

    def _trailers(self, buffer):
        while True:
            position = self.position
            if buffer[position:position + 2] == b"\r\n":
                return position + 2
            match = _FIELD_LINE.match(buffer, position)
            if match is None:
                if buffer[position:] == b"\r":
                    return 0
                _incomplete_line(buffer, position, "trailer field")
                return 0
            self.position = match.end()


def _incomplete_line(buffer, position, what):
    """Raise if the line at ``position`` is complete (so it did not match) or too long."""
    if buffer.find(b"\n", position) >= 0 or len(buffer) - position > CHUNK_LINE_LIMIT:
        raise Reject(400, "bad %s %r" % (what, buffer[position:position + 40]))
