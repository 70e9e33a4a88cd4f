"""The gateway's sans-IO parts, without processes: the link protocol (wire), client ids,
session merging, the heartbeat rule, the routers, and what each Gateway API call puts on
the wire (calls.Calls over an in-memory transport)."""
import json
import os
import struct

import pytest

from geventman.gateway import heartbeat, router, sessions, wire
from geventman.gateway.calls import Calls
from geventman.gateway.wire import Cmd, WireError, pack, packet_length, unpack
from websocket_support import server_connection


# -- wire: every command round-trips ---------------------------------------------------

@pytest.mark.parametrize("cmd", list(Cmd), ids=lambda cmd: cmd.name)
def test_every_command_round_trips(cmd):
    ext, body = b'{"groups":["a"]}', "héllo".encode()
    packet = pack(cmd, 0xFFFFFFFE, ext, body, wire.TEXT | wire.RAW, 0x7FFFFFFF, 65535,
                  wire.ip_bytes("10.1.2.3"))
    assert packet_length(packet) == len(packet) == wire.HEADER_SIZE + len(ext) + len(body)
    assert packet_length(packet + b"next packet") == len(packet)
    decoded = unpack(packet)
    assert (decoded.cmd, decoded.flags) == (cmd, wire.TEXT | wire.RAW)
    assert (decoded.connection_id, decoded.request_id) == (0xFFFFFFFE, 0x7FFFFFFF)
    assert (decoded.client_port, decoded.remote_ip) == (65535, "10.1.2.3")
    assert (decoded.ext, decoded.body) == (ext, body)
    assert decoded.argument == {"groups": ["a"]}
    assert decoded.data == "héllo"
    assert wire._name(decoded.cmd) == cmd.name


def test_empty_packet_is_just_the_header():
    packet = pack(Cmd.PING)
    assert len(packet) == wire.HEADER_SIZE == 36
    decoded = unpack(packet)
    assert (decoded.ext, decoded.body, decoded.argument) == (b"", b"", None)
    assert decoded.remote_ip == "0.0.0.0" or decoded.client_ip == wire.NO_ADDRESS


def test_header_layout_is_as_documented():
    packet = pack(Cmd.MESSAGE, 7, b"ex", b"body", wire.TEXT, 9, 4321, wire.ip_bytes("::1"))
    assert struct.unpack(">I", packet[0:4])[0] == len(packet)
    assert packet[4] == Cmd.MESSAGE and packet[5] == wire.TEXT
    assert struct.unpack(">IIH", packet[6:16]) == (7, 9, 4321)
    assert packet[16:32] == bytes(15) + b"\x01"
    assert struct.unpack(">I", packet[32:36])[0] == 2
    assert packet[36:] == b"exbody"


@pytest.mark.parametrize("data, flags", [
    ("text ✓", wire.TEXT), (b"\x00\xffbytes", 0), ({"a": [1, 2.5, None]}, wire.JSON),
    ([1, "x"], wire.JSON), (42, wire.JSON), (True, wire.JSON)])
def test_messages_keep_their_type(data, flags):
    body, got = wire.encode_data(data)
    assert got == flags
    assert unpack(pack(Cmd.MESSAGE, 1, b"", body, got)).data == data


def test_bytearray_travels_as_bytes():
    assert wire.encode_data(bytearray(b"ab")) == (b"ab", 0)
    assert wire.encode_data(memoryview(b"cd")) == (b"cd", 0)


@pytest.mark.parametrize("text", ["127.0.0.1", "10.255.0.1", "::1", "2001:db8::5",
                                  "fe80::1%eth0"])
def test_ip_round_trips(text):
    packed = wire.ip_bytes(text)
    assert len(packed) == 16
    assert wire.ip_text(packed) == text.split("%")[0]


# -- wire: truncated, oversized, garbage ------------------------------------------------

def test_a_header_not_whole_needs_more():
    packet = pack(Cmd.MESSAGE, 1, b"", b"hello")
    for cut in range(wire.HEADER_SIZE):
        assert packet_length(packet[:cut]) == 0


