"""The Gateway API over any transport: what ``Gateway.send_to_all(...)`` and the other
calls put on the wire, and how answers from several gateways are merged.

Two transports carry it: the links of a BusinessWorker process (``api.py``) and the
blocking sockets of ``GatewayClient`` (``geventman/client.py``). A transport has
``addresses()`` (the live gateways), ``send(address, packet)`` (fire and forget) and
``ask(questions)`` ({address: ext} -> {address: answer}, every gateway asked at once,
one deadline for all; a gateway that does not answer in time is left out).

Uids and groups are strings (an int is turned into one), as they were PHP array keys.
A call about one client goes straight to the gateway its client_id names.
"""
from geventman.gateway import wire
from geventman.gateway.wire import Cmd, WireError, dumps, pack


def _key(value, what):
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError("%s must be a non-empty str or int: %r" % (what, value))
    return str(value)


def _keys(values, what):
    if isinstance(values, (str, int)):
        values = [values]
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise ValueError("%s: a str or int, or a list of them, not %r" % (what, values))
    return [_key(value, what) for value in values]


def _message(data, raw):
    body, flags = wire.encode_data(data)
    return body, flags | wire.RAW if raw else flags


class Calls:
    """Every Gateway API call but the current-client ones (those live in api.py)."""

    def __init__(self, transport):
        self.transport = transport

    # -- plumbing ------------------------------------------------------------------

    def _command(self, client_id, cmd, ext=b"", body=b"", flags=0):
        """A command about one client, to the gateway that holds it. False if the
        client id is not one or its gateway cannot be reached."""
        try:
            ip, port, connection_id = wire.parse_client_id(client_id)
        except WireError:
            return False
        return self.transport.send("%s:%d" % (ip, port),
                                   pack(cmd, connection_id, ext, body, flags)) is not False

    def _everywhere(self, cmd, ext=b"", body=b"", flags=0):
        packet = pack(cmd, 0, ext, body, flags)
        for address in self.transport.addresses():
            self.transport.send(address, packet)

    def _ask_one(self, client_id, question):
        try:
            ip, port, connection_id = wire.parse_client_id(client_id)
        except WireError:
            return None
        address = "%s:%d" % (ip, port)
        question["id"] = connection_id
        return self.transport.ask({address: dumps(question)}).get(address)

    def _ask_all(self, question):
        ext = dumps(question)
        return self.transport.ask({address: ext for address in self.transport.addresses()})

    def _client_ids(self, answers):
        """{address: [connection ids]} -> [client ids]."""
        ids = []
        for address, connections in answers.items():
            ip, _, port = address.rpartition(":")
            ids.extend(wire.client_id(ip, int(port), int(number)) for number in connections)
        return ids

    def _by_gateway(self, client_ids):
        """[client ids] -> {address: [connection ids]} (ids that are not ids are skipped)."""
        grouped = {}
        for value in client_ids:
            try:
                ip, port, connection_id = wire.parse_client_id(value)
            except WireError:
                continue
            grouped.setdefault("%s:%d" % (ip, port), []).append(connection_id)
        return grouped

    # -- sending -------------------------------------------------------------------

    def send_to_all(self, data, client_ids=None, exclude=None, raw=False):
        """To every client, or to the listed ones; ``exclude`` lists client ids to skip."""
        body, flags = _message(data, raw)
        if client_ids is not None:
            for address, ids in self._by_gateway(client_ids).items():
                self.transport.send(address, pack(Cmd.SEND_TO_ALL, 0, dumps({"ids": ids}),
                                                  body, flags))
            return
        excluded = self._by_gateway(exclude or ())
        for address in self.transport.addresses():
            ext = dumps({"exclude": excluded[address]}) if address in excluded else b""
            self.transport.send(address, pack(Cmd.SEND_TO_ALL, 0, ext, body, flags))

    def send_to_client(self, client_id, data, raw=False):
        body, flags = _message(data, raw)
        return self._command(client_id, Cmd.SEND_TO_ONE, b"", body, flags)

    def send_to_uid(self, uid_or_uids, data, raw=False):
        body, flags = _message(data, raw)
        self._everywhere(Cmd.SEND_TO_UID, dumps(_keys(uid_or_uids, "uid")), body, flags)

    def send_to_group(self, group_or_groups, data, exclude=None, raw=False):
        body, flags = _message(data, raw)
        groups = _keys(group_or_groups, "group")
        excluded = self._by_gateway(exclude or ())
        for address in self.transport.addresses():
            ext = dumps({"groups": groups, "exclude": excluded.get(address, [])})
            self.transport.send(address, pack(Cmd.SEND_TO_GROUP, 0, ext, body, flags))

    # -- closing -------------------------------------------------------------------

    def close_client(self, client_id, data=None):
        """Close after what is queued for the client (and ``data``, if given) is sent."""
        if data is None:
            return self._command(client_id, Cmd.KICK)
        body, flags = wire.encode_data(data)
        return self._command(client_id, Cmd.KICK, b"", body, flags | wire.HAS_DATA)

    def destroy_client(self, client_id):
        """Close now, dropping what is queued."""
        return self._command(client_id, Cmd.DESTROY)

    # -- clients -------------------------------------------------------------------

    def is_online(self, client_id):
        return bool(self._ask_one(client_id, {"q": "is_online"}))

    def get_all_client_ids(self):
        return self._client_ids(self._ask_all({"q": "client_ids"}))

    get_online_status = get_all_client_ids  # the 3.x name

    def get_all_client_count(self):
        return sum(self._ask_all({"q": "client_count"}).values())

    def get_all_client_sessions(self, group=None):
        """{client_id: session} of every client (of ``group``, if given)."""
        question = {"q": "sessions"}
        if group is not None:
            question["group"] = _key(group, "group")
        sessions = {}
        for address, found in self._ask_all(question).items():
            ip, _, port = address.rpartition(":")
            for number, session in found.items():
                sessions[wire.client_id(ip, int(port), int(number))] = session
        return sessions

    # -- uids ----------------------------------------------------------------------

    def bind_uid(self, client_id, uid):
        return self._command(client_id, Cmd.BIND_UID, _key(uid, "uid").encode())

    def unbind_uid(self, client_id, uid):
        return self._command(client_id, Cmd.UNBIND_UID, _key(uid, "uid").encode())

    def is_uid_online(self, uid):
        return bool(self.get_client_ids_by_uid(uid))

    def get_client_ids_by_uid(self, uid):
        return self._client_ids(self._ask_all({"q": "client_ids", "uid": _key(uid, "uid")}))

    def get_uid_by_client_id(self, client_id):
        return self._ask_one(client_id, {"q": "uid"})

    def get_all_uids(self):
        return sorted(self._union(self._ask_all({"q": "uids"})))

    def get_all_uid_count(self):
        return len(self._union(self._ask_all({"q": "uids"})))

    @staticmethod
    def _union(answers):
        found = set()
        for values in answers.values():
            found.update(values)
        return found

    # -- groups --------------------------------------------------------------------

    def join_group(self, client_id, group):
        return self._command(client_id, Cmd.JOIN_GROUP, _key(group, "group").encode())

    def leave_group(self, client_id, group):
        return self._command(client_id, Cmd.LEAVE_GROUP, _key(group, "group").encode())

    def ungroup(self, group):
        """Dissolve ``group`` on every gateway (its clients stay connected)."""
        self._everywhere(Cmd.UNGROUP, _key(group, "group").encode())

    def get_client_ids_by_group(self, group):
        return self._client_ids(self._ask_all({"q": "client_ids",
                                               "group": _key(group, "group")}))

    def get_client_count_by_group(self, group):
        return sum(self._ask_all({"q": "client_count", "group": _key(group, "group")}).values())

    def get_client_sessions_by_group(self, group):
        return self.get_all_client_sessions(group)

    def get_uids_by_group(self, group):
        return sorted(self._union(self._ask_all({"q": "uids", "group": _key(group, "group")})))

    def get_uid_count_by_group(self, group):
        return len(self._union(self._ask_all({"q": "uids", "group": _key(group, "group")})))

    def _groups(self):
        """{group: (client count, set of uids)} over every gateway."""
        merged = {}
        for found in self._ask_all({"q": "groups"}).values():
            for group, (count, uids) in found.items():
                total, seen = merged.get(group, (0, set()))
                merged[group] = (total + count, seen | set(uids))
        return merged

    def get_all_groups(self):
        return sorted(self._groups())

    def get_all_group_client_counts(self):
        return {group: count for group, (count, _) in self._groups().items()}

    def get_all_group_uid_counts(self):
        return {group: len(uids) for group, (_, uids) in self._groups().items()}

    # -- sessions ------------------------------------------------------------------

    def set_session(self, client_id, session):
        """Replace the client's session with ``session`` (a dict of JSON values)."""
        return self._command(client_id, Cmd.SET_SESSION, dumps(_session(session)))

    def update_session(self, client_id, changes):
        """Merge ``changes`` into the client's session (nested dicts key by key)."""
        return self._command(client_id, Cmd.UPDATE_SESSION, dumps(_session(changes)))

    def get_session(self, client_id):
        """The client's session (a dict), or None if it is not online."""
        return self._ask_one(client_id, {"q": "session"})


def _session(value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("a session is a dict, not %s" % type(value).__name__)
    return value
