"""The benchmark project: the repository's start.py, with geventman taken from the repo
two folders up and the applications from this folder's applications/."""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(ROOT)))

from geventman import boot  # noqa: E402  (nothing gevent before the command is parsed)

command = boot.prepare()
boot.load_applications(os.path.join(ROOT, "applications"), only=command.apps)

from geventman import Worker  # noqa: E402

Worker.run_all()