def test_a_truncated_body_is_measured_then_refused_by_unpack():
    packet = pack(Cmd.MESSAGE, 1, b"{}", b"hello")
    assert packet_length(packet[:-1]) == len(packet)   # the connection waits for the rest
    with pytest.raises(WireError):
        unpack(packet[:-1])
    with pytest.raises(WireError):
        unpack(packet + b"x")


def test_oversized_packets_are_refused():
    big = struct.pack(">IB", wire.MAX_PACKET_SIZE + 1, Cmd.MESSAGE) + bytes(31)
    assert packet_length(big) == -1
    packet = pack(Cmd.MESSAGE, 1, b"", b"x" * 100)
    assert packet_length(packet, max_size=100) == -1
    assert packet_length(packet, max_size=len(packet)) == len(packet)


def _header(length, cmd, ext_length):
    return wire.HEADER.pack(length, cmd, 0, 0, 0, 0, bytes(16), ext_length)


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 20,     # HTTP on the inner port
    bytes(64),                                            # zeros: length 0
    b"\xff" * 64,                                         # length 4 GiB
    _header(35, Cmd.PING, 0),                             # shorter than its header
    _header(36, 99, 0),                                   # unknown command
    _header(40, Cmd.MESSAGE, 5) + b"abcd",                # ext longer than the packet
], ids=["http", "zeros", "ones", "short", "unknown-cmd", "ext-too-long"])
def test_garbage_is_refused(garbage):
    assert packet_length(garbage) == -1


def test_unpack_refuses_an_ext_longer_than_the_packet():
    with pytest.raises(WireError):
        unpack(_header(40, Cmd.MESSAGE, 5) + b"abcd")


def test_bad_ext_json_is_a_value_error():
    packet = unpack(pack(Cmd.QUERY, 0, b"{not json"))
    with pytest.raises(ValueError):
        packet.argument


@pytest.mark.parametrize("garbage", [b"\xff" * 64, bytes(40), _header(36, 99, 0),
                                     b"GET / HTTP/1.1\r\n" * 4],
                         ids=["ones", "zeros", "unknown-cmd", "http"])
def test_a_link_fed_garbage_logs_one_line_and_closes(capsys, garbage):
    """Bytes through a real TcpConnection with GatewayProtocol, as on an inner port."""
    connection = server_connection(wire.GatewayProtocol,
                                   max_package_size=wire.MAX_PACKET_SIZE)
    connection._feed(pack(Cmd.PING) + garbage)
    assert [type(message) for message in connection.messages] == [wire.Packet]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "bad package" in lines[0], lines
    assert connection.closes == 1


def test_a_link_decodes_packets_split_anywhere():
    packets = [pack(Cmd.MESSAGE, n, b"", b"m%d" % n, wire.TEXT) for n in range(5)]
    stream = b"".join(packets)
    connection = server_connection(wire.GatewayProtocol,
                                   max_package_size=wire.MAX_PACKET_SIZE)
    for start in range(0, len(stream), 7):
        connection._feed(stream[start:start + 7])
    assert [(p.connection_id, p.data) for p in connection.messages] == [
        (n, "m%d" % n) for n in range(5)]


# -- client ids ------------------------------------------------------------------------

@pytest.mark.parametrize("ip, port, number", [("127.0.0.1", 2300, 1), ("10.0.0.255", 65535,
                                                                       0xFFFFFFFF),
                                              ("0.0.0.0", 0, 0)])
def test_client_id_round_trips(ip, port, number):
    value = wire.client_id(ip, port, number)
    assert len(value) == 20 and value == value.lower() and value.isascii()
    assert all(char in "0123456789abcdef" for char in value)  # safe in JSON and URLs
    assert wire.parse_client_id(value) == (ip, port, number)


def test_client_id_is_gatewayworker_format():
    assert wire.client_id("127.0.0.1", 2300, 1) == "7f00000108fc00000001"


