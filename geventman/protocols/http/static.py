"""Static file responses: MIME type, Last-Modified and ETag validators (RFC 9110 13),
single byte ranges (RFC 9110 14). The file itself is sent by the protocol, in
chunks when it is big (stream.py)."""
import email.utils
import os
import re

from geventman.protocols.http import mime
from geventman.protocols.http.response import Response

_RANGE = re.compile(r"\Abytes=[ \t]*(\d*)-(\d*)[ \t]*\Z")


def file_response(request, path, status=200):
    """A Response for the file at ``path``: 200, 304, 206 or 416."""
    stat = os.stat(path)
    modified = email.utils.formatdate(int(stat.st_mtime), usegmt=True)
    etag = '"%x-%x"' % (stat.st_size, stat.st_mtime_ns)
    headers = [("Last-Modified", modified), ("ETag", etag), ("Accept-Ranges", "bytes")]
    if _not_modified(request, int(stat.st_mtime), etag):
        return Response(304, headers)
    headers.append(("Content-Type", mime.type_of(path)))
    byte_range = _range(request, stat.st_size, etag, modified)
    if byte_range is None:
        return Response(status, headers).with_file(path)
    if byte_range is False:
        headers.append(("Content-Range", "bytes */%d" % stat.st_size))
        return Response(416, headers, b"")
    first, last = byte_range
    headers.append(("Content-Range", "bytes %d-%d/%d" % (first, last, stat.st_size)))
    return Response(206, headers).with_file(path, first, last - first + 1)


def _not_modified(request, mtime, etag):
    match = request.header("if-none-match")
    if match is not None:   # it takes precedence over If-Modified-Since (RFC 9110 13.1.3)
        return match.strip() == "*" or etag in [tag.strip().removeprefix("W/")
                                                for tag in match.split(",")]
    since = request.header("if-modified-since")
    if since is None or request.method not in ("GET", "HEAD"):
        return False
    try:
        return mtime <= email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError, IndexError):
        return False


def _range(request, size, etag, modified):
    """(first, last) for one satisfiable range; False if unsatisfiable; None: whole file.
    Several ranges are answered with the whole file, which RFC 9110 14.2 allows."""
    value = request.header("range")
    if value is None or request.method != "GET":
        return None
    condition = request.header("if-range")
    if condition is not None and condition.strip() not in (etag, modified):
        return None
    match = _RANGE.match(value)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:                       # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    first = int(first)
    last = min(int(last), size - 1) if last else size - 1
    if first >= size:
        return False
    if last < first:
        return None
    return first, last
