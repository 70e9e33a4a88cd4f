"""Run a WSGI application (PEP 3333) for one Request and give back a Response.

The body the application returns is collected (``write()`` and iterables alike),
except a ``wsgi.file_wrapper`` around a real file, which is streamed by the
protocol. The application runs in the connection's greenlet: it may block.
"""
import io
import sys
from urllib.parse import unquote_to_bytes

from geventman.protocols.http.response import Response

_HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "te",
                         "trailer", "upgrade", "proxy-connection", "content-length"))


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; the server may send it directly."""

    def __init__(self, filelike, block_size=65536):
        self.filelike = filelike
        self.block_size = block_size
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        while True:
            block = self.filelike.read(self.block_size)
            if not block:
                return
            yield block


def environ(request, script_name=""):
    """The PEP 3333 environ of ``request``; PATH_INFO is the path as requested."""
    server = request.server
    path = unquote_to_bytes(request.path).decode("latin-1")
    env = {key: value for key, value in server.items()
           if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    env.update({
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path[len(script_name):] if script_name else path,
        "QUERY_STRING": request.query_string,
        "REQUEST_URI": request.uri,
        "RAW_URI": request.uri,
        "SERVER_NAME": server["SERVER_NAME"] or "localhost",
        "SERVER_PORT": str(server["SERVER_PORT"]),
        "SERVER_PROTOCOL": server["SERVER_PROTOCOL"],
        "SERVER_SOFTWARE": server["SERVER_SOFTWARE"],
        "REMOTE_ADDR": server["REMOTE_ADDR"],
        "REMOTE_PORT": str(server["REMOTE_PORT"]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    })
    if request.body and "CONTENT_LENGTH" not in env:
        env["CONTENT_LENGTH"] = str(len(request.body))  # the body came chunked
    return env


def call(application, request, script_name=""):
    """Run ``application`` for ``request``; exceptions propagate to the caller."""
    started = []
    written = []

    def start_response(status, headers, exc_info=None):
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return written.append

    result = application(environ(request, script_name), start_response)
    try:
        if isinstance(result, FileWrapper) and _has_fileno(result.filelike):
            response = _response(started, written, b"")
            return _file(response, result)
        chunks = list(result)   # start_response may come with the first chunk (PEP 3333)
        body = b"".join(written) + b"".join(chunks)
    finally:
        if not isinstance(result, FileWrapper) and hasattr(result, "close"):
            result.close()
    return _response(started, [], body)


def _response(started, written, body):
    if not started:
        raise RuntimeError("the WSGI application did not call start_response")
    status, headers = started
    code, _, reason = status.partition(" ")
    response = Response(int(code), [(name, value) for name, value in headers
                                    if name.lower() not in _HOP_BY_HOP],
                        b"".join(written) + body)
    response.reason = reason or None
    response.declared_length = next((int(value) for name, value in headers
                                     if name.lower() == "content-length"), None)
    return response


def _file(response, wrapper):
    """Stream the wrapped file from where it stands, as long as the app declared."""
    filelike = wrapper.filelike
    offset = filelike.tell() if hasattr(filelike, "tell") else 0
    return response.with_file(filelike, offset, response.declared_length)


def _has_fileno(filelike):
    try:
        filelike.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    return True