@pytest.mark.parametrize("bad", ["", "7f00000108fc0000000", "7f00000108fc000000011",
                                 "7f00000108fc0000000g", "7F00000108FC0000000Z", None, 12,
                                 b"7f00000108fc00000001", "７f00000108fc0000000"])
def test_bad_client_ids_are_refused(bad):
    with pytest.raises(WireError):
        wire.parse_client_id(bad)


def test_client_id_needs_an_ipv4_lan_ip():
    with pytest.raises(ValueError):
        wire.client_id("::1", 2300, 1)


# -- sessions --------------------------------------------------------------------------

def test_merge_is_recursive_for_dicts_and_replaces_the_rest():
    base = {"user": {"name": "tom", "tags": ["a"]}, "n": 1, "keep": True}
    merged = sessions.merge(base, {"user": {"age": 3, "tags": ["b"]}, "n": {"x": 1}})
    assert merged == {"user": {"name": "tom", "age": 3, "tags": ["b"]}, "n": {"x": 1},
                      "keep": True}
    assert base == {"user": {"name": "tom", "tags": ["a"]}, "n": 1, "keep": True}


def test_merge_replaces_a_dict_with_a_scalar():
    assert sessions.merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}
    assert sessions.merge({}, {}) == {}


def test_diff_names_changed_added_and_deleted_keys():
    before = {"a": 1, "b": {"x": 1}, "c": 3}
    after = {"a": 1, "b": {"x": 2}, "d": 4}
    assert sessions.diff(before, after) == {"set": {"b": {"x": 2}, "d": 4}, "delete": ["c"]}
    assert sessions.diff(before, dict(before)) is None
    assert sessions.diff({}, {}) is None


def test_patch_applies_a_diff():
    before = {"a": 1, "b": 2, "c": 3}
    after = {"a": 10, "c": 3, "new": [1]}
    assert sessions.patch(before, sessions.diff(before, after)) == after


def test_a_patch_leaves_keys_another_process_changed_meanwhile():
    """The handler saw {"n": 1}; meanwhile update_session set "uid" in the gateway."""
    seen = {"n": 1}
    handler_result = {"n": 2}
    in_gateway = sessions.merge(seen, {"uid": "42"})
    assert sessions.patch(in_gateway, sessions.diff(seen, handler_result)) == {
        "n": 2, "uid": "42"}


def test_patch_through_json_as_on_the_wire():
    changes = json.loads(wire.dumps(sessions.diff({"a": 1}, {"b": 2})))
    assert sessions.patch({"a": 1, "z": 0}, changes) == {"b": 2, "z": 0}


# -- heartbeat as a pure function --------------------------------------------------------

def timeline(limit, ping_data, ticks, messages=()):
    """Run ``ticks`` heartbeat ticks; ``messages`` lists the ticks before which the client
    sends something. Returns [(tick, action)] for pings and the drop (then it stops)."""
    silent, seen = 0, []
    for number in range(1, ticks + 1):
        if number in messages:
            silent = 0
        silent, action = heartbeat.tick(silent, limit, ping_data)
        if action != heartbeat.KEEP:
            seen.append((number, action))
        if action == heartbeat.DROP:
            break
    return seen


def test_ping_and_drop_mode_drops_a_silent_client_after_limit_ticks():
    assert timeline(2, "ping", 10) == [(1, "ping"), (2, "ping"), (3, "drop")]


def test_ping_and_drop_mode_keeps_a_client_that_answers():
    seen = timeline(2, "ping", 10, messages={3, 5, 7, 9})
    assert all(action == "ping" for _, action in seen) and len(seen) == 10


def test_ping_and_drop_mode_after_the_last_message():
    seen = timeline(2, "ping", 20, messages={2, 4})
    assert seen[-1] == (6, "drop")   # silent again from tick 4: two ticks, dropped at 6


def test_client_heartbeat_mode_sends_nothing_and_drops_the_silent():
    assert timeline(3, "", 10) == [(4, "drop")]
    assert timeline(1, "", 10, messages=set(range(1, 11))) == []
    assert timeline(1, "", 10, messages={1, 2, 3}) == [(4, "drop")]


