"""TcpConnection: one accepted TCP connection.

This module owns the socket. A libev io watcher wakes the connection when it is
readable; a greenlet then reads once (one ``recv`` into the protocol, no second recv
that would only raise EAGAIN), cuts packages with the protocol and calls
``on_message`` for each, in that greenlet, so handlers may block. Writes go straight to the
non-blocking socket; what the kernel does not take is queued and flushed from the
hub by a write watcher, so ``send`` never blocks its caller on a slow peer.
"""
import _socket
import itertools
import time

from gevent import get_hub, getcurrent, spawn_raw

from geventman import speedups
from geventman.log import log
from geventman.connection.tls import TlsError
from geventman.runtime import call, statistics
from geventman.states import (  # noqa: F401  (State: also imported from here)
    CLOSED, CLOSING, CONNECTING, ESTABLISHED, INITIAL, State)

_core = speedups.load("geventman.connection._core")
ConnectionCore = _core.ConnectionCore
run_soon = _core.run_soon
run_in_runner = _core.run_in_runner
CONNECT_FAIL = 1
SEND_FAIL = 2


class ConnectionClosed(Exception):
    """Thrown into a greenlet that waits on a connection that was destroyed."""


CALLBACKS = ("on_connect", "on_message", "on_close", "on_error",
             "on_buffer_full", "on_buffer_drain",
             "on_websocket_connect", "on_websocket_ping", "on_websocket_pong")


class ConnectionMap(dict):
    """Connection id -> connection. Looping over it walks a copy, as a PHP foreach does:
    a handler that broadcasts may close connections, or have one closed under it by a
    send to a peer that reset, without "dictionary changed size during iteration"."""

    __slots__ = ()

    def __iter__(self):
        return iter(list(dict.keys(self)))

    def keys(self):
        return list(dict.keys(self))

    def values(self):
        return list(dict.values(self))

    def items(self):
        return list(dict.items(self))


