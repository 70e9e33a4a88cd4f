"""Responses: the ``Response`` object, and the bytes of a status line and header block.

``connection.send("text")`` answers ``200`` with ``text/html;charset=utf-8``; the
header block of that common case is precomputed, with the ``Date`` refreshed once a
second, so such a response costs one bytes join and one ``send``. A ``Response``
(or headers set with ``http.header()`` / ``http.set_cookie()`` during the request)
takes the general path.
"""
import email.utils
import os
import time
import zlib
from http import HTTPStatus
from time import time as _time
from urllib.parse import quote

from geventman.protocols.http import mime

SERVER = b"geventman"
DEFAULT_TYPE = "text/html;charset=utf-8"
GZIP_MIN_SIZE = 1024
REASONS = {status.value: status.phrase for status in HTTPStatus}
_NO_BODY = frozenset((204, 304)) | frozenset(range(100, 200))
_COMPRESSIBLE = ("text/", "application/json", "application/javascript",
                 "application/xml", "image/svg+xml", "application/wasm")
_DEFAULT_NAMES = frozenset(("server", "date", "content-type", "connection",
                            "content-length", "transfer-encoding"))


class Response:
    """``Response(status, headers, body)``; ``with_file(path)`` sends a file instead.

    ``headers`` is a dict or a list of ``(name, value)`` pairs (lists may repeat a name).
    Server, Date, Connection and Content-Length are added; Content-Type defaults to
    text/html (for files, to the type of the file name).
    """

    def __init__(self, status=200, headers=None, body=b""):
        self.status = status
        self.reason = None
        self.headers = []
        if headers:
            for name, value in (headers.items() if isinstance(headers, dict) else headers):
                self.add_header(name, value)
        self.body = body
        self.file = None          # (path, offset, length) for file responses

    def __repr__(self):
        return "<Response %d %s>" % (self.status, "file %r" % (self.file[0],) if self.file
                                     else "%d bytes" % len(self.body))

    def header(self, name, value):
        """Set ``name`` (replacing any earlier value). Returns the response."""
        lower = name.lower()
        self.headers = [pair for pair in self.headers if pair[0].lower() != lower]
        return self.add_header(name, value)

    def add_header(self, name, value):
        self.headers.append((check_field(name, str(value))))
        return self

    def get_header(self, name, default=None):
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return default

    def set_cookie(self, name, value="", max_age=None, path="", domain="", secure=False,
                   http_only=False, same_site=None):
        return self.add_header("Set-Cookie", cookie_line(
            name, value, max_age, path, domain, secure, http_only, same_site))

    def with_file(self, path, offset=0, length=None):
        """Send the file at ``path`` (or an open binary file: it is closed after) from
        ``offset``, ``length`` bytes, as the body; big files are streamed through the
        send buffer, never read whole."""
        self.file = (path, offset, length)
        if self.get_header("Content-Type") is None:
            name = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "")
            self.header("Content-Type", mime.type_of(str(name)))
        return self


class ResponseState:
    """What ``http.header()`` & co. set during one request, used by the next send."""

    __slots__ = ("status", "reason", "headers")

    def __init__(self):
        self.status = 200
        self.reason = None
        self.headers = []


def check_field(name, value):
    """Refuse header names and values that would split the response (CR, LF, NUL)."""
    if not name or any(c in name for c in " \t\r\n:\0") or any(c in value for c in "\r\n\0"):
        raise ValueError("invalid header field %r: %r" % (name, value))
    return name, value


def cookie_line(name, value="", max_age=None, path="", domain="", secure=False,
                http_only=False, same_site=None):
    """A Set-Cookie value; the value is percent-encoded (PHP's setcookie)."""
    parts = ["%s=%s" % (name, quote(str(value), safe=""))]
    if max_age is not None:
        parts.append("Max-Age=%d" % max_age)
        if max_age > 0:
            parts.append("Expires=" + email.utils.formatdate(time.time() + max_age,
                                                             usegmt=True))
    for attribute, given in (("Path", path), ("Domain", domain), ("SameSite", same_site)):
        if given:
            parts.append("%s=%s" % (attribute, given))
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    return "; ".join(parts)


# -- the fast path ----------------------------------------------------------------

_clock = [0, b""]   # [second, its Date value]
#: [the time the heads below go stale, the head for keep-alive, the head for close];
#: the connection core reads it too (ConnectionCore._hello), and renews it the same way.
_hello = [0.0, b"", b""]


def date():
    """The Date value of this second (RFC 9110 5.6.7), made once a second."""
    now = int(time.time())
    if now != _clock[0]:
        _clock[0] = now
        _clock[1] = email.utils.formatdate(now, usegmt=True).encode()
    return _clock[1]


def hello_head(keep_alive):
    """``HTTP/1.1 200 OK`` ... up to ``Content-Length: `` for a plain string body."""
    if _time() >= _hello[0]:
        _renew_hello()
    return _hello[1] if keep_alive else _hello[2]


def _renew_hello():
    stamp = date()
    _hello[1:] = [b"HTTP/1.1 200 OK\r\nServer: %s\r\nDate: %s\r\nContent-Type: %s\r\n"
                  b"Connection: %s\r\nContent-Length: " % (
                      SERVER, stamp, DEFAULT_TYPE.encode(), connection)
                  for connection in (b"keep-alive", b"close")]
    _hello[0] = float(_clock[0] + 1)   # a float: compared with time() per answer


# -- the general path -------------------------------------------------------------

def head(status, headers, length, keep_alive, reason=None):
    """The status line and header block; ``length`` None leaves Content-Length out."""
    names = {name.lower() for name, _ in headers}
    lines = ["HTTP/1.1 %d %s" % (status, reason or REASONS.get(status, "Unknown"))]
    if "server" not in names:
        lines.append("Server: geventman")
    if "date" not in names:
        lines.append("Date: " + date().decode())
    if "content-type" not in names and status not in _NO_BODY:
        lines.append("Content-Type: " + DEFAULT_TYPE)
    lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
    if length is not None and status not in _NO_BODY:
        lines.append("Content-Length: %d" % length)
    for name, value in headers:
        if name.lower() not in ("connection", "content-length", "transfer-encoding"):
            lines.append("%s: %s" % (name, value))
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1", "replace")


def gzip_body(body, headers, level):
    """Gzip ``body`` if it is worth it; returns (body, headers)."""
    if len(body) < GZIP_MIN_SIZE:
        return body, headers
    kind = ""
    for name, value in headers:
        lower = name.lower()
        if lower == "content-encoding":
            return body, headers
        if lower == "content-type":
            kind = value
    if not (kind or DEFAULT_TYPE).startswith(_COMPRESSIBLE):
        return body, headers
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    body = compressor.compress(body) + compressor.flush()
    return body, headers + [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