def test_ping_only_mode_never_drops():
    seen = timeline(0, '{"type":"ping"}', 50)
    assert seen == [(number, "ping") for number in range(1, 51)]


def test_no_heartbeat_does_nothing():
    assert timeline(0, "", 50) == []


def test_a_silent_client_goes_between_limit_and_limit_plus_one_intervals():
    """Seen from the client: it connects somewhere between two ticks, so its silence
    before the drop is more than ``limit`` and at most ``limit + 1`` intervals."""
    for limit in (1, 2, 5):
        [(drop, action)] = [entry for entry in timeline(limit, "", 100)
                            if entry[1] == "drop"]
        assert drop == limit + 1 and action == "drop"


# -- routers -----------------------------------------------------------------------------

class FakeLink:
    def __init__(self, key, clients=0):
        self.worker_key, self.clients = key, clients

    def __repr__(self):
        return "<link %s>" % self.worker_key


class FakeClient:
    route = None


def links(**counts):
    return {key: FakeLink(key, count) for key, count in counts.items()}


def test_least_loaded_picks_the_fewest_and_the_first_on_a_tie():
    found = links(a=3, b=1, c=1)
    assert router.least_loaded(found) is found["b"]
    assert router.least_loaded({}) is None


def test_sticky_sends_a_new_client_to_the_least_loaded():
    found = links(a=2, b=0)
    assert router.sticky(found, FakeClient()) is found["b"]


def test_sticky_keeps_a_client_on_its_worker():
    found = links(a=9, b=0)
    client = FakeClient()
    client.route = found["a"]
    for _ in range(3):
        assert router.sticky(found, client, Cmd.MESSAGE, b"x") is found["a"]


def test_sticky_moves_a_client_whose_worker_went_away():
    found = links(a=1, b=5, c=2)
    client = FakeClient()
    client.route = found.pop("a")
    assert router.sticky(found, client) is found["c"]


def test_sticky_moves_a_client_whose_worker_reconnected():
    """Same worker key, new link (a reconnect): the old link is gone."""
    found = links(a=1, b=5)
    client = FakeClient()
    client.route = FakeLink("a")
    assert router.sticky(found, client) is found["a"]
    assert router.sticky({}, client) is None


def test_per_event_goes_round_robin():
    found = links(a=0, b=0, c=0)
    client = FakeClient()
    picked = [router.per_event(found, client).worker_key for _ in range(6)]
    assert sorted(picked[:3]) == ["a", "b", "c"] and picked[:3] == picked[3:]
    assert router.per_event({}, client) is None


# -- calls.Calls over an in-memory transport -----------------------------------------------

A, B = "127.0.0.1:2300", "127.0.0.1:2301"


def cid(address, number):
    ip, _, port = address.rpartition(":")
    return wire.client_id(ip, int(port), number)


class FakeTransport:
    """Two gateways: ``sent`` records (address, Packet); ``answers[address](question)``
    answers a QUERY (or is missing: that gateway does not answer in time)."""

    def __init__(self, addresses=(A, B)):
        self.listed = list(addresses)
        self.sent = []
        self.asked = []
        self.answers = {}

    def addresses(self):
        return list(self.listed)

    def send(self, address, packet):
        assert packet_length(packet) == len(packet)
        self.sent.append((address, unpack(packet)))
        return True

    def ask(self, questions):
        result = {}
        for address, ext in questions.items():
            question = json.loads(ext)
            self.asked.append((address, question))
            answer = self.answers.get(address)
            if answer is not None:
                # through JSON, as a REPLY carries it (int keys become str)
                result[address] = json.loads(wire.dumps(answer(question)))
        return result


@pytest.fixture
def transport():
    return FakeTransport()


@pytest.fixture
def calls(transport):
    return Calls(transport)


