"""BusinessWorker: runs the application's events.py for the clients of every gateway.

Each BusinessWorker process keeps one link to every gateway the Store lists for its
application (looked at every second), introduces itself with the secret key, and then
gets the events of the clients the gateways route to it. Events of one client are
handled one after the other in one greenlet; events of different clients run side by
side, so a handler that blocks (a database, an HTTP call) holds up only its client.

It is reloadable: on reload or stop it tells each gateway it is leaving, waits for
the acknowledgement (every event for it was sent before that), finishes what it has,
then goes. The gateways hold the events of its clients meanwhile and hand them to
another business worker once it is gone, so no message is lost or reordered.
"""
import collections
import importlib
import importlib.util
import itertools
import os
import sys
import time
import traceback

import gevent
import gevent.event
from gevent import getcurrent

from geventman import Worker
from geventman.connection.async_tcp import AsyncTcpConnection
from geventman.connection.tcp import CLOSING, ESTABLISHED, run_soon
from geventman.gateway import sessions, wire
from geventman.gateway.hooks import app_name, hook_property
from geventman.gateway.store import Store, StoreError
from geventman.gateway.wire import Cmd, pack
from geventman.log import log
from geventman.runtime import call

#: Events queued in this process past which the links stop being read (TCP then slows
#: the gateways down), and the level at which reading resumes.
HIGH_WATER, LOW_WATER = 10000, 2000
RECONNECT_DELAYS = (0.1, 0.5, 1, 2, 4)
REFUSED_DELAY = 30  # seconds before trying again a gateway that refused our secret_key
QUERY_TIMEOUT = 3.0
#: Our writes of one client's session the gateway may not have applied yet, remembered.


class EventContext:
    """What ``Context`` shows while one event of one client is handled."""

    __slots__ = ("link", "connection_id", "client_id", "session", "before", "packet",
                 "handler", "started", "logged")

    def __init__(self, link, packet, client_id, session, before, handler):
        self.link, self.packet = link, packet
        self.connection_id = packet.connection_id
        self.client_id = client_id
        self.session, self.before = session, before
        self.handler, self.started, self.logged = handler, time.monotonic(), False

    @property
    def server(self):
        packet, link = self.packet, self.link
        return {"REMOTE_ADDR": packet.remote_ip, "REMOTE_PORT": packet.client_port,
                "GATEWAY_ADDR": link.gateway_ip, "GATEWAY_PORT": link.gateway_port,
                "GATEWAY_CLIENT_ID": self.client_id}


class Written:
    """The sessions of one client that this worker superseded with changes the gateway
    may not have applied yet, oldest first, and the latest one (bytes, as the gateway
    sends them).

    Events leave the gateway in order, each with the session it has then, while our
    changes reach it only after each handler: the events on their way may carry any
    session we wrote since the one they started from. Once an event carries one of
    them, the ones before it cannot come any more (the gateway's session only moves
    forward); once it carries something else, the gateway has caught up."""

    __slots__ = ("older", "latest")

    #: Bound on the sessions remembered, for a gateway that never catches up.
    LIMIT = 1024

    def __init__(self):
        self.older = []
        self.latest = None

    def current(self, raw):
        """The session to handle an event with that carries ``raw``, or None when the
        gateway has caught up (``raw`` is then the truth)."""
        try:
            index = self.older.index(raw)
        except ValueError:
            return None
        del self.older[:index]
        return self.latest

    def wrote(self, fresh, *superseded):
        if self.latest is not None:
            superseded += (self.latest,)
        for value in superseded:
            if value != fresh and value not in self.older:
                self.older.append(value)
        if fresh in self.older:
            self.older.remove(fresh)
        del self.older[:-self.LIMIT]
        self.latest = fresh


def _session_after(before, changes):
    """The bytes of the session the gateway keeps after patching ``before`` (what it
    had, calls of the handler such as update_session included) with ``changes``: it
    computes them the same way, key order included."""
    session = sessions.patch(before, changes)
    return wire.dumps(session) if session else b""


#: greenlet -> EventContext of the event it is handling (api.Context reads it).
contexts = {}


class GatewayLink(AsyncTcpConnection):
    """A business worker's link to one gateway process."""

    ready = False          # the gateway accepted us (WELCOME)
    refused = False        # the gateway refused our secret_key (REFUSED)
    gateway_port = 0
    retries = 0

    def setup(self, owner, address):
        self.owner = owner
        self.address = address
        self.gateway_ip, _, port = address.rpartition(":")
        self.gateway_lan_port = int(port)
        self.protocol = wire.GatewayProtocol
        self.max_package_size = wire.MAX_PACKET_SIZE
        self.max_send_buffer_size = owner.send_to_gateway_buffer_size
        self.ids = {}      # connection id -> client id (made once per client)
        self.left = gevent.event.Event()

    def client_id(self, connection_id):
        value = self.ids.get(connection_id)
        if value is None:
            value = self.ids[connection_id] = wire.client_id(
                self.gateway_ip, self.gateway_lan_port, connection_id)
        return value


