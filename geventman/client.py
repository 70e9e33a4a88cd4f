"""GatewayClient: the Gateway API from any Python program, with plain blocking sockets.

A Flask or Django view, a cron job or a Celery task pushes to the clients of a running
geventman application::

    from geventman.client import GatewayClient

    client = GatewayClient()                 # the Store defaults: one machine, file store
    client.send_to_uid("42", "your order shipped")
    print(client.get_all_client_count())

Every call of ``geventman.lib.Gateway`` but the current-client ones. No gevent is needed
or imported and nothing is patched. Connections to the gateways are kept per thread,
so one client object is safe under a threaded WSGI server. A call that asks every
gateway asks them at once and waits ``timeout`` seconds at most for all of them.
``GatewayNotFound`` says that no gateway is listed in the store.
"""
import errno
import selectors
import socket
import threading
import time

from geventman.gateway import wire
from geventman.gateway.calls import Calls
from geventman.gateway.store import Store, StoreError
from geventman.gateway.wire import Cmd, pack


class GatewayError(RuntimeError):
    """A gateway refused us (wrong secret_key) or the store cannot be read."""


class GatewayNotFound(GatewayError):
    """No live gateway is listed in the store for the application."""


class GatewayClient(Calls):
    """``GatewayClient(app=None, secret_key="", driver=None, path=None, servers=None,
    timeout=3.0)``. ``app``: the application folder name (needed only when the store
    lists gateways of several applications); the store settings default to
    ``geventman.gateway.Store``'s."""

    def __init__(self, app=None, secret_key="", driver=None, path=None, servers=None,
                 timeout=3.0, connect_timeout=2.0):
        self.secret_key = secret_key
        super().__init__(_SocketTransport(app, secret_key, (driver, path, servers), timeout,
                                          connect_timeout))


