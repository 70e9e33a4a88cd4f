"""The optional compiled modules (see geventman/speedups.py and docs/compiled.md).

Everything else is in pyproject.toml. Each module in ``speedups.COMPILED`` is built
with Cython when Cython and a C compiler are at hand; when they are not, or the build
fails, the install goes on without it and the pure-Python module runs. Set
``GEVENTMAN_NO_COMPILE=1`` to install without building.
"""
import os
import runpy
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
#: speedups.py imports only the standard library: it is read, not imported (the
#: build environment has no gevent).
COMPILED = runpy.run_path(os.path.join(HERE, "geventman", "speedups.py"))["COMPILED"]


class optional_build_ext(build_ext):
    """A failed build is a warning, not a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler: distutils' CCompilerError and kin
            self.warn("geventman: no compiled modules (%s); the pure-Python ones run"
                      % error)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            self.warn("geventman: %s not compiled (%s); its pure-Python module runs"
                      % (ext.name, error))


def extensions():
    if os.environ.get("GEVENTMAN_NO_COMPILE", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        sys.stderr.write("geventman: Cython is missing: no compiled modules\n")
        return []
    modules = [Extension(name, [pure.replace(".", "/") + ".py"])
               for pure, name in COMPILED.items()]
    try:
        return cythonize(modules, quiet=True, compiler_directives={
            "language_level": 3, "binding": True})
    except Exception as error:  # a Cython that cannot translate them: Cython's CompileError
        sys.stderr.write("geventman: no compiled modules (%s); the pure-Python ones run\n"
                         % error)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext})
