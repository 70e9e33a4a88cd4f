"""http://: the Http protocol class (input, decode, encode, on_close).

``input`` cuts one request at a time (see parser.py), so pipelined requests reach
``on_message`` one by one, in order, each answered before the next is decoded.
``decode`` gives a ``Request``; ``encode`` turns what the handler sends (a string,
bytes, or a ``Response``) into a whole HTTP response. A request that is not to be
kept alive (``Connection: close``, HTTP/1.0 without keep-alive) closes the
connection once its response is written. Bad input is answered with its status
(400, 413, 417, 431, 501), logged in one line, and that connection is closed.
"""
import os

from geventman.log import log
from geventman.protocols import timeout
from geventman.protocols.http import parser, response, session, stream
from geventman.protocols.http.context import current_request
from geventman.protocols.http.request import Request
from geventman.protocols.http.response import Response

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _State:
    """Per-connection HTTP state, kept on the connection as ``_http``."""

    __slots__ = ("parse", "pending", "scanner", "current", "answered", "drained", "gzip",
                 "timed")

    def __init__(self, connection):
        self.parse = parser.ParseState()
        self.pending = None       # the Head of the request being read
        self.scanner = None       # its ChunkScanner when the body is chunked
        self.current = None       # the last decoded Request: the one being answered
        self.answered = None      # the last Request a response was encoded for
        self.drained = None       # set while a file streams (stream.py)
        self.timed = False        # the request being read is on timeout.py's watch list
        level = vars(connection).get("gzip")   # no AttributeError per connection
        if level is None and connection.worker is not None:
            level = vars(connection.worker).get("gzip")
        self.gzip = 6 if level is True else int(level or 0)


def _state(connection):
    try:
        return connection._http
    except AttributeError:
        state = connection._http = _State(connection)
        return state


class Http:
    header_limit = parser.HEADER_LIMIT

    @staticmethod
    def timed_out(connection):
        """The answer to a request not complete within request_timeout (timeout.py)."""
        text = b"Request Timeout"
        return response.head(408, [("Content-Type", "text/plain")], len(text), False) + text

    @staticmethod
    def input(buffer, connection):
        state = _state(connection)
        head = state.pending
        if head is None and buffer.__class__ is bytes and \
                len(buffer) <= connection.max_package_size:
            head = known_head(buffer, state)
            if head is not None:
                state.pending = head   # the same bytes as a request already checked
                return len(buffer)
        try:
            if head is None:
                head = parser.read_head(buffer, state.parse, Http.header_limit)
                if head is None:
                    state.timed = timeout.watch(connection, "head")
                    return 0
                _admit(head, buffer, connection, state)
                if head.head_end + head.length == len(buffer) <= HEAD_CACHE_BYTES \
                        and head.cacheable():
                    _remember(buffer, head)
            if state.scanner is not None:
                if len(buffer) >= connection.max_package_size:
                    raise parser.Reject(413, "body over max_package_size")
                length = state.scanner.scan(buffer)
            else:
                length = head.head_end + head.length
            if not length or length > len(buffer):
                state.timed = timeout.watch(connection, "body")
            return length
        except parser.Reject as rejection:
            return _reject(connection, state, rejection)

    @staticmethod
    def decode(package, connection):
        state = connection._http
        head, state.pending = state.pending, None
        if state.timed:  # the body came in later reads: it is whole now
            state.timed = False
            timeout.done(connection)
        if state.scanner is not None:
            body, state.scanner = state.scanner.body, None
        else:
            body = package[head.head_end:] if head.length else b""
        previous = state.current
        if previous is not None and previous._parsed_form:
            previous.cleanup()   # temporary files of its uploads
        request = state.current = Request(head, connection, body)
        current_request.set(request)
        if head.upgrade:
            return _upgrade(package, connection, request)
        return request

    @staticmethod
    def encode(data, connection):
        try:
            state = connection._http
        except AttributeError:
            state = _state(connection)
        request = state.answered = state.current
        if isinstance(data, Response):
            return _respond(connection, state, request, data)
        body = data.encode() if data.__class__ is str else _bytes(data)
        if request is None or request.response is not None or (
                request.session_state is not None) or state.gzip:
            return _respond(connection, state, request, Response(200, None, body))
        keep_alive = request.keep_alive
        if keep_alive and connection.worker is not None:
            keep_alive = not _stopping(connection)
        if request.method == "HEAD":
            data = b"%b%d\r\n\r\n" % (response.hello_head(keep_alive), len(body))
        else:
            data = b"%b%d\r\n\r\n%b" % (response.hello_head(keep_alive), len(body), body)
        return data if keep_alive else _final(connection, data, False)

    @staticmethod
    def handler_failed(connection):
        """on_message raised: answer 500 (once) instead of leaving the client waiting."""
        state = connection.__dict__.get("_http")
        if state is not None and state.current is not None and state.answered is not state.current:
            connection.send(Response(500, None, b"500 Internal Server Error"))

    @staticmethod
    def on_close(connection):
        state = connection.__dict__.get("_http")
        if state is None:
            return
        if state.timed:
            timeout.done(connection)
        if state.drained is not None:
            state.drained.set()
        if state.current is not None:
            state.current.cleanup()


