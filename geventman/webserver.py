"""WebServer: static files, Python entry files and WSGI applications over http://.

``add_root(domain, path)`` maps a Host to a folder (the first root is the default).
A request for a file sends the file (with its MIME type, 304 and 206 answers); a
``.py`` file runs instead of being sent; any path that is not a file goes to the
root's ``index.py``. A ``.py`` file that defines ``application`` at module level
is a WSGI application (PEP 3333: Flask, Django and plain WSGI apps run unmodified),
loaded once per process; any other runs per request as a script with ``request``
and ``http`` in its globals, and what it prints becomes the body. Code is compiled
once per process; ``reload`` replaces the processes and so picks up changes.

Never served: anything outside the root (``..``, encoded dots and slashes, NUL,
symlinks that lead out: 403/404), dotfiles, ``__pycache__``, Python sources and
bytecode as text.
"""
import ast
import builtins
import importlib.util
import os
import sys
from urllib.parse import unquote_to_bytes

from geventman.log import log_exception
from geventman.protocols import http
from geventman.protocols.http import static, wsgi
from geventman.protocols.http.context import EndRequest
from geventman.protocols.http.response import REASONS, Response
from geventman.runtime import statistics
from geventman.worker import Worker
from geventman import wsgi_websocket

ENTRY = "index.py"
_HIDDEN_SUFFIXES = (".pyc", ".pyo", ".pyw", ".pyd")
#: Editor and backup copies of Python sources, which would otherwise be sent as text:
#: page.py~, page.py.bak, page.py.orig, page.py.swp (and .swo, .old, .save, .tmp).
_BACKUP_SUFFIXES = ("~", ".bak", ".orig", ".swp", ".swo", ".old", ".save", ".tmp")


