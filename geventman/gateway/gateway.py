"""Gateway: holds the client connections and relays between them and business workers.

A Gateway is a Worker for any client protocol whose messages are not handled where
they arrive: each one goes, with the client's session, over a link to a business
worker process (``BusinessWorker``), and what business code sends comes back over
the links as commands (send to one client, to a group, close...). Gateways are not
reloaded (``reloadable = False``): a reload of the business code keeps every client
connected.

Each gateway child k listens on ``lan_ip:start_port + k`` (its inner port, bound to
``lan_ip`` only) for links from business workers and GatewayClients, and lists that
address in the Store so they find it. The link protocol is ``wire``; the indices of
clients, uids and groups live here, one set per gateway process.
"""
import hmac
import ipaddress

import gevent

from geventman import Worker
from geventman.connection.tcp import ESTABLISHED, TcpConnection
from geventman.gateway import heartbeat, router, sessions, wire
from geventman.gateway.hooks import app_name, hook_property
from geventman.gateway.store import Store, StoreError
from geventman.gateway.wire import Cmd, pack
from geventman.log import log
from geventman.protocols.frame import Frame
from geventman.protocols.text import Text
from geventman.runtime import call
from geventman.timer import Timer

#: Seconds between two "no business worker" log lines.
NOT_READY_LOG_INTERVAL = 10


class ClientConnection(TcpConnection):
    """A client of a gateway. Class defaults keep an idle client's __dict__ small."""

    session = b""          # JSON of the session, b"" when empty
    uid = None
    groups = None          # set of group names, once the client joins one
    silent = 0             # heartbeat ticks since the client last sent something
    route = None           # the link of the business worker that gets its events
    announced = False      # its CONNECT event went (or waits to go) to a worker
    deferred = 0           # events held while its worker leaves (see Link.deferred)
    packed_ip = wire.NO_ADDRESS


class Link:
    """What the gateway knows of one inner connection (a business worker or a client)."""

    __slots__ = ("connection", "worker_key", "authorized", "clients", "leaving", "deferred",
                 "waiting", "full", "active", "returned")

    def __init__(self, connection):
        self.connection = connection
        self.worker_key = None     # set by WORKER_CONNECT: a business worker process
        self.authorized = False
        self.clients = 0           # clients routed to it (router.least_loaded)
        self.leaving = False       # it said WORKER_LEAVING; events for it wait
        self.deferred = []         # (client, packet) held until it is gone
        self.returned = []         # (client, packet) it gave back: older than deferred
        self.waiting = []          # clients paused while its send buffer is full
        self.full = False
        self.active = False        # in Gateway.workers: a router may choose it

    def send(self, packet):
        return self.connection.send_soon(packet)


