"""Helpers for the tests of the demo applications (applications/chat, todpole): the
repository's own app folder copied into a project, started on free ports chosen by
the test (the apps read them from the environment), with a Store of its own; and a
JSON websocket client that skips the gateway's pings."""
import contextlib
import json
import os
import random
import shutil
import socket
import time

import websocket as websocket_client   # websocket-client

from conftest import REPO, Project, WebSocketClient, free_port


def free_port_run(count):
    """The first of ``count`` consecutive free ports (a gateway's inner ports), below
    the ephemeral range so that no outgoing connection takes one meanwhile; probed
    with SO_REUSEADDR as the gateway binds them (TIME_WAIT leftovers do not count)."""
    for _ in range(100):
        first = random.randrange(20000, 32000 - count)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no run of %d free ports" % count)


class Demo:
    """One demo application running in a project: its ports and clients."""

    def __init__(self, project, name, settings, gateway_port, web_port, args):
        self.project, self.name, self.settings = project, name, settings
        self.gateway_port, self.web_port = gateway_port, web_port
        self.args = args

    def start(self):
        """(Again) on the same ports, with the same environment."""
        saved = dict(os.environ)
        os.environ.update({key: str(value) for key, value in self.settings.items()})
        try:
            self.project.start(*self.args, ports=[self.gateway_port, self.web_port])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.project.wait_linked()  # a test's first broadcast reaches every client

    @property
    def url(self):
        return "http://localhost:%d/" % self.web_port

    def client(self, path="/"):
        return JsonClient(self.gateway_port, path)

    def events_path(self):
        return self.project.path("applications", self.name, "events.py")


def start_demo(project, name, prefix, env=None, args=()):
    """Copy applications/<name> into ``project`` and start it on free ports; the app
    reads <PREFIX>_GATEWAY_PORT, _WEB_PORT, _START_PORT and GEVENTMAN_STORE_PATH
    (plus anything in ``env``) from the environment it is started with."""
    shutil.rmtree(project.path("applications"))
    os.makedirs(project.path("applications"))
    shutil.copytree(os.path.join(REPO, "applications", name),
                    project.path("applications", name),
                    ignore=shutil.ignore_patterns("__pycache__"))
    gateway_port, web_port = free_port(), free_port()
    settings = {prefix + "_GATEWAY_PORT": gateway_port, prefix + "_WEB_PORT": web_port,
                prefix + "_START_PORT": free_port_run(4),
                "GEVENTMAN_STORE_PATH": project.path("store")}
    settings.update(env or {})
    demo = Demo(project, name, settings, gateway_port, web_port, args)
    demo.start()
    return demo


@contextlib.contextmanager
def running_demo(tmp_path_factory, name, prefix, env=None, args=()):
    """A demo in a project of its own, for a whole test module; stopped at the end."""
    project = Project(tmp_path_factory.mktemp(name))
    try:
        yield start_demo(project, name, prefix, env, args)
    finally:
        project.cleanup()


class JsonClient(WebSocketClient):
    """A blocking websocket client that sends and receives JSON objects."""

    answer_pings = True   # as the pages do: {"type":"pong"} for every {"type":"ping"}

    def __init__(self, port, path="/", timeout=10):
        self.ws = websocket_client.create_connection("ws://127.0.0.1:%d%s" % (port, path),
                                                     timeout=timeout)

    def send(self, data):
        self.ws.send(data if isinstance(data, str) else json.dumps(data))

    def recv(self, skip_pings=True):
        """The next JSON message (pings from the gateway answered, and skipped unless
        asked for)."""
        while True:
            data = json.loads(self.ws.recv())
            if data.get("type") == "ping" and self.answer_pings:
                self.send({"type": "pong"})
            if not (skip_pings and data.get("type") == "ping"):
                return data

    def recv_type(self, kind, timeout=10):
        """The next message of type ``kind`` within ``timeout`` seconds; other kinds
        on the way are dropped."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no %r message within %ss" % (kind, timeout))
                self.ws.settimeout(remaining)
                data = self.recv(skip_pings=False)   # so the deadline is looked at
                if data.get("type") == kind:
                    return data
        finally:
            self.ws.settimeout(10)

    def nothing_more(self, timeout=0.5):
        """True if no message but pings arrives within ``timeout`` seconds."""
        self.ws.settimeout(timeout)
        try:
            while True:
                data = json.loads(self.ws.recv())
                if data.get("type") != "ping":
                    raise AssertionError("unexpected message %r" % data)
        except websocket_client.WebSocketTimeoutException:
            return True
        finally:
            self.ws.settimeout(10)
