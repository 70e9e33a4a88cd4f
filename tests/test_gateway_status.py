"""status and connections show gateway and business worker processes: clients held,
messages relayed, links, events handled; a gateway client's id, uid and groups."""
import json
import socket

import websocket as websocket_client          # websocket-client

from conftest import Project, free_port, port_open, wait_until

START = """
    import os
    from geventman.gateway import BusinessWorker, Gateway, Store

    Store.path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store")
    gateway = Gateway("websocket://127.0.0.1:%d")
    gateway.name = "edge_gateway_with_a_long_name"
    gateway.start_port = %d
    worker = BusinessWorker()
    worker.name = "logic"
    worker.count = 2
"""

EVENTS = """
    from geventman.lib import Gateway

    def on_connect(client_id):
        Gateway.bind_uid(client_id, "alice")
        Gateway.join_group(client_id, "room1")
        Gateway.join_group(client_id, "room2")
        Gateway.send_to_current_client("ready " + client_id)

    def on_message(client_id, message):
        Gateway.send_to_current_client(message)
"""


def test_status_and_connections_show_the_gateway(project):
    port = free_port()
    project.app("edge", START % (port, free_port()), **{"events.py": EVENTS})
    project.start(ports=[port])
    client = websocket_client.create_connection("ws://127.0.0.1:%d/" % port, timeout=5)
    try:
        client_id = client.recv().split()[1]

        def handled():
            return sum(row["handled"] for row in project.status_json()["processes"]
                       if row["name"] == "logic")
        before = handled()  # connects and closes of the port probes, this client's connect
        for number in range(3):
            client.send("m%d" % number)
            assert client.recv() == "m%d" % number
        rows = {}

        def counted():
            rows.clear()
            rows.update({row["name"]: row for row in project.status_json()["processes"]
                         if row["name"] == "edge_gateway_with_a_long_name"})
            row = rows.get("edge_gateway_with_a_long_name")
            return row and row["relayed"] == 3 and row["business_workers"] == 2
        wait_until(counted, message="the gateway's counters")
        assert rows["edge_gateway_with_a_long_name"]["clients"] == 1
        logic = [row for row in project.status_json()["processes"] if row["name"] == "logic"]
        assert sorted(row["gateways"] for row in logic) == [1, 1]
        assert handled() == before + 3

        text = project.command("status", check=True).stdout
        block = text.split("GATEWAY STATUS")[1].splitlines()
        header = block[1].split()
        assert header == ["pid", "worker_name", "clients", "relayed", "business_workers",
                          "gateways", "handled"]
        gateway_line = [line for line in block if "edge_gateway_with_a_long_name" in line][0]
        assert gateway_line.split()[2:6] == ["1", "3", "2", "-"]

        table = project.command("connections", check=True).stdout.splitlines()
        assert table[0].split()[-3:] == ["Client-ID", "Uid", "Groups"]
        mine = [line for line in table if client_id in line]
        assert len(mine) == 1 and mine[0].split()[-2:] == ["alice", "room1,room2"]
    finally:
        client.close()


def test_a_taken_inner_port_fails_the_start_and_names_it(project):
    port, inner = free_port(), free_port()
    project.app("edge", START % (port, inner), **{"events.py": EVENTS})
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", inner))
        squatter.listen()
        result = project.command("start", "-d")
    assert result.returncode == 1
    assert "inner port 127.0.0.1:%d" % inner in result.stdout + result.stderr
    assert not port_open(port)   # nothing was left listening


GATEWAY_ONLY = """
    import os
    from geventman.gateway import Gateway, Store

    Store.path = STORE
    gateway = Gateway("websocket://127.0.0.1:%d")
    gateway.start_port = %d
"""

BUSINESS_ONLY = """
    from geventman.gateway import BusinessWorker, Store

    Store.path = STORE
    worker = BusinessWorker()
"""


def test_clients_wait_for_the_first_business_worker(project, tmp_path):
    """A client that comes before any business worker links completes its handshake at
    once; its messages wait in the gateway and are answered once one links."""
    store = repr(str(tmp_path / "store"))
    port = free_port()
    project.app("shop", (GATEWAY_ONLY % (port, free_port())).replace("STORE", store))
    project.start(ports=[port])
    client = websocket_client.create_connection("ws://127.0.0.1:%d/" % port, timeout=5)
    try:
        client.send("early")
        (tmp_path / "business").mkdir()
        business = Project(tmp_path / "business")
        try:
            business.app("shop", BUSINESS_ONLY.replace("STORE", store),
                         **{"events.py": EVENTS})
            business.start()
            assert client.recv().startswith("ready ")   # its connect, then its message
            assert client.recv() == "early"
        finally:
            business.cleanup()
    finally:
        client.close()


def test_a_lan_ip_that_is_not_ipv4_fails_the_start(project):
    port = free_port()
    source = (START % (port, free_port())).replace(
        'gateway.name = "edge_gateway_with_a_long_name"',
        'gateway.name = "edge"\n    gateway.lan_ip = "::1"')
    project.app("edge", source, **{"events.py": EVENTS})
    result = project.command("start", "-d")
    assert result.returncode == 1
    assert "lan_ip must be an IPv4 address" in result.stdout + result.stderr
