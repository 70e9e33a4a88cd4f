"""Request framing: where one HTTP/1.x request ends, or why it is rejected.

The request line and header fields are checked by httptools (llhttp, the C parser
uvicorn uses): CRLF line ends only, no obsolete line folding, token header names,
no control bytes in values, one Content-Length, never Content-Length together with
Transfer-Encoding. httptools is fed each byte once and never past the end of the
head, so a pipelined request behind this one is never parsed early. On top of it
this module adds what llhttp lets through: the version must be HTTP/1.0 or HTTP/1.1
(llhttp also takes 0.9, 2.0, RTSP/ and ICE/), exactly one space between the three
parts of the request line, one Host in HTTP/1.1 (RFC 9112 3.2), the asterisk form
only for OPTIONS (RFC 9112 3.2.4), 501 for a well-formed method llhttp does not know
(RFC 9110 9.1; a method that is not a token stays 400), and only the chunked transfer
coding (RFC 9112 6.1). Chunked bodies are cut by ``ChunkScanner``: httptools cannot
say at which byte a message ended.

Empty lines before a request line are skipped (RFC 9112 2.2) but count against the
head limit, and every step here resumes where the last read stopped, so the work per
read is proportional to the new bytes.

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
# RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, and 7.1.1:
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ).
# Whitespace only around ";" and "=": a bare "5 " (no extension after it) stays an error.
_BWS = rb"[ \t]*"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:%s;%s%s(?:%s=%s(?:%s|%s))?)*)\r\n" % (
    _BWS, _BWS, _TOKEN, _BWS, _BWS, _TOKEN, _QUOTED))
_EMPTY_LINES = re.compile(rb"[\r\n]*")
_TOKEN_CHARS = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
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

    def cacheable(self):
        """May another connection that sends the same bytes reuse this Head?"""
        return not (self.chunked or self.upgrade or self.expect is not None)


class ParseState:
    """Per-connection progress through one head: the httptools parser, how much of the
    buffer it was fed, where the request line starts, how far its method was scanned."""

    __slots__ = ("parser", "fed", "start", "scanned")

    def __init__(self):
        self.parser = None
        self.fed = 0
        self.start = 0      # empty lines skipped so far: the request line starts here
        self.scanned = -1   # end of the method scanned so far; -1: not begun; None: checked


def read_head(buffer, state, limit=HEADER_LIMIT):
    """The Head of the request at the start of ``buffer``, or None: need more bytes.

    RFC 9112 2.2 lets a server ignore empty lines before a request line; here they
    count against ``limit`` like the request line and fields (all of them, from the
    first byte of ``buffer``), so a client cannot make a head of megabytes of CRLF."""
    if state.scanned is not None:
        if state.scanned < 0 and (buffer[:4] == b"GET " or buffer[:5] == b"POST "):
            state.scanned = None   # the common case, with nothing to scan (0.9 µs less)
        elif not _method_checked(buffer, state, limit):
            if len(buffer) >= limit:
                raise Reject(431, "request line and headers over %d bytes" % limit)
            return None
    end = buffer.find(b"\r\n\r\n", max(state.start, state.fed - 3))
    stop = end + 4 if end >= 0 else len(buffer)
    if stop > limit or (end < 0 and len(buffer) >= limit):
        raise Reject(431, "request line and headers over %d bytes" % limit)
    upgrade = _feed(state, buffer, stop)
    if end < 0:
        return None
    start = state.start
    state.fed = state.start = 0   # the next request starts afresh
    state.scanned = -1
    return _head(buffer, start, end, state, upgrade)


def _method_checked(buffer, state, limit):
    """Skip empty lines, then scan the method; True once it is complete and known.

    llhttp refuses a method it does not know with the same error as a malformed one,
    as soon as it sees the first unexpected byte: so it is fed only once the method is
    complete, and an unknown but well-formed method gets 501 (RFC 9110 9.1)."""
    if state.scanned < 0:
        start = state.start = _EMPTY_LINES.match(buffer, state.start, limit + 1).end()
        if start == len(buffer):
            return False
        state.scanned = start
    end = state.scanned = _TOKEN_CHARS.match(buffer, state.scanned, limit + 1).end()
    if end == len(buffer):
        return False
    state.scanned = None
    method = bytes(buffer[state.start:end])
    if method and buffer[end:end + 1] == b" " and not _known_method(method):
        raise Reject(501, "method %r not implemented" % method[:40])
    return True  # not a token, or not followed by one space: llhttp answers 400


_llhttp_methods = set()   # methods llhttp was seen to accept (a small, fixed set)


def _known_method(method):
    if method in _METHODS or method in _llhttp_methods:
        return True
    try:
        httptools.HttpRequestParser(_NoCallbacks).feed_data(method + b" ")
    except httptools.HttpParserInvalidMethodError:
        return False
    except httptools.HttpParserError:
        return True   # llhttp takes the method and has something else to say later
    _llhttp_methods.add(method)
    return True


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
    line = bytes(buffer[start:line_end])  # buffer may be a bytearray (tcp.py)
    parts = line.split(b" ")
    version = _VERSIONS.get(parts[-1])
    if len(parts) != 3 or version is None:
        state.parser = None
        raise Reject(400, "bad request line %r" % line[:100])
    head = Head()
    head.method = _METHODS.get(parts[0]) or parts[0].decode("ascii")
    head.target = parts[1]
    if head.target == b"*" and head.method != "OPTIONS":
        state.parser = None   # RFC 9112 3.2.4: the asterisk form is for OPTIONS only
        raise Reject(400, "target * with %s (only OPTIONS may use it)" % head.method)
    head.version = version
    head.head = bytes(buffer[line_end:end + 2])  # CRLF, then field lines each ending in CRLF
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

    __slots__ = ("position", "data", "in_trailers", "limit")

    def __init__(self, head_end, limit):
        self.position = head_end
        # One bytearray, not a list of chunks: a body of 2-byte chunks kept as bytes
        # objects cost 6.6 times max_package_size (measured); this costs its size.
        self.data = bytearray()
        self.in_trailers = False
        self.limit = limit

    @property
    def body(self):
        return bytes(self.data)

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
        if len(self.data) + size > self.limit:
            raise Reject(413, "chunked body over %d bytes" % self.limit)
        data_start = match.end()
        data_end = data_start + size
        if len(buffer) < data_end + 2:
            return False
        if buffer[data_end:data_end + 2] != b"\r\n":
            raise Reject(400, "chunk data not followed by CRLF")
        self.data += buffer[data_start:data_end]
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
        raise Reject(400, "bad %s %r" % (what, bytes(buffer[position:position + 40])))
