"""A business worker corrects the session that events carry when its own changes have
not reached the gateway yet (sans-IO: packets in, packets out of a recording link).

The gateway sends each event with the session it has at that moment; the worker's
changes go back after each handler (PATCH_SESSION). With several events of a client on
the way, each may carry a different older session: the first one, or one the worker
produced since but that is already superseded. Each handler must see every change of
the handlers before it."""
from geventman import Worker
from geventman.gateway import sessions, wire
from geventman.gateway.api import Context
from geventman.gateway.business import BusinessWorker
from geventman.gateway.wire import HEADER_SIZE, Cmd, pack


class RecordingLink:
    """Stands where a GatewayLink would be: keeps the packets the worker sends."""

    gateway_ip, gateway_port = "127.0.0.1", 7272

    def __init__(self):
        self.sent = []

    def send(self, packet, raw=False):
        self.sent.append(wire.unpack(packet))
        return True

    def send_soon(self, packet):
        return self.send(packet, True)


class Gateway:
    """The gateway's side of one client: its session, patched in order."""

    def __init__(self):
        self.session = {}

    def event(self, number):
        return wire.unpack(pack(Cmd.MESSAGE, 5, wire.dumps(self.session) if self.session
                                else b"", str(number).encode(), wire.TEXT))

    def apply(self, packet):
        assert packet.cmd == Cmd.PATCH_SESSION
        self.session = sessions.patch(self.session, packet.argument)


def make_worker():
    worker = BusinessWorker()
    Worker._all.remove(worker)   # not one of a server's workers
    return worker


def counting_handler(seen):
    def on_message(client_id, message):
        count = Context.session["count"] = Context.session.get("count", 0) + 1
        seen.append(count)
    return on_message


def handle(worker, link, packet, handler):
    worker._run(link, packet, "c", handler, ("c", packet.data))


def test_events_sent_before_the_changes_arrived_see_every_change():
    worker, link, gateway, seen = make_worker(), RecordingLink(), Gateway(), []
    handler = counting_handler(seen)
    # Three events leave the gateway before any change comes back...
    first, second, third = gateway.event(1), gateway.event(2), gateway.event(3)
    handle(worker, link, first, handler)
    handle(worker, link, second, handler)
    gateway.apply(link.sent[0])          # ...then the first change arrives,
    fourth = gateway.event(4)            # a fourth event leaves with that session,
    handle(worker, link, third, handler)
    handle(worker, link, fourth, handler)
    for packet in link.sent[1:]:
        gateway.apply(packet)
    fifth = gateway.event(5)             # and once all changes are in, the gateway's
    handle(worker, link, fifth, handler)  # session is the truth again.
    gateway.apply(link.sent[-1])
    assert seen == [1, 2, 3, 4, 5]
    assert gateway.session == {"count": 5}


def test_twenty_events_in_flight_and_a_gateway_that_lags():
    worker, link, gateway, seen = make_worker(), RecordingLink(), Gateway(), []
    handler = counting_handler(seen)
    wave = [gateway.event(n) for n in range(20)]        # all with the first session
    for event in wave[:10]:
        handle(worker, link, event, handler)
    for packet in link.sent[:5]:                        # half the changes are in
        gateway.apply(packet)
    wave += [gateway.event(n) for n in range(20, 30)]   # these carry count 5
    for event in wave[10:]:
        handle(worker, link, event, handler)
    assert len(worker._stale[(link, 5)].older) <= 26    # the first ones are forgotten
    for packet in link.sent[5:]:
        gateway.apply(packet)
    for event in [gateway.event(n) for n in range(30, 40)]:
        handle(worker, link, event, handler)
    assert seen == list(range(1, 41))


def test_a_change_made_elsewhere_is_taken_once_the_gateway_has_ours():
    worker, link, gateway, seen = make_worker(), RecordingLink(), Gateway(), []
    handler = counting_handler(seen)
    handle(worker, link, gateway.event(1), handler)
    gateway.apply(link.sent[0])
    gateway.session["count"] = 10        # another process set it (set_session)
    handle(worker, link, gateway.event(2), handler)
    assert seen == [1, 11]


def test_a_held_event_gets_the_session_of_the_moment_it_is_sent():
    held = pack(Cmd.MESSAGE, 7, b'{"a":1}', b"hello", wire.TEXT, 0, 4000,
                wire.ip_bytes("10.0.0.9"))
    for session in (b'{"a":1,"b":"longer"}', b"", b'{"a":1}'):
        packet = wire.unpack(wire.replace_ext(held, session))
        assert (packet.cmd, packet.connection_id, packet.flags, packet.client_port,
                packet.remote_ip, packet.ext, packet.data) == (
            Cmd.MESSAGE, 7, wire.TEXT, 4000, "10.0.0.9", session, "hello")
        assert wire.packet_length(wire.replace_ext(held, session)) == HEADER_SIZE + len(
            session) + 5
