"""Workerman 5 and GatewayWorker 4 as benchmark peers, when ../shared/peers set them up.

../shared/peers/setup.sh lays out Workerman, GatewayWorker and the PHP ``event``
extension under /tmp/peers (GEVENTMAN_PEERS overrides the folder); the PHP scripts
that serve (``text_echo.php``, ``ws_echo.php``, ``http_hello.php``, ``gw_relay.php``)
live in shared/peers/php (GEVENTMAN_PEER_SCRIPTS overrides). The benchmarks start a
peer in the same run as geventman when ``find()`` finds all of it, and otherwise say
why they measure without it. Nothing of the peers is kept in this repository.

A peer runs in the foreground in a session of its own, like the other servers of the
benchmarks; SIGINT to the pid we started stops it (Workerman's master stops its
children).
"""
import os
import shutil
import socket

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("GEVENTMAN_PEERS", "/tmp/peers")
SCRIPT_FOLDERS = [os.environ.get("GEVENTMAN_PEER_SCRIPTS", ""),
                  os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "peers", "php"),
                  "/work/shared/peers/php"]

#: Ports the PHP scripts listen on (127.0.0.1).
PORTS = {"text_echo.php": 18002, "ws_echo.php": 18003, "http_hello.php": 18001,
         "gw_relay.php": 18303}
#: gw_relay.php also binds its Register and its gateways' inner ports.
GW_RELAY_OTHER_PORTS = (18300, 18310, 18311, 18312, 18313)


class Peers:
    def __init__(self, php, extension, scripts):
        self.php, self.extension, self.scripts = php, extension, scripts

    def argv(self, script):
        """The command that serves ``script`` in the foreground."""
        return [self.php, "-d", "extension=%s" % self.extension,
                os.path.join(self.scripts, script), "start"]

    def env(self, count, **extra):
        """Environment of a peer: WM_COUNT processes (gw_relay: WM_GW, WM_BW)."""
        env = dict(os.environ, WM_COUNT=str(count),
                   PEER_RUN_DIR=os.path.join(ROOT, "run"),
                   WORKERMAN_SRC=os.path.join(ROOT, "workerman", "src"),
                   GATEWAYWORKER_SRC=os.path.join(ROOT, "gatewayworker", "src"))
        env.update({key: str(value) for key, value in extra.items()})
        return env

    def version(self):
        """Workerman's VERSION constant, read from its source ('' if not found)."""
        try:
            with open(os.path.join(ROOT, "workerman", "src", "Worker.php")) as handle:
                for line in handle:
                    if "const VERSION" in line:
                        return line.split("=", 1)[1].strip(" ';\n\"")
        except OSError:
            pass
        return ""


def find():
    """(Peers, None) when everything is in place, else (None, why not)."""
    php = shutil.which("php")
    extension = os.path.join(ROOT, "pecl-event", "modules", "event.so")
    if php is None:
        return None, "php is not installed (run ../shared/peers/setup.sh)"
    for path in (extension, os.path.join(ROOT, "workerman", "src", "Worker.php")):
        if not os.path.exists(path):
            return None, "%s is missing (run ../shared/peers/setup.sh)" % path
    for folder in SCRIPT_FOLDERS:
        if folder and os.path.isfile(os.path.join(folder, "ws_echo.php")):
            return Peers(php, extension, folder), None
    return None, "the peer scripts (shared/peers/php) are not found; set GEVENTMAN_PEER_SCRIPTS"


def ports_free(ports):
    """None if every port can be bound on 127.0.0.1, else the first busy one."""
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return port
    return None


def skip_note(what, why):
    return "%s not measured: %s." % (what, why)
