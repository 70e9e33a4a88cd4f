"""One application deployed over several hosts: gateways on two, business code on a third.

As root (where ``ip netns`` works) each host is a network namespace, joined to the
others and to the test by a bridge the test makes (10.77.N.0/24; the test, memcached
and redis-server sit on the bridge's own address); otherwise each host is a loopback
address of its own (127.0.0.2, .3, .4). Either way the same run happens, once with
each shared Store (memcached, Redis), which the test starts and stops itself:

* clients reach the business copy only through the gateway copy;
* the business copy is stopped and started while they send: messages sent meanwhile
  wait in the gateway and are answered once a business worker links again, and no
  client is dropped, no answer lost, doubled or reordered;
* a second gateway host started meanwhile is used by the business workers within 2 s,
  and the API of a business worker sees the clients of both gateways.

GEVENTMAN_TEST_HOSTS=loopback forces the loopback addresses (to try that path as root).
"""
import json
import os
import random
import shutil
import socket
import subprocess
import time

import pytest

from conftest import Project, port_open, wait_until
from gateway_support import Fleet, open_websocket, take_frames, text_frame

APP = "shop"   # every copy has the application under the same name: one Store entry

START = """
import json
import os

from geventman.gateway import BusinessWorker, Gateway, Store

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "host.json")) as handle:
    host = json.load(handle)
Store.driver = host["driver"]
Store.servers = host["servers"]
if host["role"] == "gateway":
    gateway = Gateway("websocket://%s:%d" % (host["lan_ip"], host["port"]))
    gateway.lan_ip = host["lan_ip"]
    gateway.start_port = host["start_port"]
else:
    worker = BusinessWorker()
    worker.count = 2
"""

EVENTS = """
import os

from geventman.lib import Context, Gateway


def on_message(client_id, message):
    if message == "count":
        Gateway.send_to_current_client("count:%d" % Gateway.get_all_client_count())
        return
    # A session counter: the gateway keeps it while no business worker exists.
    count = Context.session["count"] = Context.session.get("count", 0) + 1
    Gateway.send_to_current_client("dist:%d:%d:%s" % (os.getpid(), count, message))
"""


# -- hosts -------------------------------------------------------------------------------

def _run(*command):
    subprocess.run(command, check=True, capture_output=True, timeout=20)


class LoopbackHosts:
    """Hosts as loopback addresses of one machine."""

    mode = "loopback"
    service_ip = "127.0.0.1"

    def __init__(self, names):
        self.ips = {name: "127.0.0.%d" % (2 + index) for index, name in enumerate(names)}

    def launcher(self, name):
        return ()

    def ports(self, name):
        """(client port, inner start_port) free on that host's address."""
        return free_port_on(self.ips[name]), free_port_on(self.ips[name])

    def cleanup(self):
        pass


class NamespaceHosts:
    """Hosts as network namespaces on a bridge; the test's own namespace is the bridge."""

    mode = "netns"

    def __init__(self, names):
        tag = "%d%d" % (os.getpid() % 10000, random.randrange(100))
        self.bridge = "gmb%s" % tag
        self.namespaces = []
        self.links = []
        subnet = _free_subnet()
        self.service_ip = "%s.1" % subnet
        self.ips = {}
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", self.service_ip + "/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for index, name in enumerate(names):
                self._add_host(name, "gm%s%s" % (tag, name), "%s.%d" % (subnet, 2 + index),
                               "gmv%s%d" % (tag, index))
        except BaseException:
            self.cleanup()
            raise

    def _add_host(self, name, namespace, ip, veth):
        _run("ip", "netns", "add", namespace)
        self.namespaces.append((name, namespace))
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p")
        self.links.append(veth)
        _run("ip", "link", "set", veth + "p", "netns", namespace)
        _run("ip", "link", "set", veth, "master", self.bridge)
        _run("ip", "link", "set", veth, "up")
        inside = ("ip", "netns", "exec", namespace)
        _run(*inside, "ip", "addr", "add", ip + "/24", "dev", veth + "p")
        _run(*inside, "ip", "link", "set", veth + "p", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        self.ips[name] = ip

    def launcher(self, name):
        return ("ip", "netns", "exec", dict(self.namespaces)[name])

    def ports(self, name):
        return 7272, 2300   # a namespace of our own: nothing else listens there

    def cleanup(self):
        for command in ([["ip", "netns", "del", ns] for _, ns in self.namespaces]
                        + [["ip", "link", "del", link] for link in self.links]
                        + [["ip", "link", "del", self.bridge]]):
            subprocess.run(command, capture_output=True, timeout=20)  # gone already: fine


def _free_subnet():
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        subnet = "10.77.%d" % random.randrange(1, 250)
        if subnet + "." not in used:
            return subnet
    raise RuntimeError("no free 10.77.N.0/24 subnet")


def namespaces_work():
    if os.environ.get("GEVENTMAN_TEST_HOSTS") == "loopback":
        return False
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = "gmprobe%d" % os.getpid()
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=20)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return made.returncode == 0


