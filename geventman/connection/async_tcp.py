"""AsyncTcpConnection: an outgoing connection with the same callbacks as an accepted one.

``AsyncTcpConnection("text://127.0.0.1:1234")`` resolves the scheme like a worker does;
``connect()`` starts the connection in its own greenlet and returns at once. What is
sent before the connection is up is queued and flushed when it is. A failed connect
calls ``on_error(connection, 1, message)`` and then ``on_close``; ``reconnect(delay)``
from ``on_close`` is the usual way to keep a link up.
"""
import _socket
import errno
import os

import gevent
from gevent import get_hub, spawn
from gevent import socket as gsocket

from geventman.connection.tls import Tls, client_context
from geventman.connection.tcp import CONNECT_FAIL, ConnectionClosed, State, TcpConnection
from geventman.protocols import caller_dir, resolve, split_address
from geventman.runtime import call


class AsyncTcpConnection(TcpConnection):
    connect_timeout = 10
    _connect_watcher = None
    _connector = None

    def __init__(self, address, context=None):
        scheme, host, port = split_address(address)
        self._setup(resolve(scheme, caller_dir()))
        if scheme.lower() in ("ssl", "wss"):  # wss:// is ws:// over TLS
            self.transport = "ssl"
        self.state = State.INITIAL
        self.remote_uri = address
        self.context = context or {}
        self._remote_address = (host, port)
        self._remote_host = host
        self._reconnect_timer = None

    def get_remote_host(self):
        return self._remote_host

    def connect(self):
        if self.state is not State.INITIAL:
            return
        self.state = State.CONNECTING
        self._register()
        self._connector = spawn(self._connect_and_serve)

    def reconnect(self, delay=0):
        """Connect again, now or after ``delay`` seconds (cancels an earlier reconnect)."""
        self.cancel_reconnect()
        if self.state is not State.CLOSED and self.state is not State.INITIAL:
            self.destroy()
            self.cancel_reconnect()
        self.state = State.INITIAL
        self._reset_buffers()
        self._paused = False
        self._tls = None  # what is sent while connecting waits for the new session
        if delay > 0:
            self._reconnect_timer = gevent.spawn_later(delay, self.connect)
        else:
            self.connect()

    def cancel_reconnect(self):
        if self._reconnect_timer is not None:
            self._reconnect_timer.kill(block=False)
            self._reconnect_timer = None

    def _connect_and_serve(self):
        try:
            sock = self._open()
        except ConnectionClosed:
            return
        except (OSError, gevent.Timeout) as error:
            if self.state is State.CONNECTING:
                call(self.on_error, self, CONNECT_FAIL, "connect %s:%s fail: %s" % (
                    self._remote_address + (error,)))
                self.destroy()
            return
        if self.state is not State.CONNECTING or self._connector is not gevent.getcurrent():
            sock.close()  # closed (or reconnected) before this greenlet got to run
            return
        self._sock = sock
        self._remote_address = sock.getpeername()[:2]
        self.state = State.ESTABLISHED
        if self.transport == "ssl":
            self._start_tls()
        elif self._send_buffer:
            self._start_writer()
        call(getattr(self.protocol, "on_connect", None), self)
        self.begin()

    def destroy(self):
        if self._connect_watcher is not None and self.state is not State.CLOSED:
            # The connecting greenlet waits on it: wake it with ConnectionClosed.
            get_hub().cancel_wait(self._connect_watcher, ConnectionClosed(), True)
            self._connect_watcher = None
        super().destroy()

    def _start_tls(self):
        options = self.context.get("ssl", {})
        self._tls = Tls(client_context(options), False,
                        options.get("server_hostname", self._remote_host))
        early, self._send_buffer = self._send_buffer, bytearray()
        if early:
            self._tls.send(early)
        self._write(self._tls.start())

    def _open(self):
        # The name, not the address of an earlier connection: each connect resolves.
        host, port = self._remote_host, self._remote_address[1]
        family, kind, proto, _, address = gsocket.getaddrinfo(
            host, port, 0, _socket.SOCK_STREAM)[0]
        sock = _socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                code = self._wait_connected(sock)
            if code:
                raise OSError(code, os.strerror(code))
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except BaseException:
            sock.close()
            raise

    def _wait_connected(self, sock):
        """Wait until the socket is writable; return its SO_ERROR. ``destroy`` may end
        the wait (ConnectionClosed) and clear ``_connect_watcher`` meanwhile, so the
        watcher is closed through the local name."""
        hub = get_hub()
        watcher = self._connect_watcher = hub.loop.io(sock.fileno(), 2)
        try:
            with gevent.Timeout(self.connect_timeout):
                hub.wait(watcher)
        finally:
            watcher.close()
            if self._connect_watcher is watcher:
                self._connect_watcher = None
        return sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
