"""The per-message path of a TCP connection: read, cut, deliver, write.

``ConnectionCore`` is the base of ``TcpConnection``: the fields every message reads
and the methods every message runs, from the hub's readable callback to the write of
the answer, plus the runner greenlets that serve wake-ups. ``TcpConnection`` (tcp.py)
adds everything else: opening, closing, TLS, the send buffer, pausing, addresses.

This module is plain Python. When a C compiler is at hand ``pip install`` also builds
it with Cython as ``geventman.connection._core_c``, with the fields of ``_core_c.pxd``
as C members of the object instead of dictionary entries; ``geventman.compiled`` picks
that build unless ``GEVENTMAN_PURE_PYTHON`` is set (see docs/compiled.md). Both must
behave the same: the test suite runs against each.
"""
import collections

from gevent import get_hub, getcurrent
from greenlet import greenlet

from geventman import speedups
from geventman.log import log_exception
from geventman.protocols import NOTHING
from geventman.protocols._wsframe import OPEN, apply_mask
from geventman.protocols.http.context import current_request
from geventman.protocols.http.protocol import Http, known_head
from geventman.protocols.http.request import Request
from geventman.protocols.http.response import _hello, _renew_hello, _time
from geventman.protocols.text import Text
from geventman.protocols.websocket import Websocket
from geventman.runtime import CALLBACK_ERRORS, callback_failed, statistics
from geventman.states import CLOSED, CLOSING, ESTABLISHED

#: True in the build (_core_c), which has the C calls of _sockio.h besides what this
#: source says.
COMPILED = __name__ in speedups.COMPILED.values()

READ_SIZE = 65536
#: The head of an unmasked final text frame of 0-125 bytes, by size.
_TEXT_HEADS = [bytes((0x81, size)) for size in range(126)]
#: Input left after a package is kept as bytes up to this size (the common pipelined
#: case, cut by slicing); a bigger rest becomes a bytearray that packages leave in place.
CUT_IN_PLACE = 4096


