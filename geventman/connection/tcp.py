"""TcpConnection: one accepted TCP connection.

This module owns the socket. A libev io watcher wakes the connection when it is
readable; a greenlet then reads once (one ``recv`` into the protocol, no second recv
that would only raise EAGAIN), cuts packages with the protocol and calls
``on_message`` for each, in that greenlet, so handlers may block. Writes go straight to the
non-blocking socket; what the kernel does not take is queued and flushed from the
hub by a write watcher, so ``send`` never blocks its caller on a slow peer.
"""
import _socket
import collections
import itertools
import time

from gevent import get_hub, getcurrent, spawn_raw
from greenlet import greenlet

from geventman.log import log, log_exception
from geventman.protocols import NOTHING
from geventman.connection.tls import TlsError
from geventman.protocols.text import Text
from geventman.runtime import CALLBACK_ERRORS, call, callback_failed, statistics
from geventman.states import (  # noqa: F401  (State: also imported from here)
    CLOSED, CLOSING, CONNECTING, ESTABLISHED, INITIAL, State)

READ_SIZE = 65536
#: Input left after a package is kept as bytes up to this size (the common pipelined
#: case, cut by slicing); a bigger rest becomes a bytearray that packages leave in place.
CUT_IN_PLACE = 4096
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


class TcpConnection:
    """A client connection accepted by a worker. Any attribute may be set on it."""

    default_max_send_buffer_size = 1 << 20
    default_max_package_size = 10 << 20
    connections = ConnectionMap()
    _ids = itertools.count(1)

    on_connect = on_message = on_close = on_error = None
    on_buffer_full = on_buffer_drain = None
    on_websocket_connect = on_websocket_ping = on_websocket_pong = None

    # Defaults shared by every connection until one assigns its own: an idle
    # connection's __dict__ holds only what differs (measured: memory per connection).
    worker = None
    transport = "tcp"
    bytes_written = 0
    _sock = None
    _registered = False
    _read_watcher = _write_watcher = None
    _paused = False
    _busy = False      # a greenlet is serving this connection right now
    _link = 0          # +1 per destroy(): a reconnect() starts a new link on this object
    _tls = None
    _recv_buffer = b""
    _pending = None
    _package_length = 0
    _batch = None      # what send_soon() collected this turn of the loop

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
        self.id = next(TcpConnection._ids)
        self.protocol = protocol
        self.max_send_buffer_size = self.default_max_send_buffer_size
        self.max_package_size = self.default_max_package_size
        self.bytes_read = 0
        self._send_buffer = bytearray()
        # What every message reads, as values of the instance rather than defaults of
        # the class: an instance value is found in half the time (8 bytes each).
        self._link = 0
        self._busy = self._paused = False
        self._tls = self._batch = self._pending = None
        self._recv_buffer = b""
        self._package_length = self.bytes_written = 0

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
        self._read_watcher = get_hub().loop.io(self._sock.fileno(), 1)
        link = self._link
        self._busy = True
        call(self.on_connect, self)
        if self._link != link:
            return  # on_connect destroyed it, perhaps reconnected: the new link reads
        self._busy = False
        self._arm()

    def _arm(self):
        watcher = self._read_watcher
        if self.state is ESTABLISHED and not self._paused and not watcher.active:
            watcher.start(self._on_readable)

    def _on_readable(self):
        """Hub side: the socket is readable; serve it in a runner greenlet.

        The watcher stays armed while the runner serves the connection (measured:
        a stop and a start per message were a tenth of the worker's CPU); only if it
        fires again before the wake-up is done (a handler that blocks) is it stopped,
        and the wake-up starts it again when it ends."""
        if self._busy:
            self._read_watcher.stop()
            return
        self._busy = True
        _ready.append(self._wakeup)   # run_soon(), without the call
        if not _drain_pending:
            _schedule_drain()

    def _wakeup(self):
        """In a runner: one recv, the messages it completes, then wait again."""
        if self.state is not ESTABLISHED or self._paused:
            self._busy = False
            return  # paused after this wake-up was queued: resume_recv re-arms
        link = self._link
        try:
            data = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if data is not None:
            if not data:
                self._busy = False
                return self.destroy()
            self.bytes_read += len(data)
            if self._tls is not None:
                data = self._decrypt(data)
            if data:
                protocol = self.protocol
                if protocol is Text:
                    self._feed_lines(data)
                elif protocol is not None:
                    self._feed_packages(data)
                else:
                    self._feed(data)
                if self._link != link:
                    return None  # destroyed meanwhile, perhaps reconnected: not ours now
        self._busy = False
        if self.state is ESTABLISHED and not self._paused and \
                not self._read_watcher.active:
            self._arm()
        return None

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

    def _feed(self, data):
        protocol = self.protocol
        if protocol is None:
            statistics["total_request"] += 1
            self._deliver(data)
        elif protocol is Text:
            self._feed_lines(data)
        else:
            self._feed_packages(data)

    def _deliver(self, message):
        try:
            self.on_message(self, message)
        except CALLBACK_ERRORS:
            self._handler_failed()

    def _handler_failed(self):
        """In the except clause of an on_message call."""
        if self.on_message is not None:
            callback_failed(self.on_message)
            hook = getattr(self.protocol, "handler_failed", None)
            if hook is not None:
                hook(self)  # the protocol's answer to a failed handler (HTTP 500)

    def _feed_lines(self, data):
        """text:// fast path: the same rules as Text.input/decode, without the calls.

        An unfinished line is kept in a bytearray that grows in place and only the new
        bytes are searched for its end: a line dribbled in a byte per read costs work
        proportional to its length, not to its length squared."""
        kept = self._recv_buffer
        if not kept:
            end = data.find(b"\n")
            if end == len(data) - 1:
                # One whole line, nothing kept: the common read, served without the loop.
                if end + 1 > self.max_package_size:
                    return self._bad_package(end + 1)
                statistics["total_request"] += 1
                line = data[:end].rstrip(b"\r\n").decode("utf-8", "replace")
                try:
                    self.on_message(self, line)
                except CALLBACK_ERRORS:
                    self._handler_failed()
                return None
        if kept.__class__ is bytearray:  # an unfinished line: no "\n" in it
            if data.find(b"\n") < 0:
                kept += data
                if len(kept) >= self.max_package_size:
                    return self._bad_package(len(kept))
                return None
            buffer = b"".join((kept, data))
        else:  # b"", or whole lines left by a pause
            buffer = kept + data if kept else data
        start = 0
        link = self._link
        unfinished = False
        while not self._paused and self.state is ESTABLISHED and self._link == link:
            end = buffer.find(b"\n", start)
            if end < 0:
                # Only an unfinished line can be too long: lines left complete by a
                # pause are packages of their own.
                if len(buffer) - start >= self.max_package_size:
                    return self._bad_package(len(buffer) - start)
                unfinished = True
                break
            if end + 1 - start > self.max_package_size:
                return self._bad_package(end + 1 - start)
            line = buffer[start:end].rstrip(b"\r\n")
            start = end + 1
            statistics["total_request"] += 1
            self._deliver(line.decode("utf-8", "replace"))
        rest = buffer[start:] if start else buffer
        self._keep(bytearray(rest) if unfinished and rest else rest, link)
        return None

    def _feed_packages(self, data):
        """Cut packages with the protocol. Input kept between reads is a bytearray that
        grows in place (``input`` may get bytes or a bytearray), and packages leave it
        from the front: a package dribbled in many small reads, or many packages in one
        read, cost work and memory proportional to their bytes, never a copy of the
        whole buffer per read or per package, nor an object per read."""
        pending = self._pending
        if pending is not None:
            # A package of known length is still incomplete: append in place (a list
            # of reads would cost an object per read: 40 times the bytes when a client
            # sends a byte per segment), copy once when it is whole.
            pending += data
            if len(pending) < self._package_length:
                return
            buffer = bytes(pending)
            self._pending = None
        elif self._recv_buffer:
            buffer = self._recv_buffer
            buffer += data
        else:
            buffer = data
        link = self._link
        while buffer and not self._paused and self.state is ESTABLISHED and self._link == link:
            protocol = self.protocol  # input() may switch it (HTTP upgrade)
            length = self._package_length
            if not length:
                try:
                    length = protocol.input(buffer, self)
                except Exception:
                    log_exception("%s.input failed" % protocol.__name__)
                    return self.destroy()
                if self.state is not ESTABLISHED:
                    return None  # input() closed it (after its last words, if any)
                if length is False:
                    return self._bad_package(length)
                if not length:
                    if len(buffer) >= self.max_package_size:
                        return self._bad_package(len(buffer))
                    break
                if length < 0 or length > self.max_package_size:
                    return self._bad_package(length)
                self._package_length = length
            if len(buffer) < length:
                self._pending = buffer if buffer.__class__ is bytearray else bytearray(buffer)
                buffer = b""
                break
            if len(buffer) == length:
                package, buffer = buffer, b""
                if package.__class__ is bytearray:
                    package = bytes(package)
            elif buffer.__class__ is bytes:
                package, buffer = buffer[:length], buffer[length:]
                if len(buffer) > CUT_IN_PLACE:  # copying the rest per package would
                    buffer = bytearray(buffer)  # cost its size times the packages in it
            else:
                package = bytes(buffer[:length])
                del buffer[:length]  # O(1): CPython moves the start of a bytearray
            self._package_length = 0
            statistics["total_request"] += 1
            try:
                message = protocol.decode(package, self)
            except Exception:
                statistics["throw_exception"] += 1
                log_exception("%s.decode failed" % protocol.__name__)
                return self.destroy()
            if message is not NOTHING:
                try:
                    self.on_message(self, message)
                except CALLBACK_ERRORS:
                    self._handler_failed()
        if buffer:
            if buffer.__class__ is bytes:
                buffer = bytearray(buffer)  # the next read appends in place
            self._keep(buffer, link)
        elif self._link == link:
            self._recv_buffer = b""
        return None

    def _keep(self, rest, link):
        """Keep unread input for the next read, unless a handler closed the connection
        or reconnected it (what is left belongs to the old link)."""
        if self._link == link:
            self._recv_buffer = rest if self.state is ESTABLISHED else b""

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

    def send(self, data, raw=False):
        """True: written now; None: queued; False: closed, or the buffer was full."""
        state = self.state
        if state is CLOSING or state is CLOSED:
            return False
        if not raw and self.protocol is not None:
            data = self.protocol.encode(data, self)
            if not data:
                return None
        if isinstance(data, str):
            data = data.encode()
        if self._tls is not None:
            if not self._tls.established:
                return self._queue_early(data)
            data = self._tls.send(data)
        return self._write(data)

    def send_soon(self, data):
        """Write raw ``data`` once the runner has served every wake-up of this turn of
        the loop, together with what else ``send_soon`` got for this connection
        meanwhile: one system call for many small packages (a gateway link carries one
        per client message; measured: the send per package was the gateway's largest
        cost). Order with ``send`` is kept. Returns None (queued) or False (closed)."""
        if self.state is not ESTABLISHED:
            return self.send(data, True)
        batch = self._batch
        if batch is None:
            self._batch = bytearray(data)
            run_soon(self._send_batch)
        else:
            batch += data
        return None

    def _send_batch(self):
        batch, self._batch = self._batch, None
        if batch:
            self._write(bytes(batch))

    def _write(self, data):
        if self._batch:
            batch, self._batch = self._batch, None
            data = bytes(batch) + data
        if self.state is not ESTABLISHED or self._send_buffer:
            return self._queue(data)
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._send_failed(error)
            return False
        self.bytes_written += sent
        if sent == len(data):
            return True
        return self._queue(data[sent:])

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


