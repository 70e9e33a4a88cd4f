"""Which of geventman's hot modules run compiled.

A module listed in ``COMPILED`` is plain Python; ``pip install`` also builds it with
Cython (setup.py) when Cython and a C compiler are at hand, as the same name with
``_c`` appended. ``load`` returns the compiled build unless

- ``GEVENTMAN_PURE_PYTHON`` is set to anything but ``""`` or ``"0"``,
- there is no build (no compiler at install time: the pure module is the fallback),
- the build is older than its source (an edit after ``pip install -e .``: it would run
  the old code; the pure module runs instead and one line says so).

``modules`` records what each name resolved to; the banner of ``python start.py start``
and ``status`` show it as ``hot path:``.
"""
import importlib
import os
import sys

#: Pure module -> the extension built from it.
COMPILED = {"geventman.connection._core": "geventman.connection._core_c"}
PURE = os.environ.get("GEVENTMAN_PURE_PYTHON", "") not in ("", "0")
#: Module name -> "compiled" or "pure" (and why), once loaded.
modules = {}


def load(name):
    """The module ``name``, compiled if that build may be used."""
    pure = importlib.import_module(name)
    if PURE:
        modules[name] = "pure (GEVENTMAN_PURE_PYTHON)"
        return pure
    try:
        compiled = importlib.import_module(COMPILED[name])
    except ImportError:
        modules[name] = "pure (not compiled)"
        return pure
    if _older(compiled.__file__, pure.__file__):
        modules[name] = "pure (compiled build older than its source)"
        sys.stderr.write("geventman: %s is older than %s: run pip install -e . again; "
                         "using the pure-Python module\n" % (compiled.__file__, pure.__file__))
        return pure
    modules[name] = "compiled"
    return compiled


def _older(built, source, slack=2.0):
    """An installer writes both files within a moment; an edit comes later."""
    try:
        return os.path.getmtime(built) + slack < os.path.getmtime(source)
    except OSError:
        return False


def compiled():
    """True when every hot module runs compiled."""
    return bool(modules) and all(how == "compiled" for how in modules.values())


def describe():
    """"compiled", or "pure" and why: the start banner's ``hot path:``. (The hot
    modules load with geventman.connection, which every worker imports.)"""
    if compiled():
        return "compiled"
    return min((how for how in modules.values() if how != "compiled"), default="pure")