class _SocketTransport:
    ADDRESS_CACHE = 1.0  # seconds the list of gateways is reused

    def __init__(self, app, secret_key, store, timeout, connect_timeout):
        self.app, self.secret_key = app, secret_key
        self.store_options = store
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._store = None
        self._addresses, self._addresses_at = [], 0.0
        self._local = threading.local()
        self._request_ids = iter(range(1, 1 << 31))
        self._lock = threading.Lock()

    # -- gateways --------------------------------------------------------------------

    def addresses(self):
        now = time.monotonic()
        if now - self._addresses_at < self.ADDRESS_CACHE and self._addresses:
            return self._addresses
        try:
            if self._store is None:
                self._store = Store.open(*self.store_options)
            app = self.app or self._only_app()
            found = self._store.addresses(app)
        except StoreError as error:
            raise GatewayError("cannot read the store: %s" % error) from error
        if not found:
            raise GatewayNotFound("no gateway of application %r is listed in the store (%s)"
                                  % (app, self._describe()))
        self._addresses, self._addresses_at = found, now
        return found

    def _only_app(self):
        apps = self._store.apps()
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise GatewayNotFound("no gateway is listed in the store (%s): is the "
                                  "application running?" % self._describe())
        raise GatewayError("the store lists gateways of several applications (%s): "
                           "say which with GatewayClient(app=...)" % ", ".join(apps))

    def _describe(self):
        driver, path, servers = self.store_options
        if driver is None and path is None and servers is None:
            return Store.describe()
        return "%s %s" % (driver or Store.driver, path or servers or "")

    # -- sockets ---------------------------------------------------------------------

    def _sockets(self):
        sockets = getattr(self._local, "sockets", None)
        if sockets is None:
            sockets = self._local.sockets = {}
        return sockets

    def _socket(self, address):
        """This thread's connection to ``address``: kept, checked, made when needed."""
        sock = self._connected([address]).get(address)
        if sock is None:
            raise OSError("cannot connect to gateway %s" % address)
        return sock

    def _connected(self, addresses):
        """This thread's connections to ``addresses``: the kept ones that are still
        open, and the missing ones opened side by side, so that hosts that do not
        answer cost one ``connect_timeout`` together, not one each."""
        sockets = self._sockets()
        found, opening = {}, {}
        for address in addresses:
            sock = sockets.get(address)
            try:
                if sock is not None and _peer_closed(sock):
                    self._drop(address)
                    sock = None
            except GatewayError:
                self._drop(address)  # refused: the next call tries a new connection
                raise
            if sock is not None:
                found[address] = sock
                continue
            host, _, port = address.rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # lan_ip is IPv4
            sock.setblocking(False)
            if sock.connect_ex((host, int(port))) in (0, errno.EINPROGRESS):
                opening[sock] = address
            else:
                sock.close()
        deadline = time.monotonic() + self.connect_timeout
        with selectors.DefaultSelector() as selector:
            for sock in opening:
                selector.register(sock, selectors.EVENT_WRITE)
            while opening and time.monotonic() < deadline:
                for key, _ in selector.select(max(0, deadline - time.monotonic())):
                    sock = key.fileobj
                    selector.unregister(sock)
                    address = opening.pop(sock)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        found[address] = sockets[address] = self._introduce(sock)
                    else:
                        sock.close()
        for sock in opening:
            sock.close()  # no answer within connect_timeout
        return found

    def _introduce(self, sock):
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)
        sock.sendall(pack(Cmd.CLIENT_CONNECT, 0, wire.dumps({"secret_key": self.secret_key})))
        return sock

    def _drop(self, address):
        sock = self._sockets().pop(address, None)
        if sock is not None:
            sock.close()

    def send(self, address, packet):
        for attempt in (1, 2):
            try:
                self._socket(address).sendall(packet)
                return True
            except OSError:
                self._drop(address)
        return False

    def ask(self, questions):
        """Ask every gateway at once; {address: answer} of those that answered in time."""
        waiting = {}
        connected = self._connected(list(questions))  # the missing ones all at once
        for address, ext in questions.items():
            sock = connected.get(address)
            if sock is None:
                continue  # did not answer the connect in time: left out
            with self._lock:
                number = next(self._request_ids)
            packet = pack(Cmd.QUERY, 0, ext, b"", 0, number)
            try:
                sock.sendall(packet)
            except OSError:  # a kept connection the gateway closed meanwhile: once more
                self._drop(address)
                sock = self._connected([address]).get(address)
                try:
                    if sock is None:
                        continue
                    sock.sendall(packet)
                except OSError:
                    self._drop(address)
                    continue
            waiting[sock] = (address, number, bytearray())
        answers = {}
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as selector:
            for sock in waiting:
                selector.register(sock, selectors.EVENT_READ)
            while waiting and time.monotonic() < deadline:
                for key, _ in selector.select(max(0, deadline - time.monotonic())):
                    sock = key.fileobj
                    address, number, buffer = waiting[sock]
                    answer = self._read(sock, buffer, number)
                    if answer is _MORE:
                        continue
                    selector.unregister(sock)
                    del waiting[sock]
                    if answer is _FAILED:
                        self._drop(address)
                    else:
                        answers[address] = answer
        for address, _, _ in waiting.values():
            self._drop(address)  # too late: its answer must not be read as the next one
        return answers

    def _read(self, sock, buffer, number):
        try:
            chunk = sock.recv(65536)
        except OSError:
            return _FAILED
        if not chunk:
            return _FAILED
        buffer += chunk
        while True:
            length = wire.packet_length(buffer)
            if length < 0:
                return _FAILED
            if not length or len(buffer) < length:
                return _MORE
            packet = wire.unpack(bytes(buffer[:length]))
            del buffer[:length]
            if packet.cmd == Cmd.REFUSED:
                raise GatewayError("gateway refused this client: wrong secret_key")
            if packet.cmd == Cmd.REPLY and packet.request_id == number:
                return wire.loads(packet.body)


_MORE, _FAILED = object(), object()


def _peer_closed(sock):
    """True if a kept connection cannot serve: the gateway closed it meanwhile (a
    restart), or said something unasked. A REFUSED waiting there is a GatewayError."""
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        try:
            waiting = sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True
    finally:
        sock.settimeout(timeout)
    if len(waiting) >= wire.HEADER_SIZE and waiting[4] == Cmd.REFUSED:
        raise GatewayError("gateway refused this client: wrong secret_key")
    return True
