"""Protocols and how a scheme name finds one.

A protocol is any class with three static (or class) methods, Workerman's contract:

* ``input(buffer, connection) -> int``: 0 means "need more bytes"; n > 0 means the
  first n bytes are one package; a negative number or False means bad input, and the
  connection is closed.
* ``decode(package, connection)``: the value handed to ``on_message``.
* ``encode(data, connection) -> bytes``: what ``send(data)`` writes.

Protocols are sans-IO: they see bytes and a connection object, never a socket.
``resolve`` looks a scheme up case-insensitively in this order: protocols registered
with ``register``, ``protocols/<name>.py`` of the application that created the worker,
then the built-ins in this package. Application protocols are imported only where
``resolve`` runs, which is in the children, so ``reload`` picks up their changes.
"""
import importlib
import importlib.util
import inspect
import os
import sys

TRANSPORTS = ("tcp", "udp", "ssl")

#: What ``decode`` returns for a package that carries no message for the application
#: (a handshake, a control frame): the connection then does not call ``on_message``.
NOTHING = type("Nothing", (), {"__repr__": lambda self: "NOTHING"})()
_BUILTIN_MODULES = {"text": "text", "telnet": "text", "frame": "frame",
                    "http": "http", "websocket": "websocket", "ws": "ws", "wss": "ws"}
_registered = {}
_resolved = {}  # (name, app_dir) -> the adapted protocol


class ProtocolNotFound(LookupError):
    pass


def register(name, protocol):
    """Make ``name://`` mean ``protocol`` in this process."""
    _registered[name.lower()] = protocol
    _resolved.clear()


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def caller_dir():
    """Folder of the first calling file outside geventman: the application's folder."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_PACKAGE_DIR + os.sep):
            return os.path.dirname(path)
        frame = frame.f_back
    return os.getcwd()


def split_address(address):
    """``'text://0.0.0.0:1234'`` -> ``('text', '0.0.0.0', 1234)``."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError("address needs a scheme, as in tcp://0.0.0.0:1234: %r" % address)
    host, _, port = rest.split("/", 1)[0].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("address needs host:port: %r" % address)
    return scheme, host.strip("[]"), int(port)


def resolve(scheme, app_dir=None):
    """The protocol class for ``scheme``, or None for a bare transport (tcp, udp, ssl)."""
    name = scheme.lower()
    if name in TRANSPORTS:
        return None
    key = (name, app_dir)
    protocol = _resolved.get(key)
    if protocol is None:
        protocol = (_registered.get(name) or _from_application(name, app_dir)
                    or _builtin(name))
        if protocol is None:
            raise ProtocolNotFound("no protocol %r: register one, or write "
                                   "protocols/%s.py in the application" % (scheme, name))
        protocol = _resolved[key] = adapt(protocol)  # once per process (AsyncTcpConnection)
    return protocol


def check(scheme, app_dir=None):
    """Raise ProtocolNotFound unless ``scheme`` can be resolved, without importing an
    application's protocol (the master calls this; business code loads in children)."""
    name = scheme.lower()
    found = (name in TRANSPORTS or name in _registered or name in _BUILTIN_MODULES
             or app_dir and os.path.isfile(os.path.join(app_dir, "protocols", name + ".py")))
    if not found:
        raise ProtocolNotFound("no protocol %r: register one, or write protocols/%s.py "
                               "in the application" % (scheme, name))


def _from_application(name, app_dir):
    if not app_dir:
        return None
    path = os.path.join(app_dir, "protocols", name + ".py")
    if not os.path.isfile(path):
        return None
    module_name = "geventman_app.%s.protocols.%s" % (os.path.basename(app_dir), name)
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return _class_named(module, name)


def _builtin(name):
    module_name = _BUILTIN_MODULES.get(name)
    if module_name is None:
        return None
    module = importlib.import_module("geventman.protocols." + module_name)
    return _class_named(module, module_name)


def _class_named(module, name):
    for attribute, value in vars(module).items():
        if attribute.lower() == name and inspect.isclass(value):
            return value
    return None


def adapt(protocol):
    """Let a protocol written with one-argument methods (``input(buffer)``, as in the
    Workerman manual's JsonNL example) be called with ``(buffer, connection)``."""
    shims = {}
    for method in ("input", "decode", "encode"):
        function = getattr(protocol, method, None)
        if function is None:
            raise TypeError("protocol %s has no %s()" % (protocol.__name__, method))
        if _positional_count(function) == 1:
            shims[method] = staticmethod(lambda buffer, connection, _f=function: _f(buffer))
    if not shims:
        return protocol
    return type(protocol.__name__, (protocol,), shims)


def _positional_count(function):
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