class Refused(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status


class WebServer(Worker):
    """``WebServer("http://0.0.0.0:8080")``; ``add_root("www.example.com", "/srv/www")``."""

    def __init__(self, address="", context=None):
        super().__init__(address, context)
        self.name = "WebServer"
        self.roots = {}           # domain -> real path of its folder
        self.on_message = self.handle
        self.websocket_upgrade = False   # Upgrade: websocket is answered as plain HTTP

    def add_root(self, domain, path):
        """Serve ``path`` (relative paths start at the application's folder) for ``domain``."""
        path = os.path.realpath(os.path.join(self.app_dir, path))
        self.roots[domain.lower()] = path
        return path

    def handle(self, connection, request):
        """on_message: answer one request from the root of its Host."""
        root = self._root(request)
        if root is None:
            return connection.send(_plain(404))
        try:
            target = resolve(root, request.path)
        except Refused as refused:
            return connection.send(_plain(refused.status))
        if target is not None and os.path.isdir(target):
            if not request.path.endswith("/") and os.path.isfile(
                    os.path.join(target, "index.html")):
                return connection.send(_to_folder(request))
            target = _index(root, target)
        elif target is None:
            target = _index(root, None)
        if target is None:
            return connection.send(_plain(404))
        if target.endswith(".py"):
            return run_entry(connection, request, root, target)
        return connection.send(static.file_response(request, target))

    def _root(self, request):
        if not self.roots:
            return None
        host = request.host.lower()
        if not host.endswith("]"):
            host = host.rpartition(":")[0] or host
        return self.roots.get(host) or next(iter(self.roots.values()))


def _to_folder(request):
    """301 to the folder's URL with its slash, so relative links in index.html work.
    (One leading slash: ``//host/`` would send the browser to another site.)"""
    location = "/" + request.path.lstrip("/") + "/"
    if request.query_string:
        location += "?" + request.query_string
    return Response(301, {"Location": location}, b"")


def _index(root, directory):
    """index.html of a folder, else the root's entry file, else None."""
    if directory is not None:
        page = os.path.join(directory, "index.html")
        if os.path.isfile(page):
            return page
    entry = os.path.join(root, ENTRY)
    return entry if os.path.isfile(entry) else None


def resolve(root, raw_path):
    """The real path under ``root`` for a request path; None if nothing is there.
    Raises Refused(403) for a path that leads out, Refused(404) for hidden files."""
    data = unquote_to_bytes(raw_path)
    if b"\0" in data or not data.startswith(b"/"):
        raise Refused(404)
    try:
        segments = [part for part in data.decode("utf-8").split("/") if part]
    except UnicodeDecodeError:
        raise Refused(404) from None
    for segment in segments:
        if segment == "..":
            raise Refused(403)
        _check_visible(segment)
    real = os.path.realpath(os.path.join(root, *segments))
    if real != root and not real.startswith(root + os.sep):
        raise Refused(403)   # a symlink that leads out
    for segment in os.path.relpath(real, root).split(os.sep):
        if segment != ".":
            _check_visible(segment)
    return real if os.path.exists(real) else None


def _check_visible(segment):
    """Refused(404) for what is never served: dotfiles (also Emacs's ``.#page.py``
    lock links), ``__pycache__``, bytecode, ``#page.py#`` autosaves, backup copies of
    Python sources, and ``.PY`` spellings of a source."""
    lower = segment.lower()
    if (segment.startswith(".") or lower == "__pycache__" or lower.endswith(_HIDDEN_SUFFIXES)
            or (lower.endswith(".py") and not segment.endswith(".py"))
            or (segment.startswith("#") and segment.endswith("#"))
            or _backup_of_python(lower)):
        raise Refused(404)


def _backup_of_python(lower):
    """page.py~, page.py.bak, page.pyc.orig...: a Python file with a backup suffix."""
    for suffix in _BACKUP_SUFFIXES:
        if lower.endswith(suffix):
            stem = lower[:-len(suffix)]
            return stem.endswith(".py") or stem.endswith(_HIDDEN_SUFFIXES) or \
                _backup_of_python(stem)
    return False


# -- entry files -----------------------------------------------------------------------

_entries = {}   # path -> ("wsgi", application) | ("script", code); per process


def run_entry(connection, request, root, path):
    try:
        kind, target = _entries.get(path) or _load(root, path)
    except Exception:
        statistics["throw_exception"] += 1
        log_exception("loading %s failed" % path)
        return connection.send(_plain(500))
    if kind == "wsgi":
        if wsgi_websocket.wants_websocket(request):
            return wsgi_websocket.serve(connection, request, target)
        return _run_wsgi(connection, request, target)
    return _run_script(connection, request, path, target)


def _load(root, path):
    with open(path, "rb") as handle:
        source = handle.read()
    tree = ast.parse(source, path)
    if root not in sys.path:
        sys.path.insert(0, root)      # the entry may import modules beside it
    if "application" in _top_level_names(tree):
        module_name = "geventman_web_%x" % (hash(path) & 0xFFFFFFFF)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        entry = ("wsgi", module.application)
    else:
        entry = ("script", compile(tree, path, "exec"))
    _entries[path] = entry
    return entry


def _top_level_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _run_wsgi(connection, request, application):
    try:
        answer = wsgi.call(application, request)
    except Exception:
        statistics["throw_exception"] += 1
        # The target is the client's (obs-text such as \x85 passes llhttp): escaped.
        log_exception("WSGI application failed on %s %r" % (request.method, request.uri))
        answer = _plain(500)
    return connection.send(answer)


def _run_script(connection, request, path, code):
    output = []
    page = {"__name__": "__main__", "__file__": path, "__builtins__": builtins,
            "request": request, "http": http, "print": _printer(output)}
    try:
        exec(code, page)
    except EndRequest as ended:
        output.append(str(ended.message))
    except SystemExit:
        pass   # exit() in a page ends the page, never the process
    except Exception:
        statistics["throw_exception"] += 1
        log_exception("script %s failed" % path)
        request.response = None
        return connection.send(_plain(500))
    return connection.send("".join(output))


def _printer(output):
    """The page's ``print``: to the response body unless another file is given."""
    def page_print(*values, sep=" ", end="\n", file=None, flush=False):
        if file is not None:
            return builtins.print(*values, sep=sep, end=end, file=file, flush=flush)
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        output.append(sep.join(map(str, values)) + end)
        return None
    return page_print


def _plain(status):
    text = "%d %s" % (status, REASONS.get(status, ""))
    return Response(status, [("Content-Type", "text/plain;charset=utf-8")], text)