def sent(transport):
    return [(address, Cmd(packet.cmd), packet.connection_id, packet.argument
             if packet.ext[:1] in (b"{", b"[") else packet.ext, packet.body, packet.flags)
            for address, packet in transport.sent]


def test_send_to_all_goes_once_to_every_gateway(calls, transport):
    calls.send_to_all("hi")
    assert sent(transport) == [(A, Cmd.SEND_TO_ALL, 0, b"", b"hi", wire.TEXT),
                               (B, Cmd.SEND_TO_ALL, 0, b"", b"hi", wire.TEXT)]


def test_send_to_all_with_exclude_tells_each_gateway_its_own(calls, transport):
    calls.send_to_all({"k": 1}, exclude=[cid(B, 7), cid(B, 8), "junk"])
    assert sent(transport) == [
        (A, Cmd.SEND_TO_ALL, 0, b"", b'{"k":1}', wire.JSON),
        (B, Cmd.SEND_TO_ALL, 0, {"exclude": [7, 8]}, b'{"k":1}', wire.JSON)]


def test_send_to_all_with_client_ids_goes_only_to_their_gateways(calls, transport):
    calls.send_to_all(b"\x00raw", client_ids=[cid(A, 1), cid(A, 2), "bad"], raw=True)
    assert sent(transport) == [(A, Cmd.SEND_TO_ALL, 0, {"ids": [1, 2]}, b"\x00raw", wire.RAW)]
    transport.sent.clear()
    calls.send_to_all("x", client_ids=[])
    assert transport.sent == []


def test_send_to_client_goes_to_its_gateway_only(calls, transport):
    assert calls.send_to_client(cid(B, 3), "yo") is True
    assert sent(transport) == [(B, Cmd.SEND_TO_ONE, 3, b"", b"yo", wire.TEXT)]
    assert calls.send_to_client("not an id", "yo") is False
    assert len(transport.sent) == 1


def test_send_to_client_to_a_gateway_that_is_down_is_false(calls, transport):
    transport.send = lambda address, packet: False
    assert calls.send_to_client(cid(A, 1), "x") is False


def test_send_to_uid_and_group(calls, transport):
    calls.send_to_uid([42, "7"], "u")
    calls.send_to_group("room", "g", exclude=[cid(A, 5)])
    assert sent(transport) == [
        (A, Cmd.SEND_TO_UID, 0, ["42", "7"], b"u", wire.TEXT),
        (B, Cmd.SEND_TO_UID, 0, ["42", "7"], b"u", wire.TEXT),
        (A, Cmd.SEND_TO_GROUP, 0, {"groups": ["room"], "exclude": [5]}, b"g", wire.TEXT),
        (B, Cmd.SEND_TO_GROUP, 0, {"groups": ["room"], "exclude": []}, b"g", wire.TEXT)]


@pytest.mark.parametrize("bad", ["", None, True, 1.5, [[]]])
def test_bad_uids_and_groups_are_refused(calls, transport, bad):
    with pytest.raises(ValueError, match="uid"):        # a clear error, even for None
        calls.send_to_uid(bad, "x")
    with pytest.raises(ValueError, match="group"):
        calls.send_to_group(bad, "x")
    with pytest.raises(ValueError):
        calls.join_group(cid(A, 1), bad if bad != [[]] else [])
    assert transport.sent == []


def test_close_and_destroy(calls, transport):
    calls.close_client(cid(A, 1))
    calls.close_client(cid(A, 2), "bye")
    calls.close_client(cid(A, 3), "")
    calls.destroy_client(cid(B, 4))
    assert sent(transport) == [
        (A, Cmd.KICK, 1, b"", b"", 0),
        (A, Cmd.KICK, 2, b"", b"bye", wire.TEXT | wire.HAS_DATA),
        (A, Cmd.KICK, 3, b"", b"", wire.TEXT | wire.HAS_DATA),
        (B, Cmd.DESTROY, 4, b"", b"", 0)]