class Gateway(Worker):
    """``Gateway("websocket://0.0.0.0:7272")``: set lan_ip, start_port, the heartbeat..."""

    def __init__(self, address="", context=None):
        self._hooks = {}
        super().__init__(address, context)
        self.name = "Gateway"
        self.reloadable = False
        self.lan_ip = "127.0.0.1"
        self.start_port = 2000
        self.ping_interval = 0
        self.ping_not_response_limit = 0
        self.ping_data = ""
        self.secret_key = ""
        self.send_to_client_buffer_size = 1 << 20
        self.send_to_worker_buffer_size = 10 << 20
        self.router = router.sticky
        self.app_name = app_name(self.app_dir)
        self.on_business_worker_connected = self.on_business_worker_close = None
        self.lan_port = 0
        self.uids = {}             # uid -> {connection id: client}
        self.groups = {}           # group -> {connection id: client}
        self.workers = {}          # worker key -> Link of a business worker
        self.relayed = 0           # messages relayed (status)
        self._links = {}           # inner connection id -> Link
        self._inner = None
        self._store = None
        self._store_greenlet = None
        self._not_ready_logged = 0.0
        self._waiting_for_workers = []  # (client, packet) while no worker is connected

    connection_class = ClientConnection

    # The user's hooks run in the gateway process, around the relay that stays ours.
    on_connect = hook_property("on_connect", "_gateway_on_connect")
    on_message = hook_property("on_message", "_gateway_on_message",
                               "a Gateway relays messages: handle them in events.py")
    on_close = hook_property("on_close", "_gateway_on_close")
    on_websocket_connect = hook_property("on_websocket_connect",
                                         "_gateway_on_websocket_connect")
    on_worker_start = hook_property("on_worker_start", "_gateway_on_worker_start")
    on_worker_stop = hook_property("on_worker_stop", "_gateway_on_worker_stop")

    # -- in the master ---------------------------------------------------------------

    def bind_listeners(self):
        """The client port as any worker's; the inner ports are only tried here (each
        child binds its own): one already taken fails the start, not a child."""
        try:
            ipaddress.IPv4Address(self.lan_ip)
        except ValueError:
            raise ValueError("gateway %s: lan_ip must be an IPv4 address (client ids carry "
                             "it), not %r" % (self.name, self.lan_ip)) from None
        super().bind_listeners()
        for slot in range(self.count):
            probe = Worker("tcp://%s:%d" % (self.lan_ip, self.start_port + slot))
            Worker._all.remove(probe)
            try:
                probe._bind(probe.port, probe=True).close()
            except OSError as error:
                self.close_listeners()
                raise OSError(error.errno, "gateway %s: inner port %s:%d: %s" % (
                    self.name, self.lan_ip, self.start_port + slot, error.strerror)) from None

    # -- process life ----------------------------------------------------------------

    def _gateway_on_worker_start(self, worker):
        self.lan_port = self.start_port + self.id
        inner = Worker("tcp://%s:%d" % (self.lan_ip, self.lan_port))
        Worker._all.remove(inner)    # made in a child: not one of the server's workers
        inner.name = "%s.inner" % self.name
        inner.protocol = wire.GatewayProtocol
        inner.exclusive = True        # two gateways on one port must fail, not share it
        inner.on_connect = self._link_connected
        inner.on_message = self._link_message
        inner.on_close = self._link_closed
        inner.listen()
        self._inner = inner
        self._store = Store.open()
        self._store_greenlet = gevent.spawn(self._keep_listed)
        if self.ping_interval > 0:
            Timer.add(self.ping_interval, self._heartbeat)
        call(self._hooks.get("on_worker_start"), self)

    def _gateway_on_worker_stop(self, worker):
        if self._store_greenlet is not None:
            self._store_greenlet.kill(block=False)
            # Bounded: a store that is down must not hold the stop up until the master
            # kills this process; the entry then expires (Store.ttl).
            gevent.spawn(self._leave_store).join(timeout=min(0.5, Store.timeout))
        if self._inner is not None:
            self._inner.unlisten()
        call(self._hooks.get("on_worker_stop"), self)

    def _leave_store(self):
        try:
            self._store.remove(self.app_name, self.inner_address)
        except StoreError as error:
            log("gateway %s: cannot leave the store: %s" % (self.inner_address, error))

    @property
    def clients(self):
        """Connection id -> client, of this process (the worker's own connection map)."""
        return self.connections

    @property
    def inner_address(self):
        return "%s:%d" % (self.lan_ip, self.lan_port)

    def _keep_listed(self):
        failing = False
        while True:
            try:
                self._store.add(self.app_name, self.inner_address)
                if failing:
                    log("gateway %s: listed in the store again" % self.inner_address)
                failing = False
            except StoreError as error:
                if not failing:
                    log("gateway %s: cannot list itself in the store (%s): %s" % (
                        self.inner_address, Store.describe(), error))
                failing = True
            gevent.sleep(Store.refresh)

    # -- clients ---------------------------------------------------------------------

    def _gateway_on_connect(self, client):
        client.max_send_buffer_size = self.send_to_client_buffer_size
        try:
            client.packed_ip = wire.ip_bytes(client.get_remote_ip())
        except ValueError:
            pass  # not an IP address (a unix socket): no address in the events
        call(self._hooks.get("on_connect"), client)
        if client.state is ESTABLISHED:
            client.announced = True
            self._forward(client, Cmd.CONNECT)

    def _gateway_on_websocket_connect(self, client, request):
        call(self._hooks.get("on_websocket_connect"), client, request)
        if client.state is ESTABLISHED:
            data = {"get": request.get, "server": request.server, "cookie": request.cookie,
                    "path": request.path, "headers": request.headers}
            self._forward(client, Cmd.WEBSOCKET_CONNECT, wire.dumps(data), wire.JSON)

    def _gateway_on_message(self, client, data):
        """The hot path of the relay: one packet for the client's worker, written with
        the others of this loop turn (send_soon)."""
        client.silent = 0
        self.relayed += 1
        if data.__class__ is str:
            body, flags = data.encode(), wire.TEXT
        else:
            body, flags = wire.encode_data(data)
        link = client.route
        if (link is not None and link.active and self.router is router.sticky
                and not link.full):
            session = client.session
            link.connection.send_soon(wire.HEADER.pack(
                wire.HEADER_SIZE + len(session) + len(body), Cmd.MESSAGE, flags, client.id,
                0, client._remote_address[1], client.packed_ip, len(session)) + session + body)
        else:
            self._forward(client, Cmd.MESSAGE, body, flags)

    def _gateway_on_close(self, client):
        if client.uid is not None:
            self._unbind(client, client.uid)
        for group in list(client.groups or ()):  # _leave changes the set
            self._leave(client, group)
        if client.announced:
            self._forward(client, Cmd.CLOSE)
        call(self._hooks.get("on_close"), client)

    def _forward(self, client, cmd, body=b"", flags=0):
        packet = pack(cmd, client.id, client.session, body, flags, 0, client._remote_address[1],
                      client.packed_ip)
        link = self._route(client, cmd, body)
        if link is None or link.leaving or link.full:
            return self._hold(client, link, packet)
        self._send_event(client, link, packet)

    def _send_event(self, client, link, packet):
        if link.send(packet) is False and not self._stopping:
            log("gateway %s: the link to %s lost an event of client %d" % (
                self.inner_address, link.worker_key, client.id))
        if packet[4] == Cmd.CLOSE:  # the client is gone: it counts no more
            link.clients -= 1
            client.route = None

    def _route(self, client, cmd, body):
        """The link for the client's next event, per the router; counts the move."""
        old = client.route
        if old is not None and old.leaving:
            return old  # its events wait until it is gone, in order
        link = self.router(self.workers, client, cmd, body)
        if link is not old:
            if old is not None:
                old.clients -= 1
            if link is not None:
                link.clients += 1
            client.route = link
        return link

    def _hold(self, client, link, packet):
        """No worker can take this event now: keep it, and stop reading the client's
        messages until it can (so at most one read's worth waits per client). A held
        connect does not stop the reading: a WebSocket handshake still completes."""
        if packet[4] == Cmd.MESSAGE:
            client.pause_recv()
        client.deferred += 1
        if link is None:
            self._waiting_for_workers.append((client, packet))
            self._log_not_ready()
        elif link.full and not link.leaving:
            link.waiting.append((client, packet))
        else:
            link.deferred.append((client, packet))

    def _log_not_ready(self):
        now = gevent.get_hub().loop.now()
        if now - self._not_ready_logged >= NOT_READY_LOG_INTERVAL:
            self._not_ready_logged = now
            log("gateway %s: no business worker connected yet; %d client events wait" % (
                self.inner_address, len(self._waiting_for_workers)))

    def _release(self, held):
        """Send held events again (in their order), then read those clients again."""
        for client, packet in held:
            client.deferred -= 1
            # A client that left meanwhile still has its events handled, in order (its
            # connect, what it said before going, its close). The session as it is now: the worker that left may have changed it
            # after this event was held.
            packet = wire.replace_ext(packet, client.session)
            link = self._route(client, None, b"")
            if link is None or link.leaving or link.full:
                self._hold(client, link, packet)
            else:
                self._send_event(client, link, packet)
        for client, _ in held:
            if not client.deferred and client.state is ESTABLISHED:
                client.resume_recv()

    # -- heartbeat -------------------------------------------------------------------

    def _heartbeat(self):
        limit, data = self.ping_not_response_limit, self.ping_data
        pinged = []
        for client in self.clients.values():
            client.silent, action = heartbeat.tick(client.silent, limit, data)
            if action is heartbeat.PING:
                pinged.append(client)
            elif action is heartbeat.DROP:
                client.destroy()  # not close(): a full send buffer must not delay it
        send_to_many(pinged, data)

    # -- links -----------------------------------------------------------------------

    def _link_connected(self, connection):
        self._inner.connections.pop(connection.id, None)  # links do not hold a stop up
        connection.max_package_size = wire.MAX_PACKET_SIZE
        connection.max_send_buffer_size = self.send_to_worker_buffer_size
        link = connection.link = Link(connection)
        link.authorized = not self.secret_key
        self._links[connection.id] = link
        connection.on_buffer_full = self._link_full
        connection.on_buffer_drain = self._link_drained

    def _link_closed(self, connection):
        link = self._links.pop(connection.id, None)
        if link is None or link.worker_key is None:
            return
        link.active = False
        if self.workers.get(link.worker_key) is link:
            del self.workers[link.worker_key]
        call(self.on_business_worker_close, link.worker_key)  # left, or went
        link.leaving = True
        moved = [client for client in self.clients.values() if client.route is link]
        for client in moved:
            client.route = None
        # Oldest first: given back by the worker, held while its link was full, held
        # while it was leaving.
        held, link.deferred = link.returned + link.waiting + link.deferred, []
        link.waiting = link.returned = []
        for client, _ in held:
            if client.route is link:
                client.route = None
        self._release(held)

    def _link_full(self, connection):
        connection.link.full = True

    def _link_drained(self, connection):
        link = connection.link
        link.full = False
        waiting, link.waiting = link.waiting, []
        if link.leaving:
            link.deferred[:0] = waiting  # older than what its leaving held: first
            return
        self._release(waiting)

    def _link_message(self, connection, packet):
        link = connection.link
        cmd = packet.cmd
        if not link.authorized:
            return self._authorize(link, packet)
        handler = self._commands.get(cmd)
        if handler is None:
            log("gateway %s: unexpected %s from %s, closing the link" % (
                self.inner_address, wire._name(cmd), connection.get_remote_address()))
            return connection.destroy()
        try:
            handler(self, link, packet)
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as error:
            # an argument of the wrong JSON type (a list for a dict...): one line
            log("gateway %s: bad %s from %s: %s" % (
                self.inner_address, wire._name(cmd), connection.get_remote_address(),
                repr(error)[:200]))

    def _authorize(self, link, packet):
        if packet.cmd in (Cmd.WORKER_CONNECT, Cmd.CLIENT_CONNECT):
            try:
                key = (packet.argument or {}).get("secret_key", "")
            except (ValueError, AttributeError):
                key = ""
            if isinstance(key, str) and hmac.compare_digest(key.encode(), self.secret_key.encode()):
                link.authorized = True
                if packet.cmd == Cmd.WORKER_CONNECT:
                    self._worker_connect(link, packet)
                return None
        log("gateway %s: refused %s: wrong secret_key" % (
            self.inner_address, link.connection.get_remote_address()))
        link.connection.close(pack(Cmd.REFUSED), True)
        return None

    def _worker_connect(self, link, packet):
        argument = packet.argument or {}
        key = "%s:%s" % (link.connection.get_remote_ip(), argument.get("worker_key", link))
        old = self.workers.get(key)
        if old is not None and old is not link:
            old.connection.destroy()
        link.worker_key = key
        self.workers[key] = link
        link.active = True
        link.send(pack(Cmd.WELCOME, 0, wire.dumps({"gateway_port": self.port,
                                                    "address": self.inner_address})))
        waiting, self._waiting_for_workers = self._waiting_for_workers, []
        self._release(waiting)  # before the hook, which may yield: held events go first
        call(self.on_business_worker_connected, key)

    def _worker_leaving(self, link, packet):
        if self.workers.get(link.worker_key) is link:
            del self.workers[link.worker_key]
        link.leaving, link.active = True, False
        link.send(pack(Cmd.LEAVE_ACK))

    def _returned(self, link, packet):
        """An event the leaving worker did not start: it waits with those held for the
        worker, ahead of them (it is older), and goes to the next one."""
        event = packet.body
        if wire.packet_length(event) != len(event) or event[4] not in wire.EVENTS:
            raise ValueError("not an event packet")
        number = wire.unpack(event).connection_id
        client = self.clients.get(number)
        if client is None:
            if event[4] != Cmd.CLOSE:
                return  # the client is gone; only its on_close is still to run
            client = _Gone(number, wire.unpack(event).ext)
        client.pause_recv()
        client.deferred += 1
        link.returned.append((client, event))

    # -- commands --------------------------------------------------------------------

    def _send_to_one(self, link, packet):
        client = self.connections.get(packet.connection_id)
        if client is not None:
            flags = packet.flags
            if flags & wire.RAW:
                client.send(packet.body, True)
            elif flags & wire.TEXT:
                client.send(packet.body.decode("utf-8", "replace"))
            else:
                client.send(_value(client, packet))

    def _send_to_all(self, link, packet):
        argument = packet.argument
        if argument and "ids" in argument:
            targets = [self.clients[number] for number in argument["ids"]
                       if number in self.clients]
        else:
            excluded = set(argument.get("exclude", ())) if argument else ()
            targets = [client for number, client in self.clients.items()
                       if number not in excluded]
        broadcast(targets, packet)

    def _send_to_uid(self, link, packet):
        targets = []
        for uid in packet.argument:
            targets.extend(self.uids.get(uid, {}).values())
        broadcast(targets, packet)

    def _send_to_group(self, link, packet):
        argument = packet.argument
        excluded = set(argument.get("exclude") or ())
        seen = {}
        for group in argument["groups"]:
            for number, client in self.groups.get(group, {}).items():
                if number not in excluded:
                    seen[number] = client
        broadcast(list(seen.values()), packet)

    def _kick(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            if packet.flags & wire.HAS_DATA:
                raw = bool(packet.flags & wire.RAW)
                client.close(packet.body if raw else _value(client, packet), raw)
            else:
                client.close()

    def _destroy(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            client.destroy()

    def _set_session(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            client.session = _session_bytes(packet.argument)

    def _update_session(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            old = wire.loads(client.session) or {}
            client.session = _session_bytes(sessions.merge(old, packet.argument))

    def _patch_session(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            old = wire.loads(client.session) or {}
            client.session = _session_bytes(sessions.patch(old, packet.argument))

    def _bind_uid(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            uid = packet.ext.decode()
            if client.uid is not None and client.uid != uid:
                self._unbind(client, client.uid)  # one uid per client: rebinding moves it
            client.uid = uid
            self.uids.setdefault(uid, {})[client.id] = client

    def _unbind_uid(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None and client.uid == packet.ext.decode():
            self._unbind(client, client.uid)

    def _unbind(self, client, uid):
        members = self.uids.get(uid)
        if members is not None:
            members.pop(client.id, None)
            if not members:
                del self.uids[uid]
        client.uid = None

    def _join_group(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None:
            group = packet.ext.decode()
            if client.groups is None:
                client.groups = set()
            client.groups.add(group)
            self.groups.setdefault(group, {})[client.id] = client

    def _leave_group(self, link, packet):
        client = self.clients.get(packet.connection_id)
        if client is not None and client.groups and packet.ext.decode() in client.groups:
            self._leave(client, packet.ext.decode())

    def _leave(self, client, group):
        members = self.groups.get(group)
        if members is not None:
            members.pop(client.id, None)
            if not members:
                del self.groups[group]
        client.groups.discard(group)

    def _ungroup(self, link, packet):
        for client in self.groups.pop(packet.ext.decode(), {}).values():
            client.groups.discard(packet.ext.decode())

    def _query(self, link, packet):
        question = packet.argument
        query = self._queries.get(question.get("q"))
        if query is None:  # a peer of another version: it gets an answer, not a 3 s wait
            log("gateway %s: bad QUERY from %s: unknown query %r" % (
                self.inner_address, link.connection.get_remote_address(),
                str(question.get("q"))[:100]))
            answer = None
        else:
            answer = query(self, question)
        link.send(pack(Cmd.REPLY, 0, b"", wire.dumps(answer), wire.JSON, packet.request_id))

    def _ping(self, link, packet):
        pass

    # -- queries (QUERY: {"q": name, ...}; answers are JSON) ---------------------------

    def _members(self, question):
        """The clients a question is about: of its group, of its uid, or all."""
        if "group" in question:
            return self.groups.get(question["group"], {})
        if "uid" in question:
            return self.uids.get(question["uid"], {})
        return self.clients

    def _q_client_ids(self, question):
        return list(self._members(question))

    def _q_client_count(self, question):
        return len(self._members(question))

    def _q_sessions(self, question):
        return {number: wire.loads(client.session) or {}
                for number, client in self._members(question).items()}

    def _q_uids(self, question):
        return sorted({client.uid for client in self._members(question).values()
                       if client.uid is not None})

    def _q_groups(self, question):
        return {group: [len(members), sorted({c.uid for c in members.values() if c.uid})]
                for group, members in self.groups.items()}

    def _q_is_online(self, question):
        return question["id"] in self.clients

    def _q_session(self, question):
        client = self.clients.get(question["id"])
        return None if client is None else (wire.loads(client.session) or {})

    def _q_uid(self, question):
        client = self.clients.get(question["id"])
        return None if client is None else client.uid

    _queries = {"client_ids": _q_client_ids, "client_count": _q_client_count,
                "sessions": _q_sessions, "uids": _q_uids, "groups": _q_groups,
                "is_online": _q_is_online, "session": _q_session, "uid": _q_uid}

    _commands = {
        Cmd.SEND_TO_ONE: _send_to_one, Cmd.SEND_TO_ALL: _send_to_all,
        Cmd.SEND_TO_UID: _send_to_uid, Cmd.SEND_TO_GROUP: _send_to_group,
        Cmd.KICK: _kick, Cmd.DESTROY: _destroy,
        Cmd.SET_SESSION: _set_session, Cmd.UPDATE_SESSION: _update_session,
        Cmd.PATCH_SESSION: _patch_session,
        Cmd.BIND_UID: _bind_uid, Cmd.UNBIND_UID: _unbind_uid,
        Cmd.JOIN_GROUP: _join_group, Cmd.LEAVE_GROUP: _leave_group, Cmd.UNGROUP: _ungroup,
        Cmd.QUERY: _query, Cmd.PING: _ping,
        Cmd.WORKER_CONNECT: _worker_connect, Cmd.CLIENT_CONNECT: _ping,
        Cmd.WORKER_LEAVING: _worker_leaving, Cmd.RETURNED: _returned,
    }

    # -- status ----------------------------------------------------------------------

    def status_fields(self):
        return {"clients": len(self.clients), "relayed": self.relayed,
                "business_workers": len(self.workers)}

    @staticmethod
    def connection_fields(connection):
        if not isinstance(connection, ClientConnection):
            return {}
        worker = connection.worker
        return {"client_id": wire.client_id(worker.lan_ip, worker.lan_port, connection.id),
                "uid": connection.uid, "groups": sorted(connection.groups or ())}


class _Gone:
    """Stands for a client that is gone when a leaving worker gives its CLOSE event
    back, so that on_close still runs on the next worker."""

    state = None
    route = None
    deferred = 0

    def __init__(self, number, session):
        self.id, self.session = number, session

    def pause_recv(self):
        pass


#: Protocols that carry only text and bytes: a JSON value (a dict...) reaches their
#: clients as its JSON text, as a WebSocket client gets it in a text frame.
STRING_ONLY = (Text, Frame)


def _value(client, packet):
    """The message as the client's protocol takes it."""
    if packet.flags & wire.JSON and client.protocol in STRING_ONLY:
        return packet.body
    return packet.data


def broadcast(clients, packet):
    """Send a command's message to many clients (see ``send_to_many``)."""
    if packet.flags & wire.RAW:
        for client in clients:
            client.send(packet.body, True)
        return
    send_to_many(clients, packet.data, packet.body if packet.flags & wire.JSON else None)


def send_to_many(clients, data, json_text=None):
    """Send one message to many clients, encoding it once per kind of connection (one
    WebSocket frame for every open WebSocket without compression, not one per client).
    ``json_text``: the JSON of ``data`` when it is a JSON value, for STRING_ONLY protocols."""
    encoded = {}
    for client in clients:
        key = shared_encoding(client)
        try:
            if key is None:
                client.send(data)
                continue
            frame = encoded.get(key)
            if frame is None:
                value = json_text if json_text is not None and key in STRING_ONLY else data
                frame = encoded[key] = client.protocol.encode(value, client)
                if isinstance(frame, str):
                    frame = encoded[key] = frame.encode()
        except (TypeError, ValueError, UnicodeError) as error:
            # This client's protocol cannot carry the message (a dict to text://): the
            # others still get it.
            log("gateway: cannot send %s to %s client %d: %s" % (
                type(data).__name__, client.protocol.__name__ if client.protocol else "tcp",
                client.id, error))
            continue
        client.send(frame, True)


def shared_encoding(client):
    """A key shared by connections whose encoding of a message is the same bytes, or
    None when this connection must encode for itself (compression with context
    takeover, a handshake still under way, an unknown protocol)."""
    protocol = client.protocol
    if protocol is Text or protocol is Frame:
        return protocol
    hook = getattr(protocol, "broadcast_key", None)
    return hook(client) if hook is not None else None


def _session_bytes(value):
    if value is None:
        return b""
    if not isinstance(value, dict):
        raise TypeError("a session is a dict")
    return wire.dumps(value) if value else b""