class TcpConnection(ConnectionCore):
    """A client connection accepted by a worker. Any attribute may be set on it.

    What every message reads and runs is in ``ConnectionCore`` (_core.py)."""

    default_max_send_buffer_size = 1 << 20
    default_max_package_size = 10 << 20
    connections = ConnectionMap()
    _ids = itertools.count(1)

    on_connect = on_close = on_error = None   # on_message: a field of ConnectionCore
    on_buffer_full = on_buffer_drain = None
    on_websocket_connect = on_websocket_ping = on_websocket_pong = None

    # Defaults shared by every connection until one assigns its own: an idle
    # connection's __dict__ holds only what differs (measured: memory per connection).
    # The fields of ConnectionCore are no class defaults: a class value would hide
    # the compiled core's member. _busy: a greenlet serves this connection right now;
    # _link: +1 per destroy() (a reconnect() starts a new link on this object);
    # _batch: what send_soon() collected this turn of the loop.
    worker = None
    transport = "tcp"
    _registered = False

    def __init__(self, sock, remote_address, worker=None, protocol=None):
        self._setup(protocol)
        self.worker = worker
        self._sock = sock
        self._remote_address = remote_address
        self.state = ESTABLISHED
        self.created = time.monotonic()
        if worker is not None:
            for name in worker.connection_callbacks:
                callback = getattr(worker, name)
                if callback is not None:
                    setattr(self, name, callback)
        self._register()

    def _setup(self, protocol):
        self._init_core(protocol)
        self.id = next(TcpConnection._ids)
        self.max_send_buffer_size = self.default_max_send_buffer_size
        self.max_package_size = self.default_max_package_size

    def _reset_buffers(self):
        self._recv_buffer = b""
        self._pending = None
        self._package_length = 0
        self._send_buffer = bytearray()
        self._batch = None

    def _register(self):
        if not self._registered:
            self._registered = True
            TcpConnection.connections[self.id] = self
            statistics["connections"] += 1

    def _unregister(self):
        if self._registered:
            self._registered = False
            TcpConnection.connections.pop(self.id, None)
            statistics["connections"] -= 1

    # -- reading ---------------------------------------------------------------

    def begin(self):
        """In a greenlet: run on_connect, then start reading."""
        if self.state is not ESTABLISHED:
            return  # an outgoing link's first write (TLS hello, handshake) failed
        fd = self._sock.fileno()
        self._read_watcher = get_hub().loop.io(fd, 1)
        self._fd = fd
        link = self._link
        self._busy = True
        call(self.on_connect, self)
        if self._link != link:
            return  # on_connect destroyed it, perhaps reconnected: the new link reads
        self._busy = False
        self._arm()

    def _decrypt(self, data):
        full = self._tls.early_size >= self.max_send_buffer_size  # see _queue_early
        try:
            plain, reply = self._tls.receive(data)
        except TlsError as error:
            log("TLS error from %s:%s: %s, closing" % (
                self.get_remote_ip(), self.get_remote_port(), error))
            self.destroy()
            return b""
        if reply:
            self._write(reply)
            if full and not self._tls.early_size and not self._send_buffer \
                    and self.state is ESTABLISHED:
                # The handshake is done and what waited for it is written (if not,
                # the write watcher calls on_buffer_drain once it is).
                call(self.on_buffer_drain, self)
        return plain

    def _resume(self):
        """In a runner, after resume_recv: input that arrived before the pause first."""
        if self.state is not ESTABLISHED or self._paused or self._busy:
            return
        if self._recv_buffer:  # only if there is some: tcp:// would get an empty message
            link = self._link
            self._busy = True
            self._feed(b"")
            if self._link != link:
                return  # destroyed meanwhile, perhaps reconnected
            self._busy = False
        if self.state is ESTABLISHED:
            self._arm()

    def _bad_package(self, length):
        log("bad package from %s:%s (package length %r), closing" % (
            self.get_remote_ip(), self.get_remote_port(), length))
        self.destroy()

    def pause_recv(self):
        """Stop reading; the kernel buffer fills and the peer is slowed down by TCP."""
        self._paused = True
        if self._read_watcher is not None:
            self._read_watcher.stop()

    def resume_recv(self):
        if not self._paused:
            return
        self._paused = False
        if self.state is ESTABLISHED and self._read_watcher is not None and not self._busy:
            if not self._recv_buffer:
                return self._arm()  # nothing read is waiting: only the watcher to restart
            get_hub().loop.run_callback(run_in_runner, self._resume)
        return None

    # -- writing ---------------------------------------------------------------

    def _queue(self, data):
        buffer = self._send_buffer
        if len(buffer) >= self.max_send_buffer_size:
            statistics["send_fail"] += 1
            call(self.on_error, self, SEND_FAIL, "send buffer full and drop package")
            return False
        buffer += data
        if self.state is ESTABLISHED:
            self._start_writer()
        if len(buffer) >= self.max_send_buffer_size:
            call(self.on_buffer_full, self)
        return None

    def _queue_early(self, data):
        """TLS before its handshake is done: the plaintext waits in the Tls object,
        bounded by max_send_buffer_size like the send buffer."""
        tls = self._tls
        if tls.early_size >= self.max_send_buffer_size:
            statistics["send_fail"] += 1
            call(self.on_error, self, SEND_FAIL, "send buffer full and drop package")
            return False
        tls.send(data)
        if tls.early_size >= self.max_send_buffer_size:
            call(self.on_buffer_full, self)
        return None

    def _start_writer(self):
        if self._write_watcher is None:
            self._write_watcher = get_hub().loop.io(self._sock.fileno(), 2)
        if not self._write_watcher.active:
            self._write_watcher.start(self._on_writable)

    def _on_writable(self):
        """Runs in the hub: flush what the socket takes, never block, never call user code."""
        try:
            sent = self._sock.send(self._send_buffer)
        except BlockingIOError:
            return
        except OSError as error:
            self._write_watcher.stop()
            spawn_raw(self._send_failed, error)
            return
        self.bytes_written += sent
        del self._send_buffer[:sent]
        if self._send_buffer:
            return
        self._write_watcher.stop()
        if self.on_buffer_drain is not None:
            spawn_raw(call, self.on_buffer_drain, self)
        if self.state is CLOSING:
            spawn_raw(self.destroy)

    def _send_failed(self, error):
        if self.state is CLOSED:
            return
        statistics["send_fail"] += 1
        call(self.on_error, self, SEND_FAIL, "client closed: %s" % error)
        self.destroy()

    # -- closing ---------------------------------------------------------------

    def close(self, data=None, raw=False):
        """Send ``data`` if given, flush what is queued, then close."""
        if self.state is INITIAL or self.state is CONNECTING:
            return self.destroy()
        if self.state is not ESTABLISHED:
            return None
        if data is not None:
            self.send(data, raw)
            if self.state is not ESTABLISHED:
                return None  # the send failed (destroyed) or closed it already
        before_close = getattr(self.protocol, "before_close", None)
        if before_close is not None:
            before_close(self)  # the protocol's last words, e.g. a WebSocket close frame
            if self.state is not ESTABLISHED:
                return None  # their send failed (destroyed): CLOSING would undo that
        if self._batch:
            self._send_batch()  # what send_soon() collected goes before the close
            if self.state is not ESTABLISHED:
                return None
        self.state = CLOSING
        if not self._send_buffer:
            self.destroy()
        return None

    def destroy(self):
        """Close now, dropping what is queued. on_close runs exactly once."""
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self._link += 1   # a greenlet still serving the old link leaves the object alone
        self._busy = False
        for watcher in (self._read_watcher, self._write_watcher):
            if watcher is not None:  # callbacks of ours, no greenlet waits on them
                watcher.stop()
                watcher.close()
        self._read_watcher = self._write_watcher = None
        self._fd = -1  # before the close: the number may soon name another socket
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._send_buffer = bytearray()
        self._batch = None
        self._unregister()
        if getcurrent() is get_hub():
            spawn_raw(self._closed)
        else:
            self._closed()

    def _closed(self):
        call(self.on_close, self)
        call(getattr(self.protocol, "on_close", None), self)
        if self.worker is not None:
            self.worker.connection_closed(self)

    def is_idle(self):
        """Between requests: nothing half-read, no handler running, nothing queued,
        not paused (a paused connection is in the middle of something, e.g. an HTTP
        file response streaming between two chunks)."""
        return not (self._busy or self._recv_buffer or self._pending or self._send_buffer
                    or self._paused)

    # -- addresses and plumbing ------------------------------------------------

    def get_remote_ip(self):
        return self._remote_address[0]

    def get_remote_port(self):
        return self._remote_address[1]

    def get_remote_address(self):
        return "%s:%s" % self._remote_address[:2]

    def _local(self):
        if self._local_address is None and self._sock is not None:
            self._local_address = self._sock.getsockname()
        return self._local_address or ("", 0)

    _local_address = None

    def get_local_ip(self):
        return self._local()[0]

    def get_local_port(self):
        return self._local()[1]

    def get_send_buffer_size(self):
        return len(self._send_buffer)

    def pipe(self, dest):
        """Forward everything read here to ``dest``, with back-pressure both ways."""
        self.on_message = lambda connection, data: dest.send(data)
        self.on_close = lambda connection: dest.close()
        dest.on_buffer_full = lambda connection: self.pause_recv()
        dest.on_buffer_drain = lambda connection: self.resume_recv()

    def __repr__(self):
        return "<%s #%d %s %s>" % (type(self).__name__, self.id, self.state.name,
                                   getattr(self, "_remote_address", None))


def accepted_socket(fd):
    """Wrap an accepted fd as the raw non-blocking socket connections use."""
    sock = _socket.socket(fileno=fd)
    sock.setblocking(False)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return sock
