"""http:// — HTTP/1.1 for Worker and WebServer.

``on_message(connection, request)`` gets a ``Request``; ``connection.send(text)``
answers 200 text/html, a ``Response(status, headers, body)`` gives full control.
The module functions below are Workerman's ``Http::header()`` & co.; entry scripts
of the WebServer find this module as ``http`` in their globals.
"""
from geventman.protocols.http.context import (EndRequest, end, header, header_remove,
                                              request, response_code, session_destroy,
                                              session_regenerate_id, session_start,
                                              set_cookie)
from geventman.protocols.http.protocol import Http
from geventman.protocols.http.request import Request
from geventman.protocols.http.response import Response
from geventman.protocols.http.session import FileStore, RedisStore, Session

__all__ = ["Http", "Request", "Response", "Session", "FileStore", "RedisStore",
           "EndRequest", "header", "header_remove", "response_code", "set_cookie",
           "session_start", "session_regenerate_id", "session_destroy", "end", "request"]
