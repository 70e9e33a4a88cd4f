"""HTTP sessions: a dict per browser, found again through a cookie.

Settings are the class attributes of ``Session`` (one process-wide configuration,
as Workerman's ``Http`` statics). Ids come from ``secrets`` (32 random bytes,
URL-safe base64); an id from a cookie is used only if it has that shape and the
store knows it, so a client cannot pick its own id (no session fixation). Data is
stored as JSON: values must be JSON types. The file store (default) keeps one file
per session in ``Session.save_path`` and removes expired ones now and then; set
``Session.store = RedisStore("redis://host:6379/0")`` to share sessions between
machines (needs the ``redis`` package).
"""
import json
import os
import random
import re
import secrets
import tempfile
import time

_ID = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")


class FileStore:
    """One file ``sess_<id>`` per session under ``Session.save_path``."""

    def _path(self, session_id):
        return os.path.join(Session.save_path, "sess_" + session_id)

    def read(self, session_id):
        try:
            with open(self._path(session_id), "rb") as handle:
                if os.fstat(handle.fileno()).st_mtime < time.time() - Session.lifetime:
                    return None
                return handle.read()
        except OSError:
            return None

    def write(self, session_id, data):
        os.makedirs(Session.save_path, mode=0o700, exist_ok=True)
        path = self._path(session_id)
        temporary = "%s.%d.tmp" % (path, os.getpid())
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)   # readers never see half a session

    def touch(self, session_id):
        try:
            os.utime(self._path(session_id))
        except OSError:
            pass

    def delete(self, session_id):
        try:
            os.unlink(self._path(session_id))
        except OSError:
            pass

    def gc(self, lifetime):
        """Remove sessions idle for more than ``lifetime`` seconds."""
        limit = time.time() - lifetime
        try:
            entries = list(os.scandir(Session.save_path))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.name.startswith("sess_") and entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
            except OSError:
                pass


class RedisStore:
    """Sessions in Redis under ``<prefix><id>``, expiring after ``Session.lifetime``."""

    def __init__(self, url="redis://127.0.0.1:6379/0", prefix="geventman:session:"):
        import redis
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def read(self, session_id):
        return self.client.get(self.prefix + session_id)

    def write(self, session_id, data):
        self.client.set(self.prefix + session_id, data, ex=Session.lifetime)

    def touch(self, session_id):
        self.client.expire(self.prefix + session_id, Session.lifetime)

    def delete(self, session_id):
        self.client.delete(self.prefix + session_id)

    def gc(self, lifetime):
        pass  # keys expire by themselves


class Session:
    """Session settings (class attributes; set them in start.py)."""

    name = "GMSESSID"                  # the cookie's name
    lifetime = 1440                    # seconds a session lives idle (PHP's gc_maxlifetime)
    cookie_lifetime = None             # Max-Age of the cookie; None: until the browser closes
    cookie_path = "/"
    domain = ""
    secure = False
    http_only = True
    same_site = "Lax"
    gc_probability = 0.01              # chance that a session start also removes old ones
    save_path = os.path.join(tempfile.gettempdir(), "geventman-sessions")
    store = FileStore()


class SessionState:
    """The session of one request: its id, its data, and whether to send a cookie."""

    __slots__ = ("id", "data", "loaded", "new")

    def __init__(self, session_id, data, loaded, new):
        self.id, self.data, self.loaded, self.new = session_id, data, loaded, new


def start(request):
    """Load (or create) the session of ``request``; returns its dict."""
    state = request.session_state
    if state is None:
        state = request.session_state = _load(request.cookie.get(Session.name, ""))
        if Session.gc_probability and random.random() < Session.gc_probability:
            Session.store.gc(Session.lifetime)
    return state.data


def _load(session_id):
    if _ID.match(session_id):
        raw = Session.store.read(session_id)
        if raw is not None:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if isinstance(data, dict):
                return SessionState(session_id, data, raw, False)
    return SessionState(new_id(), {}, None, True)


def new_id():
    return secrets.token_urlsafe(32)


def regenerate(request, delete_old=True):
    """Give the session a new id (after a login), keeping its data."""
    data = start(request)
    state = request.session_state
    if delete_old and not state.new:
        Session.store.delete(state.id)
    state.id, state.new, state.loaded = new_id(), True, None
    return data


def destroy(request):
    """Forget the session and clear its data."""
    data = start(request)
    Session.store.delete(request.session_state.id)
    data.clear()
    request.session_state.loaded = b"{}"
    request.session_state.new = False


def save(request):
    """Write the session if its data changed; returns the Set-Cookie value or None."""
    state = request.session_state
    raw = json.dumps(state.data, separators=(",", ":"), sort_keys=True).encode()
    if raw != state.loaded:
        if state.data or not state.new:
            Session.store.write(state.id, raw)
        state.loaded = raw
    elif not state.new:
        Session.store.touch(state.id)
    if not state.new or not state.data:
        return None
    state.new = False
    from geventman.protocols.http.response import cookie_line
    return cookie_line(Session.name, state.id, Session.cookie_lifetime, Session.cookie_path,
                       Session.domain, Session.secure, Session.http_only, Session.same_site)