@pytest.fixture
def hosts():
    names = ("gateway1", "business", "gateway2")
    made = NamespaceHosts(names) if namespaces_work() else LoopbackHosts(names)
    yield made
    made.cleanup()


# -- the Store's server ------------------------------------------------------------------

def free_port_on(host):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["memcached", "redis"])
def store_server(request, hosts, tmp_path):
    driver, ip = request.param, hosts.service_ip
    port = free_port_on(ip)
    if driver == "memcached":
        command = ["memcached", "-l", ip, "-p", str(port), "-U", "0", "-u", "root"]
    else:
        command = ["redis-server", "--bind", ip, "--port", str(port), "--save", "",
                   "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port, ip) or server.poll() is not None,
                   message="%s on %s:%d" % (driver, ip, port))
        assert server.poll() is None, "%s exited with %s" % (driver, server.returncode)
        yield driver, ["%s:%d" % (ip, port)]
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


# -- the copies of the application ---------------------------------------------------------

@pytest.fixture
def deploy(hosts, store_server, tmp_path):
    """deploy(name, role) -> a Project holding a copy of the application for that host."""
    driver, servers = store_server
    made = []

    def make(name, role):
        (tmp_path / name).mkdir()
        project = Project(tmp_path / name)
        project.launcher = hosts.launcher(name)
        port, start_port = hosts.ports(name)
        settings = {"role": role, "driver": driver, "servers": servers,
                    "lan_ip": hosts.ips[name], "port": port, "start_port": start_port}
        project.app(APP, START, events_py=EVENTS)
        project.write("applications/%s/host.json" % APP, json.dumps(settings))
        project.host_ip, project.port = hosts.ips[name], port
        made.append(project)
        return project

    yield make
    for project in made:
        project.cleanup()


def start_gateway(project):
    project.start()
    wait_until(lambda: port_open(project.port, project.host_ip), timeout=15,
               message="gateway on %s:%d" % (project.host_ip, project.port))


def ask(sock, buffer, text, timeout=10.0):
    """Send one message on a blocking WebSocket and read one answer."""
    sock.settimeout(timeout)
    sock.sendall(text_frame(text))
    frames = take_frames(buffer)
    while not frames:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the gateway")
        buffer += chunk
        frames = take_frames(buffer)
    return frames[0][1].decode()


def all_waiting(fleet):
    return all(client.sent - len(client.answers) == fleet.window for client in fleet.clients)


# -- the test ------------------------------------------------------------------------------

def test_gateway_and_business_on_separate_hosts(hosts, deploy):
    gateway1 = deploy("gateway1", "gateway")
    business = deploy("business", "business")
    gateway2 = deploy("gateway2", "gateway")
    start_gateway(gateway1)
    business.start()
    ip = gateway1.host_ip

    probe, rest = open_websocket(ip, gateway1.port)
    assert ask(probe, bytearray(rest), "0:0").startswith("dist:")
    probe.close()

    late = []   # clients of the second gateway
    fleet = Fleet(ip, gateway1.port, 20, 300, interval=0.03, window=3)
    try:
        fleet.start()
        wait_until(lambda: fleet.progress() >= 30, timeout=30, message="30 answers each")

        # The business host goes away: what clients send waits in the gateway.
        business.stop()
        wait_until(lambda: business.master_pid() is None, message="business host stopped")
        wait_until(lambda: all_waiting(fleet), timeout=10, message="every client waiting")
        held = sum(len(client.answers) for client in fleet.clients)
        business.start()
        wait_until(lambda: sum(len(c.answers) for c in fleet.clients) > held + 100,
                   timeout=15, message="held messages answered")

        # A second gateway host comes up; both business processes link to it by
        # themselves: new clients there go to the one with the fewest, so two of
        # them are answered by two processes once both have linked.
        start_gateway(gateway2)
        listed = time.monotonic()
        pids = set()

        def both_processes_answer():
            sock, rest = open_websocket(gateway2.host_ip, gateway2.port)
            late.append((sock, bytearray(rest)))
            answer = ask(*late[-1], "%d:0" % (99 + len(late)))
            assert answer.endswith(":%d:0" % (99 + len(late))), answer
            pids.add(answer.split(":")[1])
            return len(pids) == 2

        wait_until(both_processes_answer, timeout=2.0, interval=0.05,
                   message="both business processes on the second gateway")
        elapsed = time.monotonic() - listed
        assert elapsed < 2.0, "second gateway used by both after %.2fs" % elapsed
        # The business workers' API sees the clients of both gateways.
        assert ask(*late[0], "count") == "count:%d" % (len(fleet.clients) + len(late))

        assert fleet.join(90), fleet.problems()[:10]
        assert fleet.problems() == []
    finally:
        fleet.close()
        for sock, _ in late:
            sock.close()
    for project in (gateway1, business, gateway2):
        log = project.log()
        assert "Traceback" not in log and "lost an event" not in log, log[-3000:]