# Parsed requests by their bytes. A client that repeats a small request byte for byte
# (a keep-alive client polling one URL: the common case under load) is answered
# without parsing it again; Workerman keeps the same kind of cache. Only whole
# requests that passed every check and need nothing per connection are kept (no
# chunked body, no Expect, no Upgrade); a Head is never changed once made.
HEAD_CACHE_BYTES = 512
HEAD_CACHE_SIZE = 512
_heads = {}


def known_head(buffer, state):
    """The Head of ``buffer`` if it is a whole request seen before and may be served
    as it was then: nothing of another request is being read on this connection."""
    head = _heads.get(buffer)
    if head is None or state.pending is not None or state.parse.scanned != -1 or \
            state.parse.fed or head.head_end > Http.header_limit:
        return None
    return head


def _remember(buffer, head):
    if len(_heads) >= HEAD_CACHE_SIZE:
        del _heads[next(iter(_heads))]   # the oldest
    _heads[buffer if buffer.__class__ is bytes else bytes(buffer)] = head


def _admit(head, buffer, connection, state):
    """Checks on a complete head before its body is read."""
    if head.method == "CONNECT":
        raise parser.Reject(405, "CONNECT is not served")
    if head.head_end + head.length > connection.max_package_size:
        raise parser.Reject(413, "Content-Length %d over max_package_size" % head.length)
    if head.chunked:
        state.scanner = parser.ChunkScanner(head.head_end, connection.max_package_size)
    state.pending = head
    if head.expect is not None:
        if head.expect.lower() != b"100-continue":
            raise parser.Reject(417, "Expect %r" % head.expect)
        if head.chunked or len(buffer) < head.head_end + head.length:
            connection.send(CONTINUE, raw=True)


def _reject(connection, state, rejection):
    state.pending = state.scanner = None
    log("http: %d %s from %s:%s, closing" % (
        rejection.status, rejection.reason, connection.get_remote_ip(),
        connection.get_remote_port()))
    text = response.REASONS.get(rejection.status, "Bad Request").encode()
    connection.close(response.head(rejection.status, [("Content-Type", "text/plain")],
                                   len(text), False) + text, raw=True)
    return 0


def _respond(connection, state, request, answer):
    """The general path: any status, headers, cookies, session, gzip, files."""
    status, reason, headers = answer.status, answer.reason, answer.headers
    keep_alive = (request is None or request.keep_alive) and not _stopping(connection)
    if request is not None:
        extra = request.response
        if extra is not None:
            request.response = None
            if status == 200 and not answer.headers:
                status, reason = extra.status, extra.reason
            headers = extra.headers + headers
        if request.session_state is not None:
            cookie = session.save(request)
            if cookie:
                headers = headers + [("Set-Cookie", cookie)]
    head_only = request is not None and request.method == "HEAD"
    if answer.file is not None:
        return _file(connection, state, answer, status, reason, headers, keep_alive, head_only)
    body = _bytes(answer.body)
    if state.gzip and request is not None and _accepts_gzip(request):
        body, headers = response.gzip_body(body, headers, state.gzip)
    data = response.head(status, headers, len(body), keep_alive, reason)
    return _final(connection, data if head_only else data + body, keep_alive)


def _file(connection, state, answer, status, reason, headers, keep_alive, head_only):
    path, offset, length = answer.file
    try:
        handle = open(path, "rb") if isinstance(path, (str, bytes, os.PathLike)) else path
    except OSError:
        text = b"404 Not Found"
        data = response.head(404, [("Content-Type", "text/plain")], len(text), keep_alive)
        return _final(connection, data if head_only else data + text, keep_alive)
    if length is None:
        length = max(0, os.fstat(handle.fileno()).st_size - offset)
    data = response.head(status, headers, length, keep_alive, reason)
    if head_only or not length:
        handle.close()
    else:
        data += stream.file_body(connection, state, handle, offset, length, keep_alive)
        if length > stream.SMALL_FILE:
            return data  # the streamer sends the rest, then closes or resumes reading
    return _final(connection, data, keep_alive)


def _stopping(connection):
    """While the worker stops or reloads, each answer closes its connection: the
    client learns it from ``Connection: close`` instead of finding the socket shut
    as it sends its next request (RFC 9112 9.6)."""
    worker = connection.worker
    return worker is not None and getattr(worker, "_stopping", False)  # as the core reads it


def _bytes(data):
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return str(data).encode()   # numbers and the like, as PHP's echo would


def _final(connection, data, keep_alive):
    """``data`` completes the response: close after it unless the request keeps alive."""
    if keep_alive:
        return data
    connection.close(data, raw=True)
    return b""


def _accepts_gzip(request):
    accepted = request.header("accept-encoding", "")
    return "gzip" in accepted.lower()


def _upgrade(package, connection, request):
    """``Upgrade: websocket`` hands the connection to websocket:// (Workerman 3.x
    switches protocols the same way); bytes after the head are read as frames."""
    if request.header("upgrade", "").lower() != "websocket" or (
            connection.worker is not None and
            vars(connection.worker).get("websocket_upgrade") is False):
        return request
    try:
        from geventman.protocols import websocket
    except ImportError:
        return request
    return websocket.upgrade(connection, package[:request._head.head_end])
