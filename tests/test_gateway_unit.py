"""The gateway's and the business worker's bookkeeping without sockets: connections
over sinks, packets in, packets out (the link order of held events, the hooks, the
leave handshake of a link that reconnected)."""
import gevent

from geventman import Worker
from geventman.connection.tcp import ESTABLISHED, TcpConnection
from geventman.gateway import wire
from geventman.gateway.business import BusinessWorker, GatewayLink
from geventman.gateway.gateway import ClientConnection, Gateway
from geventman.gateway.wire import Cmd, pack
from websocket_support import Sink


class Inner:
    connections = {}


def make_gateway():
    gateway = Gateway("tcp://127.0.0.1:1")
    Worker._all.remove(gateway)   # not one of a server's workers
    gateway.lan_port = 2000
    gateway._inner = Inner()
    return gateway


def link_to(gateway, name, made=None):
    connection = TcpConnection(Sink(), ("127.0.0.1", 6000), None, wire.GatewayProtocol)
    connection.on_close = gateway._link_closed     # as the inner worker sets them
    gateway._link_connected(connection)
    if made is not None:
        made.append(connection.link)
    gateway._link_message(connection, wire.unpack(pack(
        Cmd.WORKER_CONNECT, 0, wire.dumps({"secret_key": "", "worker_key": name}))))
    return connection.link


def client_of(gateway):
    client = ClientConnection(Sink(), ("127.0.0.1", 5555), gateway, None)
    gateway.connections[client.id] = client
    gateway._gateway_on_connect(client)
    return client


def events(link):
    """(command, body) of every event the link carried so far."""
    gevent.sleep(0)  # send_soon writes at the end of the loop turn
    data, found = link.connection._sock.take(), []
    while data:
        length = wire.packet_length(data)
        packet = wire.unpack(data[:length])
        data = data[length:]
        if packet.cmd in wire.EVENTS:
            found.append((Cmd(packet.cmd).name, packet.body))
    return found


def test_events_held_while_full_go_before_those_held_while_leaving():
    gateway = make_gateway()
    first = link_to(gateway, "a")
    client = client_of(gateway)
    second = link_to(gateway, "b")
    gateway._gateway_on_message(client, "m0")
    assert events(first) == [("CONNECT", b""), ("MESSAGE", b"m0")]
    gateway._link_full(first.connection)
    gateway._gateway_on_message(client, "m1")       # held: its link is full
    gateway._link_message(first.connection, wire.unpack(pack(Cmd.WORKER_LEAVING)))
    client.destroy()                                # its CLOSE: held, the link leaves
    assert events(second) == []
    first.connection.destroy()                      # the worker is gone
    assert events(second) == [("MESSAGE", b"m1"), ("CLOSE", b"")]


def test_a_drain_while_leaving_keeps_the_older_events_first():
    gateway = make_gateway()
    first = link_to(gateway, "a")
    client = client_of(gateway)
    second = link_to(gateway, "b")
    events(first)
    gateway._link_full(first.connection)
    gateway._gateway_on_message(client, "m1")
    gateway._link_message(first.connection, wire.unpack(pack(Cmd.WORKER_LEAVING)))
    client.destroy()
    gateway._link_drained(first.connection)         # drained, but leaving: still held
    assert events(second) == []
    first.connection.destroy()
    assert events(second) == [("MESSAGE", b"m1"), ("CLOSE", b"")]


def test_the_close_hook_runs_for_a_worker_that_left():
    gateway = make_gateway()
    gone = []
    gateway.on_business_worker_close = gone.append
    first = link_to(gateway, "a")
    gateway._link_message(first.connection, wire.unpack(pack(Cmd.WORKER_LEAVING)))
    first.connection.destroy()
    assert gone == ["127.0.0.1:a"]


def test_held_events_go_before_the_connected_hook_runs():
    gateway = make_gateway()
    client = client_of(gateway)                     # no worker yet: its CONNECT waits
    made, seen = [], []
    gateway.on_business_worker_connected = lambda key: seen.append(events(made[0]))
    link_to(gateway, "a", made)
    assert seen == [[("CONNECT", b"")]]
    assert client.deferred == 0


def business_link(state=ESTABLISHED):
    worker = BusinessWorker()
    Worker._all.remove(worker)
    link = GatewayLink("tcp://127.0.0.1:2000")
    link.setup(worker, "127.0.0.1:2000")
    link._sock, link.state = Sink(), state
    link.on_close = worker._link_closed       # as _connect sets it
    worker.links[link.address] = link
    return worker, link


def test_a_live_link_stays_when_its_gateway_misses_a_refresh():
    worker, link = business_link()
    worker._follow({link.address})
    worker._follow(set())                     # the store lost the entry for a moment
    assert worker.links == {link.address: link}
    worker._follow({link.address})            # listed again: no second link
    assert worker.links == {link.address: link}


def test_a_link_to_a_gateway_gone_from_the_store_is_not_tried_again():
    worker, link = business_link()
    worker._follow(set())
    link.destroy()                            # the gateway went
    assert worker.links == {} and link._reconnect_timer is None


def test_a_reconnected_link_waits_for_its_own_leave_ack():
    worker, link = business_link()
    link.left.set()                  # its first connection ended (a gateway restart)
    worker._link_connected(link)     # connected again
    assert not link.left.is_set()    # a leave now waits for this connection's ack
