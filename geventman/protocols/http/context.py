"""Workerman's ``Http::header()`` & co. as module functions of ``geventman.protocols.http``.

They act on the request being handled in the calling greenlet (a context variable,
set when the request is decoded, so every connection's greenlet has its own) and
shape the next response sent on it. Called anywhere else they raise RuntimeError.
"""
import contextvars

from geventman.protocols.http import session as sessions
from geventman.protocols.http.response import REASONS, ResponseState, check_field, cookie_line

current_request = contextvars.ContextVar("geventman_http_request", default=None)


class EndRequest(BaseException):
    """Raised by ``end()``: a BaseException, so ``except Exception`` in the page does
    not swallow it; the WebServer catches it and sends what was printed plus ``msg``."""

    def __init__(self, message=""):
        super().__init__(message)
        self.message = message


def request():
    """The request being handled in this greenlet."""
    found = current_request.get()
    if found is None:
        raise RuntimeError("no HTTP request is being handled in this greenlet")
    return found


def _state():
    found = request()
    if found.response is None:
        found.response = ResponseState()
    return found.response


def header(line, replace=True, http_response_code=None):
    """``header("Location: /login")`` as PHP: a line starting with ``HTTP/`` sets the
    status; ``Location`` sets 302 unless a 201 or 3xx status was set; ``replace=False``
    adds another field of the same name."""
    state = _state()
    if line[:5].upper() == "HTTP/":
        parts = line.split(None, 2)
        state.status = int(parts[1])
        state.reason = parts[2] if len(parts) > 2 else None
    else:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("header() wants 'Name: value', got %r" % line)
        name, value = check_field(name.strip(), value.strip())
        if replace:
            _remove(state, name)
        state.headers.append((name, value))
        if name.lower() == "location" and http_response_code is None and not (
                state.status == 201 or 300 <= state.status < 400):
            state.status = 302
    if http_response_code:
        response_code(http_response_code)


def header_remove(name):
    _remove(_state(), name)


def _remove(state, name):
    lower = name.lower()
    state.headers = [pair for pair in state.headers if pair[0].lower() != lower]


def response_code(code=None):
    """Set the status of the response (returns the current one, as PHP's
    http_response_code)."""
    state = _state()
    if code is not None:
        state.status = int(code)
        state.reason = None if int(code) in REASONS else "Unknown"
    return state.status


def set_cookie(name, value="", max_age=None, path="", domain="", secure=False,
               http_only=False, same_site=None):
    """Add a Set-Cookie field (Workerman's ``Http::setcookie``, with Max-Age in seconds)."""
    _state().headers.append(("Set-Cookie", cookie_line(
        name, value, max_age, path, domain, secure, http_only, same_site)))
    return True


def session_start():
    """Start the session of this request and return its dict (also ``request.session``)."""
    return sessions.start(request())


def session_regenerate_id(delete_old_session=True):
    sessions.regenerate(request(), delete_old_session)
    return True


def session_destroy():
    sessions.destroy(request())
    return True


def end(message=""):
    """Stop the page here and send what it printed plus ``message``
    (Workerman's ``Http::end``); never ends the process."""
    raise EndRequest(message)
