"""Start every application under applications/: python start.py start|stop|restart|reload|status."""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from geventman import boot  # noqa: E402  (nothing gevent before the command is parsed)

command = boot.prepare()    # detaches for start -d, then patches with gevent
boot.load_applications(os.path.join(ROOT, "applications"), only=command.apps)

from geventman import Worker  # noqa: E402

Worker.run_all()
