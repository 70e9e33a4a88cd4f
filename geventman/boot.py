"""What the root start.py does before and after importing the applications.

Order matters (docs/architecture.md): parse the command; detach for ``start -d``
*before* gevent exists (python-daemon closes every fd, which kills a hub made
earlier); patch with gevent; only then import the applications, so their code and
everything it imports is cooperative.
"""
import glob
import importlib.util
import os
import sys

from geventman import cli, report


def prepare(argv=None):
    """Parse the command line, detach if asked, monkey-patch. Returns the Command."""
    argv = argv or sys.argv
    try:
        command = cli.parse(argv)
    except cli.UsageError as error:
        report.say(str(error))
        sys.exit(64)
    if command.starts and command.daemon:
        from geventman import daemon
        daemon.detach()
    from gevent import monkey
    monkey.patch_all()
    return command


def load_applications(root, only=()):
    """Import ``<root>/*/start.py`` in sorted order (only the named ones if given)."""
    paths = sorted(glob.glob(os.path.join(root, "*", "start.py")))
    names = [os.path.basename(os.path.dirname(path)) for path in paths]
    missing = set(only) - set(names)
    if missing:
        report.say("no application named %s under %s" % (", ".join(sorted(missing)), root))
        sys.exit(64)
    for name, path in zip(names, paths):
        if only and name not in only:
            continue
        load_file("geventman_app.%s.start" % name, path)


def load_file(module_name, path):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
