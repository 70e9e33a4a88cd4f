"""Request: what ``on_message(connection, request)`` receives on an http:// worker.

Only what every request needs is set when it is made (method, version, body);
everything else is worked out the first time it is read and then kept, so a
handler that answers without looking at the request pays for nothing more.
"""
import time
from functools import cached_property

from geventman.protocols.http import forms
from geventman.version import __version__

SOFTWARE = "geventman/%s" % __version__
# The request fields that have CGI names without the HTTP_ prefix (RFC 3875 4.1).
_CGI_FIELDS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class Request:
    """One HTTP request. ``get``, ``post``, ``cookie``, ``files``, ``server`` and
    ``session`` are the PHP superglobals of Workerman 3.x as attributes."""

    #: A ResponseState once header()/set_cookie() is used (set on the request then).
    response = None
    #: A session.SessionState once the session is started.
    session_state = None
    #: True once the body was parsed as a form: its uploads are to be cleaned up.
    _parsed_form = False

    def __init__(self, head, connection, body=b""):
        self.method = head.method
        self.version = head.version
        self.keep_alive = head.keep_alive
        self.body = body
        self.connection = connection
        self._head = head

    def __repr__(self):
        return "<Request %s %s HTTP/%s>" % (self.method, self.uri, self.version)

    def __getitem__(self, key):
        """``request["get"]``: Workerman 3.x's decode gave an array of the superglobals."""
        if key not in ("get", "post", "cookie", "server", "files"):
            raise KeyError(key)
        return getattr(self, key)

    # -- the request line ----------------------------------------------------

    @cached_property
    def uri(self):
        """The request target as sent (REQUEST_URI)."""
        return self._head.target.decode("latin-1")

    @cached_property
    def path(self):
        """The path part of the target, still percent-encoded."""
        target = self.uri
        if target[:1] != "/" and "://" in target:      # absolute-form (RFC 9112 3.2.2)
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        return target.partition("?")[0].partition("#")[0]

    @cached_property
    def query_string(self):
        return self.uri.partition("#")[0].partition("?")[2]

    # -- header fields -------------------------------------------------------

    @cached_property
    def headers(self):
        """Lower-case field name -> value; repeated fields joined with ``, ``
        (``; `` for Cookie, RFC 9110 5.3 and RFC 6265 5.4)."""
        fields = {}
        for line in self._head.head.decode("latin-1").split("\r\n"):
            if not line:
                continue
            name, _, value = line.partition(":")
            name = name.lower()
            value = value.strip(" \t")
            if name in fields:
                value = fields[name] + ("; " if name == "cookie" else ", ") + value
            fields[name] = value
        return fields

    def header(self, name, default=None):
        """The value of header field ``name`` (any case), or ``default``."""
        return self.headers.get(name.lower(), default)

    @cached_property
    def host(self):
        return self.headers.get("host", "")

    # -- the superglobals ------------------------------------------------------

    @cached_property
    def get(self):
        return forms.query(self.query_string)

    @cached_property
    def cookie(self):
        value = self.headers.get("cookie")
        return forms.cookies(value) if value else {}

    @cached_property
    def _form(self):
        form = forms.parse_body(self.body, self.headers.get("content-type"))
        self._parsed_form = True
        return form

    @property
    def post(self):
        return self._form[0]

    @property
    def files(self):
        return self._form[1]

    @cached_property
    def server(self):
        headers = self.headers
        host, _, port = headers.get("host", "").rpartition(":")
        if not host or "]" in port:
            host, port = headers.get("host", ""), ""
        now = time.time()
        server = {
            "QUERY_STRING": self.query_string,
            "REQUEST_METHOD": self.method,
            "REQUEST_URI": self.uri,
            "SERVER_PROTOCOL": "HTTP/" + self.version,
            "SERVER_SOFTWARE": SOFTWARE,
            "SERVER_NAME": host,
            "SERVER_PORT": port or str(self.connection.get_local_port()),
            "REMOTE_ADDR": self.connection.get_remote_ip(),
            "REMOTE_PORT": self.connection.get_remote_port(),
            "REQUEST_TIME": int(now),
            "REQUEST_TIME_FLOAT": now,
        }
        for name, value in headers.items():
            key = _CGI_FIELDS.get(name) or "HTTP_" + name.upper().replace("-", "_")
            server[key] = value
        return server

    # -- the session -------------------------------------------------------------

    @property
    def session(self):
        """The session dict, started on first use (``http.session_start()``)."""
        from geventman.protocols.http import session
        return session.start(self)

    @property
    def session_id(self):
        state = self.session_state
        return state.id if state is not None else None

    def cleanup(self):
        """Delete the temporary files of uploads (the request is over)."""
        if self._parsed_form:   # (a look at __dict__ would build one per request)
            self._form[1].cleanup()