class ConnectionCore:
    """The hot half of a connection (``TcpConnection`` is the other half)."""

    def _init_core(self, protocol):
        # Compiled, these are C members (see _core_c.pxd); pure, instance values, which
        # are found in half the time of class defaults (8 bytes each).
        self.protocol = protocol
        self.state = None
        self.on_message = None
        self._sock = self._read_watcher = self._write_watcher = None
        self._tls = self._batch = self._pending = None
        self._recv_buffer = b""
        self._send_buffer = bytearray()
        self._busy = self._paused = False
        self._link = self._package_length = 0
        self.bytes_read = self.bytes_written = 0
        # The socket's descriptor while the connection reads (begin() to destroy()):
        # the compiled build calls recv(2) and send(2) on it (_sockio.h); -1: the
        # socket object's methods, as the pure module always does.
        self._fd = -1
        # websocket:// keeps its Session here once the handshake begins, and the frame
        # type of what is sent (Workerman's websocketType); both read per message.
        self.websocket = self.websocket_type = None

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
        _ready.append(self)   # run_soon(self._wakeup), without the call or the method
        if not _drain_pending:
            _schedule_drain()

    def _wakeup(self):
        """In a runner: one recv, the messages it completes, then wait again."""
        if self.state is not ESTABLISHED or self._paused:
            self._busy = False
            return  # paused after this wake-up was queued: resume_recv re-arms
        link = self._link
        if COMPILED and self._fd >= 0:
            data = gm_recv(self._fd, READ_SIZE)  # noqa: F821 (_sockio.h, in the pxd)
        else:
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
                elif protocol is Websocket:
                    self._feed_frames(data)
                elif protocol is Http:
                    self._feed_http(data)
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

    def _feed(self, data):
        protocol = self.protocol
        if protocol is None:
            statistics["total_request"] += 1
            self._deliver(data)
        elif protocol is Text:
            self._feed_lines(data)
        elif protocol is Websocket:
            self._feed_frames(data)
        elif protocol is Http:
            self._feed_http(data)
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
                while end and data[end - 1] == 13:  # rstrip(b"\r\n"): no "\n" before end
                    end -= 1
                line = data[:end].decode("utf-8", "replace")
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

    def _feed_frames(self, data):
        """websocket:// fast path: the frames most messages are, whole in this read, with
        nothing kept from earlier reads: a text or binary message in one masked frame
        of under 126 bytes. For those ``frame_length`` checks nothing but the size and
        ``receive`` unmasks and decodes; here without their calls. Any other frame, and
        all that follows it, goes the general way (_feed_packages)."""
        if self._pending is not None or self._recv_buffer:
            return self._feed_packages(data)
        session = self.websocket
        if session is None or session.phase is not OPEN or session.message_opcode \
                or session.client:
            return self._feed_packages(data)
        size = len(data)
        start = 0
        link = self._link
        while size - start >= 6:
            first = data[start]
            length = data[start + 1] ^ 0x80  # masked (the top bit), else 128 or more
            end = start + 6 + length
            if (first != 0x81 and first != 0x82) or length >= 126 or end > size \
                    or 6 + length > self.max_package_size:
                break
            try:
                if COMPILED:  # unmasked and decoded into one new object (_sockio.h)
                    payload = gm_unmask(data, start + 2, length, first == 0x81)  # noqa: F821
                else:
                    payload = apply_mask(data[start + 6:end], data[start + 2:start + 6])
                    if first == 0x81:
                        payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # receive() fails the connection
            start = end
            statistics["total_request"] += 1
            self._deliver(payload)
            if self._link != link:
                return None  # destroyed meanwhile, perhaps reconnected: not ours now
            if self._paused or self.state is not ESTABLISHED or \
                    self.protocol is not Websocket or session.phase is not OPEN:
                break
        if start == size:
            return None
        rest = data[start:] if start else data
        if self._paused or self.state is not ESTABLISHED:
            return self._keep(bytearray(rest), link)
        return self._feed_packages(rest)

    def _feed_http(self, data):
        """http:// fast path: a read that is one whole request, byte for byte the same as
        one parsed and checked before (``known_head``: a keep-alive client asking for
        one URL again), with nothing kept from earlier reads. What ``Http.input`` and
        ``Http.decode`` do for it, without their calls; anything else goes the general
        way (_feed_packages)."""
        head = None
        if self._pending is None and not self._recv_buffer and not self._paused and \
                self.state is ESTABLISHED:
            state = getattr(self, "_http", None)
            if state is not None and not state.timed and len(data) <= self.max_package_size:
                head = known_head(data, state)   # (timed: decode has a watch to end)
        if head is None:
            return self._feed_packages(data)
        statistics["total_request"] += 1
        previous = state.current
        if previous is not None and previous._parsed_form:
            previous.cleanup()   # temporary files of its uploads
        request = state.current = Request(head, self, data[head.head_end:]
                                          if head.length else b"")
        current_request.set(request)
        try:
            self.on_message(self, request)
        except CALLBACK_ERRORS:
            self._handler_failed()
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

    def send(self, data, raw=False):
        """True: written now; None: queued; False: closed, or the buffer was full."""
        state = self.state
        if state is CLOSING or state is CLOSED:
            return False
        protocol = self.protocol
        if raw or protocol is None:
            pass
        elif protocol is Text:  # Text.encode, without the call
            data = (data.encode() if isinstance(data, str) else data) + b"\n"
        elif protocol is Websocket and data.__class__ is str and len(data) < 126 \
                and self._plain_frames():
            # message_frame's most common answer, without its call: a short text
            # message in one unmasked frame, no extension.
            payload = data.encode("utf-8")
            size = len(payload)
            data = _TEXT_HEADS[size] + payload if size < 126 else \
                protocol.encode(data, self)
        elif protocol is Http and data.__class__ is str:
            data = self._hello(data)
            if not data:
                return None
        else:
            data = protocol.encode(data, self)
            if not data:
                return None
        if isinstance(data, str):
            data = data.encode()
        if self._tls is not None:
            if not self._tls.established:
                return self._queue_early(data)
            data = self._tls.send(data)
        return self._write(data)

    def _hello(self, text):
        """``Http.encode`` of a ``str`` for the most common request: one that keeps the
        connection alive and has set nothing else (no header, cookie, session, gzip),
        answered with 200 and the prebuilt head; any other goes to ``Http.encode``."""
        state = getattr(self, "_http", None)
        request = state.current if state is not None else None
        worker = self.worker
        if request is None or not request.keep_alive or request.response is not None or \
                request.session_state is not None or state.gzip or \
                request.method == "HEAD" or (
                    worker is not None and getattr(worker, "_stopping", False)):
            return Http.encode(text, self)
        state.answered = request
        body = text.encode()
        if _time() >= _hello[0]:   # response.hello_head(True), without its call
            _renew_hello()
        return b"%b%d\r\n\r\n%b" % (_hello[1], len(body), body)

    def _plain_frames(self):
        """websocket:// is open on our server side with no extension and no forced
        frame type: a message is sent in a frame of its own kind, as it is."""
        session = self.websocket
        return session is not None and session.phase is OPEN and session.deflate is None \
            and not session.client and self.websocket_type is None

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
            if COMPILED and self._fd >= 0 and data.__class__ is bytes:
                sent = gm_send(self._fd, data)  # noqa: F821 (_sockio.h, in the pxd)
            else:
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
            if isinstance(task, ConnectionCore):  # a readable connection (_on_readable)
                connection = task    # typed in the pxd: the build calls _wakeup in C
                connection._wakeup()
            else:
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
