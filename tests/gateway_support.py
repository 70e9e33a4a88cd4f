"""Helpers for the gateway tests under load: many WebSocket clients in one selector loop.

A ``Fleet`` opens N WebSocket clients to a gateway and lets each send numbered text
messages ("<client>:<n>"), at most ``window`` unanswered at a time and paced (message n
is not sent before ``n * interval`` seconds from the start), so a run lasts long enough
for a reload or a stop in its middle. The application answers each message with
"<tag>:<pid>:<message>" (or "<tag>:<pid>:<count>:<message>", count from the
client's session); the fleet checks that the answers of every client come back
exactly once and in order, and remembers which pid answered what.

The loop runs in a thread; the test reads ``progress()`` to act in the middle of the run,
then ``join()``s with a bound.
"""
import selectors
import socket
import struct
import threading
import time

from websocket_support import apply_mask, handshake, new_key
from geventman.protocols.websocket import accept_key


class FleetClient:
    def __init__(self, number, sock):
        self.number = number
        self.sock = sock
        self.buffer = bytearray()
        self.sent = 0          # messages sent
        self.answers = []      # (tag, pid, n) in arrival order
        self.errors = []       # what was wrong with an answer
        self.closed = None     # why the connection ended, if it did
        self.resent = 0        # messages sent again (``resend_after``)
        self.duplicates = 0    # answers to a message answered already
        self.waiting_since = 0.0


def open_websocket(host, port, timeout=10.0, source=None):
    """A blocking socket past the WebSocket handshake (any bytes after the 101 returned)."""
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    key = new_key()
    sock.sendall(handshake(key, "/", (), host="%s:%d" % (host, port)))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake: %r" % data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 ") or accept_key(key).encode() not in head:
        raise AssertionError("handshake failed: %r" % head)
    return sock, rest


def text_frame(text):
    payload = text.encode()
    key = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + key + apply_mask(payload, key)


def take_frames(buffer):
    """Whole server frames (unmasked, short) at the front of ``buffer``: [(first, payload)]."""
    frames = []
    while len(buffer) >= 2:
        first, size = buffer[0], buffer[1] & 0x7F
        start = 2
        if size == 126:
            if len(buffer) < 4:
                break
            size, start = struct.unpack("!H", bytes(buffer[2:4]))[0], 4
        if len(buffer) < start + size:
            break
        frames.append((first, bytes(buffer[start:start + size])))
        del buffer[:start + size]
    return frames


class Fleet:
    def __init__(self, host, port, count, messages, interval=0.02, window=4, source=None,
                 resend_after=None):
        self.messages, self.interval, self.window = messages, interval, window
        # For runs where an answer may be lost on purpose (a worker killed): a client
        # whose oldest message is unanswered for this long sends from it again, and
        # answers to a message already answered count as duplicates, not errors.
        self.resend_after = resend_after
        self.clients = []
        for number in range(count):
            sock, rest = open_websocket(host, port, source=source)
            client = FleetClient(number, sock)
            client.buffer += rest
            sock.setblocking(False)
            self.clients.append(client)
        self.paused = False       # while True, nothing new is sent
        self._stop = False
        self._thread = None
        self.started = None

    # -- the run -----------------------------------------------------------------------

    def start(self):
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout):
        """Wait for every answer (or ``timeout``); the loop stops either way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.finished():
            time.sleep(0.05)
        self._stop = True
        self._thread.join(5)
        return self.finished()

    def finished(self):
        return all(len(c.answers) >= self.messages or c.closed for c in self.clients)

    def progress(self):
        """The fewest answers any client has."""
        return min(len(c.answers) for c in self.clients)

    def _loop(self):
        selector = selectors.DefaultSelector()
        for client in self.clients:
            selector.register(client.sock, selectors.EVENT_READ, client)
        while not self._stop and not self.finished():
            self._send_due()
            for key, _ in selector.select(0.01):
                self._read(key.data, selector)
        selector.close()

    def _send_due(self):
        if self.paused:
            return
        if self.interval:
            due = int((time.monotonic() - self.started) / self.interval) + 1
        else:
            due = self.messages
        now = time.monotonic()
        for client in self.clients:
            if client.closed:
                continue
            if client.sent == len(client.answers):
                client.waiting_since = now
            elif self.resend_after and now - client.waiting_since > self.resend_after:
                client.resent += client.sent - len(client.answers)
                client.sent = len(client.answers)
                client.waiting_since = now
            while (client.sent < min(due, self.messages)
                   and client.sent - len(client.answers) < self.window):
                try:
                    client.sock.sendall(text_frame("%d:%d" % (client.number, client.sent)))
                except BlockingIOError:
                    break   # short frames into an empty buffer: not expected; retry later
                except OSError as error:
                    client.closed = "send failed: %r" % error
                    break
                client.sent += 1

    def _read(self, client, selector):
        try:
            chunk = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as error:
            chunk, reason = b"", "recv failed: %r" % error
        else:
            reason = "closed by the server"
        if not chunk:
            client.closed = reason
            selector.unregister(client.sock)
            return
        client.buffer += chunk
        for first, payload in take_frames(client.buffer):
            if first != 0x81:
                client.errors.append("frame %#x %r" % (first, payload))
                continue
            self._answer(client, payload.decode())

    def _answer(self, client, text):
        fields = text.split(":")
        if len(fields) == 5:
            # "<tag>:<pid>:<count>:<message>": count is a session counter the handler
            # increments, so it must be n + 1 (every change seen by the next handler).
            tag, pid, count, number, n = fields
            if int(count) != int(n) + 1 and not self.resend_after:
                client.errors.append("session count %s for message %s" % (count, n))
        else:
            tag, pid, number, n = fields
        expected = len(client.answers)
        if self.resend_after and int(number) == client.number and int(n) < expected:
            client.duplicates += 1
            return
        client.waiting_since = time.monotonic()
        if int(number) != client.number or int(n) != expected:
            client.errors.append("expected %d:%d, got %r" % (client.number, expected, text))
        client.answers.append((tag, int(pid), int(n)))

    # -- what the test checks ------------------------------------------------------------

    def close(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)
        for client in self.clients:
            client.sock.close()

    def problems(self):
        """A readable list of everything that went wrong, empty when all is well."""
        found = []
        for client in self.clients:
            if client.closed:
                found.append("client %d: %s after %d answers" % (
                    client.number, client.closed, len(client.answers)))
            found.extend("client %d: %s" % (client.number, e) for e in client.errors[:3])
            if len(client.answers) != self.messages and not client.closed:
                found.append("client %d: %d answers of %d (sent %d)" % (
                    client.number, len(client.answers), self.messages, client.sent))
        return found

    def ask_each(self, text, timeout=10.0):
        """After a run: every client sends ``text`` once (blocking); their answers."""
        answers = []
        for client in self.clients:
            client.sock.setblocking(True)
            client.sock.settimeout(timeout)
            client.sock.sendall(text_frame("%d:%s" % (client.number, text)))
            frames = take_frames(client.buffer)
            while not frames:
                chunk = client.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("client %d closed by the server" % client.number)
                client.buffer += chunk
                frames = take_frames(client.buffer)
            answers.append(frames[0][1].decode())
        return answers
