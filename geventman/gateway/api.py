"""The Gateway API and Context, as event handlers use them (``from geventman.lib import
Gateway, Context``).

In a BusinessWorker process the calls go over its links to the gateways; anywhere
else (a plain Worker, a Timer in another process) they go through a GatewayClient,
whose blocking sockets are cooperative once gevent has patched the process.

``Context`` belongs to the greenlet that handles an event: two handlers blocked at
the same time in one process each see their own client. In a greenlet the handler
spawns, or in a timer, there is no current client (``Context.client_id`` is None).
"""
from geventman.gateway import business, sessions, wire
from geventman.gateway.calls import Calls, _message
from geventman.gateway.wire import Cmd, pack
from gevent import getcurrent


class NoCurrentClient(RuntimeError):
    """A current-client call (send_to_current_client...) outside an event handler."""


class _LinkTransport:
    def __init__(self, worker):
        self.worker = worker

    def addresses(self):
        return list(self.worker.ready_links())

    def send(self, address, packet):
        link = self.worker.links.get(address)
        if link is None or not link.ready:
            return False
        self.worker.flush_session()
        return link.send_soon(packet)

    def ask(self, questions):
        return self.worker.ask(questions)


class GatewayApi(Calls):
    """``Gateway``: every call of GatewayWorker's Lib\\Gateway, in PEP 8 names."""

    _client = None
    #: The key of the GatewayClient used outside business processes (GatewayWorker's
    #: static Gateway::$secretKey); business processes use their worker's.
    secret_key = ""

    def __init__(self):
        pass  # the transport is chosen per call

    @property
    def transport(self):
        worker = business.BusinessWorker.current
        if worker is not None:
            transport = worker.__dict__.get("_api_transport")
            if transport is None:
                transport = worker._api_transport = _LinkTransport(worker)
            return transport
        client = GatewayApi._client
        if client is None or client.secret_key != self.secret_key:
            from geventman.client import GatewayClient
            client = GatewayApi._client = GatewayClient(secret_key=self.secret_key)
        return client.transport

    # -- the current client ------------------------------------------------------------

    def send_to_current_client(self, data, raw=False):
        context = _current()
        body, flags = _message(data, raw)
        if context.session != context.before:
            business.BusinessWorker.current.flush_session()
        return context.link.send_soon(pack(Cmd.SEND_TO_ONE, context.connection_id, b"", body,
                                           flags)) is not False

    def close_current_client(self, data=None):
        return self.close_client(_current().client_id, data)

    def destroy_current_client(self):
        return self.destroy_client(_current().client_id)

    # GatewayWorker's spelling, for code ported as it is.
    destory_client = Calls.destroy_client
    destory_current_client = destroy_current_client

    # -- sessions also change Context.session when they are about the current client ---

    def set_session(self, client_id, session):
        result = super().set_session(client_id, session)
        context = business.contexts.get(getcurrent())
        if context is not None and context.client_id == client_id:
            context.session, context.before = dict(session or {}), _copy(session or {})
            _written(context)
        return result

    def update_session(self, client_id, changes):
        result = super().update_session(client_id, changes)
        context = business.contexts.get(getcurrent())
        if context is not None and context.client_id == client_id:
            context.session = sessions.merge(context.session, changes)
            context.before = sessions.merge(context.before, _copy(changes))
            _written(context)
        return result


def _written(context):
    """The gateway will hold ``context.before``: the client's next events, if they left
    before, see it too (business.BusinessWorker.session_written)."""
    fresh = wire.dumps(context.before) if context.before else b""
    business.BusinessWorker.current.session_written(context, fresh)


def _copy(value):
    return wire.loads(wire.dumps(value))


def _current():
    context = business.contexts.get(getcurrent())
    if context is None:
        raise NoCurrentClient("no current client: this call works in an events.py handler")
    return context


class _Context:
    """``Context.client_id``, ``Context.session`` (a dict), ``Context.server``."""

    @property
    def client_id(self):
        context = business.contexts.get(getcurrent())
        return context.client_id if context is not None else None

    @property
    def session(self):
        context = business.contexts.get(getcurrent())
        return context.session if context is not None else None

    @session.setter
    def session(self, value):
        _current().session = {} if value is None else value

    @property
    def server(self):
        context = business.contexts.get(getcurrent())
        return context.server if context is not None else {}

    def __repr__(self):
        return "<Context client_id=%r>" % self.client_id


Gateway = GatewayApi()
Context = _Context()