# An idle connection owns no greenlet: its read watcher calls _on_readable in the
# hub, which queues one wake-up (a recv, the packages it completes, their on_message
# calls). After the loop's io callbacks, one pooled runner greenlet serves the whole
# queue, so a turn of the loop that finds 50 sockets readable costs two greenlet
# switches, not a hundred. A handler that blocks keeps its runner; the rest of the
# queue goes to another runner at the hub's next turn. Measured: a greenlet parked per
# idle connection cost 7.3 KB of RSS each; a watcher, a socket and this object far less.
_idle_runners = []
MAX_IDLE_RUNNERS = 256
_ready = collections.deque()
_drain_pending = False


def run_soon(task):
    """Hub side: queue ``task()`` for the runner that serves this turn of the loop."""
    _ready.append(task)
    if not _drain_pending:
        _schedule_drain()


def _schedule_drain():
    global _drain_pending
    _drain_pending = True
    get_hub().loop.run_callback(_start_drain)


def _start_drain():
    global _drain_pending
    _drain_pending = False
    if _ready:
        run_in_runner(_drain)


def _drain():
    global _drain_pending
    ready = _ready
    current = getcurrent()
    while ready:
        task = ready.popleft()
        if ready and not _drain_pending:
            # Should task() block, the hub hands the rest to another runner.
            _drain_pending = True
            get_hub().loop.run_callback(_start_drain)
        try:
            task()
        except Exception:
            log_exception("connection task failed")
        current.gr_context = None  # no context variable leaks into the next task


def run_in_runner(task):
    """Run ``task()`` in a pooled greenlet. Hub side only: the runner returns to the hub."""
    if _idle_runners:
        _idle_runners.pop().switch(task)
    else:
        greenlet(_runner, get_hub()).switch(task)


def _runner(task):
    hub = get_hub()
    current = getcurrent()
    while True:
        try:
            task()
        except Exception:
            log_exception("connection task failed")
        current.gr_context = None  # no context variable leaks into the next task
        if len(_idle_runners) >= MAX_IDLE_RUNNERS:
            return
        _idle_runners.append(current)
        try:
            task = hub.switch()
        except BaseException:
            # Killed while idle (gevent.kill of a greenlet a handler kept, a Timeout
            # it never cancelled): leave the pool, or the next task handed to this
            # dead greenlet would be dropped and its connection never read again.
            _idle_runners.remove(current)
            raise


def accepted_socket(fd):
    """Wrap an accepted fd as the raw non-blocking socket connections use."""
    sock = _socket.socket(fileno=fd)
    sock.setblocking(False)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return sock