def test_uid_and_group_membership_commands(calls, transport):
    calls.bind_uid(cid(A, 1), 42)
    calls.unbind_uid(cid(A, 1), "42")
    calls.join_group(cid(B, 2), "room")
    calls.leave_group(cid(B, 2), "room")
    calls.ungroup(7)
    assert sent(transport) == [
        (A, Cmd.BIND_UID, 1, b"42", b"", 0), (A, Cmd.UNBIND_UID, 1, b"42", b"", 0),
        (B, Cmd.JOIN_GROUP, 2, b"room", b"", 0), (B, Cmd.LEAVE_GROUP, 2, b"room", b"", 0),
        (A, Cmd.UNGROUP, 0, b"7", b"", 0), (B, Cmd.UNGROUP, 0, b"7", b"", 0)]


def test_session_commands(calls, transport):
    calls.set_session(cid(A, 1), {"a": 1})
    calls.update_session(cid(A, 1), {"b": {"c": 2}})
    calls.set_session(cid(A, 1), None)
    assert sent(transport) == [
        (A, Cmd.SET_SESSION, 1, {"a": 1}, b"", 0),
        (A, Cmd.UPDATE_SESSION, 1, {"b": {"c": 2}}, b"", 0),
        (A, Cmd.SET_SESSION, 1, {}, b"", 0)]
    with pytest.raises(TypeError):
        calls.set_session(cid(A, 1), ["not", "a", "dict"])


def test_one_client_questions_go_to_its_gateway(calls, transport):
    transport.answers[B] = lambda q: {"is_online": q["id"] == 3, "session": {"n": q["id"]},
                                      "uid": "42"}[q["q"]]
    assert calls.is_online(cid(B, 3)) is True
    assert calls.is_online(cid(B, 4)) is False
    assert calls.get_session(cid(B, 3)) == {"n": 3}
    assert calls.get_uid_by_client_id(cid(B, 3)) == "42"
    assert {address for address, _ in transport.asked} == {B}
    assert transport.asked[0] == (B, {"q": "is_online", "id": 3})
    assert calls.is_online("junk") is False and calls.get_session("junk") is None


def test_a_gateway_that_does_not_answer_means_offline(calls, transport):
    assert calls.is_online(cid(A, 1)) is False
    assert calls.get_session(cid(A, 1)) is None


def two_gateways(transport):
    """A has clients 1, 2 (uid 42 in room); B has client 1 (uid 42 in room, 7 in hall)."""
    clients = {A: {1: ("42", ["room"], {"a": 1}), 2: (None, [], {})},
               B: {1: ("42", ["room"], {}), 5: ("7", ["hall", "room"], {"b": 2})}}

    def answer_for(address):
        def answer(question):
            members = {number: entry for number, entry in clients[address].items()
                       if question.get("group") in (None, *entry[1])
                       and question.get("uid") in (None, entry[0])}
            groups = {}
            for uid, names, _ in clients[address].values():
                for name in names:
                    count, uids = groups.get(name, (0, []))
                    groups[name] = (count + 1, sorted(set(uids) | {uid}))
            return {"client_ids": lambda: list(members),
                    "client_count": lambda: len(members),
                    "sessions": lambda: {n: e[2] for n, e in members.items()},
                    "uids": lambda: sorted({e[0] for e in members.values() if e[0]}),
                    "groups": lambda: {k: list(v) for k, v in groups.items()},
                    }[question["q"]]()
        return answer
    transport.answers = {A: answer_for(A), B: answer_for(B)}