class BusinessWorker(Worker):
    """``BusinessWorker()``: set count, event_handler ("events": events.py of the app)."""

    #: The BusinessWorker serving in this process (the API sends through its links).
    current = None

    def __init__(self, address="", context=None):
        self._hooks = {}
        super().__init__("", context)
        self.name = "BusinessWorker"
        self.event_handler = "events"
        self.secret_key = ""
        self.process_timeout = 30
        self.send_to_gateway_buffer_size = 10 << 20
        self.app_name = app_name(self.app_dir)
        self.events = None        # the loaded events module (or object)
        self.links = {}           # gateway address -> GatewayLink
        self._listed = set()      # the addresses the store listed last
        self.handled = 0          # events handled (status)
        self._queues = {}         # (link, connection id) -> deque of packets
        self._queued = 0
        self._paused = False
        self._requests = {}       # request id -> AsyncResult
        self._request_ids = itertools.count(1)
        self._stale = {}          # (link, connection id) -> Written
        self._background = []

    on_worker_start = hook_property("on_worker_start", "_business_on_worker_start")
    on_worker_stop = hook_property("on_worker_stop", "_business_on_worker_stop")

    # -- process life ----------------------------------------------------------------

    def _business_on_worker_start(self, worker):
        BusinessWorker.current = self
        self.events = load_events(self.event_handler, self.app_dir, self.app_name)
        for name in ("on_connect", "on_message", "on_close", "on_websocket_connect"):
            setattr(self, "_" + name, getattr(self.events, name, None))
        self._store = Store.open()
        self._background = [gevent.spawn(self._watch_store), gevent.spawn(self._watchdog)]
        call(getattr(self.events, "on_worker_start", None), self)
        call(self._hooks.get("on_worker_start"), self)

    def _business_on_worker_stop(self, worker):
        call(getattr(self.events, "on_worker_stop", None), self)
        call(self._hooks.get("on_worker_stop"), self)

    def stop_accepting(self):
        """Leave every gateway in order (see the module's docstring), then stop."""
        if self._stopping:
            return
        self._stopping = True
        for greenlet in self._background:
            greenlet.kill(block=False)
        # Within the stop time (the master kills after it): handle what is queued,
        # give back what is not started yet, let the running handlers finish, flush.
        started = time.monotonic()
        deadline = started + max(0.5, Worker.stop_timeout * 0.6)
        leaving = [link for link in self.links.values() if link.ready]
        for link in leaving:
            link.send(pack(Cmd.WORKER_LEAVING), True)
        for link in leaving:
            link.left.wait(max(0, deadline - time.monotonic()))
        while (self._queues or contexts) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self._give_back()
        finished = started + max(0.6, Worker.stop_timeout * 0.85)
        while contexts and time.monotonic() < finished:
            gevent.sleep(0.01)
        if contexts:
            log("business worker: stopping with %d handlers still running" % len(contexts))
        super().stop_accepting()   # on_worker_stop
        links = list(self.links.values())
        for link in links:
            link.cancel_reconnect()
            link.close()
        self.links.clear()
        # close() sends what is queued first (the last handlers' replies), and the
        # process ends as soon as this returns: wait for that, within the stop time.
        flushed = max(time.monotonic() + 0.1, started + Worker.stop_timeout * 0.95)
        while (any(link.state is CLOSING for link in links)
               and time.monotonic() < flushed):
            gevent.sleep(0.01)

    def _give_back(self):
        """Events still queued when the time to leave is up go back to their gateway,
        which hands them to the next worker before the ones it held."""
        for (link, _), queue in list(self._queues.items()):
            if link.state is ESTABLISHED:
                for event in queue:
                    link.send(pack(Cmd.RETURNED, event.connection_id, b"", pack(
                        event.cmd, event.connection_id, event.ext, event.body, event.flags,
                        0, event.client_port, event.client_ip)), True)
            self._queued -= len(queue)
            queue.clear()

    # -- links -----------------------------------------------------------------------

    def _watch_store(self):
        failing = False
        while True:
            try:
                listed = set(self._store.addresses(self.app_name))
                failing = False
            except StoreError as error:
                if not failing:
                    log("business worker: cannot read the store (%s): %s" % (
                        Store.describe(), error))
                failing = True
                listed = set(self.links)  # keep what we have until the store answers
            self._follow(listed)
            gevent.sleep(min(1.0, Store.refresh))

    def _follow(self, listed):
        """Link to the gateways the store lists now; let go of those it no longer does."""
        self._listed = listed
        for address in listed - set(self.links):
            self._connect(address)
        for address in set(self.links) - listed:
            link = self.links[address]
            if link.state is ESTABLISHED:
                continue  # alive, though it missed a refresh: it ends with its link
            del self.links[address]
            link.cancel_reconnect()
            link.destroy()  # a gateway that is gone

    def _connect(self, address):
        link = GatewayLink("tcp://" + address)
        link.setup(self, address)
        link.on_connect = self._link_connected
        link.on_message = self._link_message
        link.on_close = self._link_closed
        link.on_error = lambda link, code, message: None  # on_close logs and retries
        self.links[address] = link
        link.connect()

    def _link_connected(self, link):
        link.retries = 0
        link.left.clear()  # a reconnected link leaves again with its own handshake
        worker_key = "%s:%d:%d" % (self.name, self.id, os.getpid())
        link.send(pack(Cmd.WORKER_CONNECT, 0, wire.dumps(
            {"secret_key": self.secret_key, "worker_key": worker_key})), True)

    def _link_closed(self, link):
        link.ready = False
        link.left.set()
        self._forget_link(link)
        if self._stopping or self.links.get(link.address) is not link:
            return
        if link.address not in self._listed:
            del self.links[link.address]  # gone from the store too: not tried again
            return
        delay = RECONNECT_DELAYS[min(link.retries, len(RECONNECT_DELAYS) - 1)]
        if link.refused:
            delay = REFUSED_DELAY  # a wrong key stays wrong until someone mends it
        link.retries += 1
        if link.retries == 3:
            log("business worker: cannot link to gateway %s; trying again" % link.address)
        link.reconnect(delay)

    def _forget_link(self, link):
        """Events of a lost link that were not handled yet are dropped: the gateway
        moves those clients to another worker."""
        for key in [key for key in self._queues if key[0] is link]:
            queue = self._queues.pop(key)
            self._queued -= len(queue)
            queue.clear()  # its runner, if one is serving it, finds nothing more
        for key in [key for key in self._stale if key[0] is link]:
            del self._stale[key]
        link.ids.clear()

    def _link_message(self, link, packet):
        cmd = packet.cmd
        if cmd in wire.EVENTS:
            return self._queue(link, packet)
        if cmd == Cmd.REPLY:
            waiter = self._requests.pop(packet.request_id, None)
            if waiter is not None:
                waiter.set(packet.body)
        elif cmd == Cmd.WELCOME:
            link.gateway_port = (packet.argument or {}).get("gateway_port", 0)
            link.ready, link.refused = True, False
        elif cmd == Cmd.LEAVE_ACK:
            link.left.set()
        elif cmd == Cmd.REFUSED:
            log("business worker: gateway %s refused this worker: wrong secret_key"
                % link.address)
            link.refused = True
        return None

    # -- events ----------------------------------------------------------------------

    def _queue(self, link, packet):
        key = (link, packet.connection_id)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            run_soon(lambda: self._serve(key, queue))
        queue.append(packet)
        self._queued += 1
        if self._queued >= HIGH_WATER and not self._paused:
            self._paused = True
            for each in self.links.values():
                each.pause_recv()

    def _serve(self, key, queue):
        """In a runner: handle the client's events in order, until none is left."""
        link = key[0]
        while queue:
            packet = queue.popleft()
            self._queued -= 1
            self._handle(link, packet)
        if self._queues.get(key) is queue:
            del self._queues[key]
        if self._paused and self._queued <= LOW_WATER:
            self._paused = False
            for each in self.links.values():
                each.resume_recv()

    def _handle(self, link, packet):
        cmd = packet.cmd
        client_id = link.client_id(packet.connection_id)
        if cmd == Cmd.MESSAGE:
            handler, args = self._on_message, (client_id, packet.data)
        elif cmd == Cmd.CONNECT:
            handler, args = self._on_connect, (client_id,)
        elif cmd == Cmd.CLOSE:
            handler, args = self._on_close, (client_id,)
        else:
            handler, args = self._on_websocket_connect, (client_id, wire.loads(packet.body))
        self.handled += 1
        if handler is not None:
            self._run(link, packet, client_id, handler, args)
        if cmd == Cmd.CLOSE:
            link.ids.pop(packet.connection_id, None)
            if self._stale:
                self._stale.pop((link, packet.connection_id), None)

    def _run(self, link, packet, client_id, handler, args):
        raw = packet.ext
        key = (link, packet.connection_id)
        written = self._stale.get(key) if self._stale else None
        if written is not None:
            # An event that left the gateway before our last change of the session got
            # there carries an older session than the one we wrote.
            latest = written.current(raw)
            if latest is None:
                del self._stale[key]  # the gateway has caught up: its session is the truth
            else:
                raw = latest
        if raw:
            session, before = wire.loads(raw), wire.loads(raw)
        else:
            session, before = {}, {}
        context = EventContext(link, packet, client_id, session, before, handler)
        current = getcurrent()
        contexts[current] = context
        try:
            call(handler, *args)
        finally:
            del contexts[current]
        if packet.cmd != Cmd.CLOSE:
            self._write_back(link, packet, context, raw)

    def _write_back(self, link, packet, context, raw, final=True):
        """Send the session keys the handler changed (only those: an update another
        process made meanwhile to other keys survives). A session that cannot be saved
        is logged once, after the handler (``final``)."""
        session = context.session
        if not isinstance(session, dict):
            if final:
                log("Context.session of %s must be a dict, not %s: not saved" % (
                    context.client_id, type(session).__name__))
            return
        if session == context.before:
            return
        changes = sessions.diff(context.before, session)
        try:
            ext = wire.dumps(changes)
        except (TypeError, ValueError) as error:
            if final:
                log("Context.session of %s is not JSON: %s; not saved" % (
                    context.client_id, error))
            return
        link.send_soon(pack(Cmd.PATCH_SESSION, packet.connection_id, ext))
        # The session the gateway will have once it applies the patch (the same bytes
        # it will send with the next events), and those it may still send until then.
        fresh = _session_after(context.before, changes)
        self.session_written(context, fresh, *(() if raw is None else (raw,)))
        context.before = wire.loads(fresh) if fresh else {}  # written: a later call of
        # the handler sends only what changes after this

    def session_written(self, context, fresh, *superseded):
        """We sent the gateway a change of the client's session, after which it holds
        ``fresh`` (its JSON). Events that left the gateway before the change got there
        carry an older session (the event's own, or one of our earlier writes): those
        get ``fresh`` instead (see _run and Written)."""
        key = (context.link, context.connection_id)
        written = self._stale.get(key)
        if written is None:
            written = self._stale[key] = Written()
        written.wrote(fresh, context.packet.ext, *superseded)

    def flush_session(self):
        """Write the current client's session changes back now, before a message leaves
        this handler: a client that answers it then finds them in the gateway, whichever
        business worker gets the answer (the gateway applies a link's packets in order)."""
        context = contexts.get(getcurrent())
        if (context is not None and context.packet.cmd != Cmd.CLOSE
                and context.session != context.before):
            self._write_back(context.link, context.packet, context, None, final=False)

    def _watchdog(self):
        """Log, with its stack, a handler still running after process_timeout."""
        while True:
            gevent.sleep(1)
            now = time.monotonic()
            for greenlet, context in list(contexts.items()):
                if not context.logged and now - context.started > self.process_timeout:
                    context.logged = True
                    stack = "".join(traceback.format_stack(greenlet.gr_frame)).rstrip()
                    log("business worker: %s still running after %ss\n%s" % (
                        getattr(context.handler, "__qualname__", context.handler),
                        self.process_timeout, stack))

    # -- what the API sends through --------------------------------------------------

    def ready_links(self):
        return {address: link for address, link in self.links.items() if link.ready}

    def ask(self, questions, timeout=QUERY_TIMEOUT):
        """{address: ext} -> {address: answer}; every gateway asked at once, one bound."""
        waiting = {}
        for address, ext in questions.items():
            link = self.links.get(address)
            if link is None or not link.ready:
                continue
            number = next(self._request_ids)
            waiter = self._requests[number] = gevent.event.AsyncResult()
            link.send(pack(Cmd.QUERY, 0, ext, b"", 0, number), True)
            waiting[address] = (number, waiter)
        deadline = time.monotonic() + timeout
        answers = {}
        for address, (number, waiter) in waiting.items():
            body = waiter.wait(max(0, deadline - time.monotonic()))  # None: too late
            self._requests.pop(number, None)
            if body is not None:
                answers[address] = wire.loads(body)
        return answers

    # -- status ----------------------------------------------------------------------

    def status_fields(self):
        return {"gateways": sum(1 for link in self.links.values() if link.ready),
                "handled": self.handled}


def load_events(handler, app_dir, app):
    """The events module: ``<app_dir>/<handler>.py``, else an importable module name;
    an object with on_* attributes is used as it is."""
    if not isinstance(handler, str):
        return handler
    path = os.path.join(app_dir, *handler.split(".")) + ".py"
    if os.path.isfile(path):
        name = "geventman_app.%s.%s" % (app, handler)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(handler)
    except ModuleNotFoundError as error:
        if error.name != handler:
            raise  # the module exists; something it imports does not
        raise ModuleNotFoundError("BusinessWorker.event_handler %r: no %s and no module %r" % (
            handler, path, handler), name=handler) from None
