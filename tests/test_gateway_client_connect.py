"""GatewayClient asks every gateway at once: gateways whose host does not answer the
connect cost one connect_timeout together, not one each."""
import socket
import time

from geventman.client import GatewayClient
from geventman.gateway.store import FileStore


def silent_listener():
    """A port whose SYNs go unanswered: backlog 0, its one queue place taken."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):  # the kernel admits backlog + 1; then SYNs are dropped
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
        fillers.append(filler)
    return server, fillers


def test_three_silent_gateways_cost_one_connect_timeout(tmp_path):
    store = FileStore(str(tmp_path / "store"), ttl=60)
    opened = []
    try:
        for _ in range(3):
            server, fillers = silent_listener()
            opened += [server] + fillers
            store.add("shop", "127.0.0.1:%d" % server.getsockname()[1])
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(opened[0].getsockname())
            silent = False
        except (socket.timeout, OSError):
            silent = True
        finally:
            probe.close()
        assert silent, "the listener answered: the test would measure nothing"
        client = GatewayClient(app="shop", path=str(tmp_path / "store"),
                               connect_timeout=1.0, timeout=1.0)
        started = time.monotonic()
        assert client.get_all_client_count() == 0   # nobody answered
        elapsed = time.monotonic() - started
        assert elapsed < 1.8, "%.2f s: the connects were not made side by side" % elapsed
    finally:
        for sock in opened:
            sock.close()