def test_answers_from_two_gateways_merge(calls, transport):
    two_gateways(transport)
    every = [cid(A, 1), cid(A, 2), cid(B, 1), cid(B, 5)]
    assert sorted(calls.get_all_client_ids()) == sorted(every)
    assert sorted(calls.get_online_status()) == sorted(every)
    assert calls.get_all_client_count() == 4
    assert calls.get_all_client_sessions() == {cid(A, 1): {"a": 1}, cid(A, 2): {},
                                               cid(B, 1): {}, cid(B, 5): {"b": 2}}
    assert calls.get_all_client_sessions("hall") == {cid(B, 5): {"b": 2}}
    assert calls.get_client_sessions_by_group("hall") == {cid(B, 5): {"b": 2}}
    assert sorted(calls.get_client_ids_by_uid(42)) == [cid(A, 1), cid(B, 1)]
    assert calls.is_uid_online("42") and not calls.is_uid_online("nobody")
    assert calls.get_all_uids() == ["42", "7"]
    assert calls.get_all_uid_count() == 2          # 42 on both gateways counts once
    assert sorted(calls.get_client_ids_by_group("room")) == sorted(
        [cid(A, 1), cid(B, 1), cid(B, 5)])
    assert calls.get_client_count_by_group("room") == 3
    assert calls.get_uids_by_group("room") == ["42", "7"]
    assert calls.get_uid_count_by_group("room") == 2
    assert calls.get_all_groups() == ["hall", "room"]
    assert calls.get_all_group_client_counts() == {"room": 3, "hall": 1}
    assert calls.get_all_group_uid_counts() == {"room": 2, "hall": 1}
    assert {address for address, _ in transport.asked} == {A, B}


def test_a_silent_gateway_is_left_out_of_the_merge(calls, transport):
    two_gateways(transport)
    del transport.answers[B]
    assert sorted(calls.get_all_client_ids()) == [cid(A, 1), cid(A, 2)]
    assert calls.get_all_client_count() == 2


def test_no_gateway_means_empty_answers(calls, transport):
    transport.listed = []
    assert calls.get_all_client_ids() == [] and calls.get_all_client_count() == 0
    assert calls.get_all_groups() == [] and calls.get_all_uids() == []
    calls.send_to_all("nobody hears")
    assert transport.sent == []


# -- the file store and how GatewayClient picks gateways from it ---------------------------

def list_gateway(store, app, address, age=0.0):
    entry = store / app / address.replace(":", "_")
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(address)
    if age:
        import time
        past = time.time() - age
        os.utime(entry, (past, past))
    return entry


def test_file_store_lists_fresh_entries_and_tidies_stale_ones(tmp_path):
    from geventman.gateway.store import FileStore
    store = FileStore(str(tmp_path), ttl=3.0)
    store.add("chat", "127.0.0.1:2300")
    stale = list_gateway(tmp_path, "chat", "127.0.0.1:2301", age=10)
    list_gateway(tmp_path, "todpole", "127.0.0.1:2400", age=10)
    assert store.addresses("chat") == ["127.0.0.1:2300"]
    assert not stale.exists()
    assert store.apps() == ["chat"]
    store.remove("chat", "127.0.0.1:2300")
    assert store.addresses("chat") == [] and store.apps() == []
    assert store.addresses("nobody") == []


def test_gateway_client_finds_the_only_application(tmp_path):
    from geventman.client import GatewayClient, GatewayError, GatewayNotFound
    with pytest.raises(GatewayNotFound, match="no gateway is listed"):
        GatewayClient(path=str(tmp_path)).get_all_client_count()
    list_gateway(tmp_path, "chat", "127.0.0.1:1")
    list_gateway(tmp_path, "todpole", "127.0.0.1:2")
    with pytest.raises(GatewayError, match="several applications.*chat, todpole"):
        GatewayClient(path=str(tmp_path)).get_all_client_count()
    with pytest.raises(GatewayNotFound, match="'game'"):
        GatewayClient(app="game", path=str(tmp_path)).get_all_client_count()
    # a listed gateway that refuses connections: sends are False, questions unanswered
    client = GatewayClient(app="chat", path=str(tmp_path), timeout=0.5)
    assert client.send_to_client(wire.client_id("127.0.0.1", 1, 5), "x") is False
    assert client.get_all_client_ids() == [] and client.is_online(
        wire.client_id("127.0.0.1", 1, 5)) is False


def test_an_unknown_store_driver_is_a_clear_error():
    from geventman.gateway.store import Store, StoreError
    with pytest.raises(StoreError, match="unknown Store.driver 'mysql'"):
        Store.open("mysql")
