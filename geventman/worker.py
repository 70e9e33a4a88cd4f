"""Worker: one listening service, run by ``count`` child processes.

The master owns the listening sockets: for each worker it binds one SO_REUSEPORT
socket per child slot before forking and keeps it open for the life of the server.
The kernel spreads new connections evenly over the slots, and when a child is
replaced its slot's socket stays open in the master, so connections that arrive in
between wait in that socket's queue for the replacement instead of being refused or
reset (closing a SO_REUSEPORT socket resets its queue: net.ipv4.tcp_migrate_req is
off by default). A Worker knows sockets and callbacks, never other processes; the
master calls ``bind_listeners`` before forking and ``run_child`` in each child.
"""
import _socket
import errno
import fcntl
import os
import random
import struct
import sys
import termios
import time

import gevent
import gevent.event
from gevent import get_hub, spawn_raw
from gevent.socket import wait_read

from geventman import cli, proctitle, reserve, runtime, signals, status
from geventman import log as logging
from geventman.limits import ListenError, limit_reached
from geventman.connection.tcp import (
    CALLBACKS, ConnectionMap, TcpConnection, accepted_socket, run_soon)
from geventman.connection.tls import Tls, server_context
from geventman.connection.udp import UdpConnection
from geventman.log import log, log_exception
from geventman.protocols import TRANSPORTS, caller_dir, resolve, split_address
from geventman.protocols import check as check_protocol
from geventman.runtime import call, statistics
from geventman.timer import Timer

ACCEPTS_PER_WAKEUP = 64
ACCEPT_PAUSE = 0.1  # seconds without accepting after a failed accept (EMFILE...)
ACCEPT_LOG_INTERVAL = 10.0  # seconds: at most one "accept ... failed" line per worker
UDP_READ_SIZE = 65535
IDLE_GRACE = 0.2  # seconds before a reload closes idle connections (_close_when_idle)
BACKLOG = 102400  # as Workerman; the kernel caps it at net.core.somaxconn


class Worker:
    """``Worker("text://0.0.0.0:1234")``: set ``count`` and the ``on_*`` callbacks."""

    # Settings of the whole server (class attributes, as Workerman's statics).
    daemonize = False
    stdout_file = os.devnull
    pid_file = None      # default: geventman.pid next to start.py
    log_file = None      # default: geventman.log next to start.py
    stop_timeout = 2     # seconds a child gets to stop before SIGKILL
    file_monitor = False  # reload on edits of applications/*.py, in the foreground

    _all = []            # every Worker made in this process, in order
    _running = []        # the workers serving in this child process

    connection_callbacks = CALLBACKS
    connection_class = TcpConnection   # what an accepted connection is made of
    exclusive = False  # listen() in a child binds without SO_REUSEPORT: a taken port fails

    def __init__(self, address="", context=None):
        self.address = address
        self.context = context or {}
        self.count = 1
        self.name = "none"
        self.user = ""
        self.group = ""
        self.reloadable = True
        self.reuse_port = False
        self.protocol = None
        self.id = 0
        self.connections = ConnectionMap()
        self.on_worker_start = self.on_worker_stop = self.on_worker_reload = None
        for name in CALLBACKS:  # copied to each accepted connection
            setattr(self, name, None)
        self.app_dir = caller_dir()
        self.scheme, self.transport = "", "tcp"
        if address:
            self.scheme, self.host, self.port = split_address(address)
            if self.scheme.lower() in TRANSPORTS:
                self.transport = self.scheme.lower()
        self._listeners = []      # sockets bound by the master, one per slot
        self._socket = None       # the socket this process accepts on
        self._watcher = None
        self._tls_context = None
        self._stopping = False
        self._accept_failures = 0
        self._accept_logged = -ACCEPT_LOG_INTERVAL
        Worker._all.append(self)

    # -- in the master -------------------------------------------------------

    def bind_listeners(self):
        """Bind one socket per child slot (master side, before forking)."""
        if self.address:
            check_protocol(self.scheme, self.app_dir)  # a typo fails the start
        if self.transport == "ssl":
            server_context(self.context.get("ssl") or {})  # a bad certificate fails the start
        if not self.address or self.reuse_port:
            return
        try:
            if self.port:
                self._bind(self.port, probe=True).close()  # another server there: fail now
            first = self._bind(self.port)
            port = first.getsockname()[1]
            self._listeners = [first] + [self._bind(port) for _ in range(self.count - 1)]
        except OSError as error:
            self.close_listeners()
            raise ListenError(self, error) from error

    def close_listeners(self):
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    def _bind(self, port, probe=False, exclusive=False):
        """A listening socket of a SO_REUSEPORT group. ``probe``: a socket without
        SO_REUSEPORT, bound only to learn whether the port is taken. Without it a
        group would silently join another server of the same user that listens
        with SO_REUSEPORT (another geventman) and share its connections."""
        family = _socket.AF_INET6 if ":" in self.host else _socket.AF_INET
        kind = _socket.SOCK_DGRAM if self.transport == "udp" else _socket.SOCK_STREAM
        sock = _socket.socket(family, kind)
        try:
            if not (probe and kind == _socket.SOCK_DGRAM):
                # TCP: TIME_WAIT of an earlier run is fine (listeners still conflict).
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if not (probe or exclusive):
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            sock.bind((self.host, port))
            if kind == _socket.SOCK_STREAM and not probe:
                sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)  # a blocking listener would freeze the hub
        return sock

    @property
    def listen_address(self):
        return self.address or "none"

    # -- in a child ----------------------------------------------------------

    def run_child(self, slot, siblings, status_dir, lifeline=None):
        """Body of a child process; never returns. ``lifeline``: a pipe's read end
        that turns readable (EOF) when the master is gone."""
        code = 0
        try:
            for worker in siblings:
                if worker is not self:
                    worker.close_listeners()
            self._socket = self._listeners[slot] if self._listeners else None
            for sock in self._listeners:
                if sock is not self._socket:
                    sock.close()
            self._listeners = []
            code = self._serve_child(slot, status_dir, lifeline)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            log_exception("worker[%s] crashed" % self.name)
            code = 250
        finally:
            logging.flush()
            _flush_std()
            os._exit(code)

    def _serve_child(self, slot, status_dir, lifeline):
        self.id = slot
        random.seed()
        Timer.delete_all()
        runtime.reset()
        proctitle.set_title("geventman: worker process  %s %s" % (self.name, self.listen_address))
        self._drop_privileges()
        child = _Child(status_dir, lifeline)
        child.install()
        try:
            self.protocol = resolve(self.scheme, self.app_dir) if self.address else None
            if self.on_worker_start is not None:
                self.on_worker_start(self)
        except Exception:
            log_exception("worker[%s] on_worker_start failed" % self.name)
            time.sleep(1)  # do not respawn in a tight loop
            return 250
        if self.address and self._watcher is None:
            self.listen()
        if self in Worker._running:
            Worker._running.remove(self)
        # First, even when on_worker_start made and started other workers: the
        # status row of this process names the worker it was forked for.
        Worker._running.insert(0, self)
        return child.wait()

    def listen(self):
        """Start accepting in this process (also usable inside on_worker_start)."""
        if not self.address or self._watcher is not None:
            return
        if self.protocol is None:
            self.protocol = resolve(self.scheme, self.app_dir)
        if self._socket is None:
            self._socket = self._bind(self.port, exclusive=self.exclusive)
        if self.transport == "ssl":
            self._tls_context = server_context(self.context.get("ssl") or {})
        self._watcher = get_hub().loop.io(self._socket.fileno(), 1)
        handler = self._on_datagrams if self.transport == "udp" else self._on_acceptable
        self._watcher.start(handler)
        if self not in Worker._running:
            Worker._running.append(self)

    def unlisten(self):
        """Stop accepting. This process's copy of the socket is closed; the master's
        copy keeps queued connections for the next child of this slot."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _on_acceptable(self):
        """Runs in the hub: take what is queued, one greenlet per connection."""
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                fd, address = self._socket._accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno not in (errno.ECONNABORTED, errno.EINTR):
                    # EMFILE leaves the socket readable: left on, the watcher would
                    # spin the hub (and this log) until a descriptor is freed.
                    self._accept_failed(error)
                    self._watcher.stop()
                    gevent.spawn_later(ACCEPT_PAUSE, self._accept_again, self._watcher)
                return
            connection = self.connection_class(accepted_socket(fd), address, self, self.protocol)
            if self._tls_context is not None:
                connection.transport = "ssl"
                connection._tls = Tls(self._tls_context, server_side=True)
            self.connections[connection.id] = connection
            run_soon(connection.begin)

    def _accept_failed(self, error):
        """Log a failed accept once per ACCEPT_LOG_INTERVAL, with how many failed since
        the last line. Accepting is retried every ACCEPT_PAUSE meanwhile: at the
        open-file limit that is ten failures a second, one line says it all."""
        now = time.monotonic()
        self._accept_failures += 1
        if now - self._accept_logged < ACCEPT_LOG_INTERVAL:
            return
        more = self._accept_failures - 1
        log("accept on %s failed: %s%s%s" % (
            self.address, error, limit_reached(error.errno),
            "; %d more failures since the last line" % more if more else ""))
        self._accept_logged, self._accept_failures = now, 0

    def _accept_again(self, watcher):
        if watcher is self._watcher:  # still listening on that socket
            watcher.start(self._on_acceptable)

    def _on_datagrams(self):
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                data, address = self._socket.recvfrom(UDP_READ_SIZE)
            except BlockingIOError:
                return
            except OSError as error:
                log("recvfrom on %s failed: %s" % (self.address, error))
                return
            spawn_raw(self._datagram, data, address)

    def _datagram(self, data, address):
        connection = UdpConnection(self._socket, address, self, self.protocol)
        statistics["total_request"] += 1
        protocol = self.protocol
        if protocol is None:
            return call(self.on_message, connection, data)
        while data:
            try:
                length = protocol.input(data, connection)
                if length is False or not length or length < 0 or length > len(data):
                    log("bad datagram from %s:%s, dropped" % address[:2])
                    return None
                message = protocol.decode(data[:length], connection)
            except Exception:
                log_exception("bad datagram from %s:%s, dropped" % address[:2])
                return None
            data = data[length:]
            call(self.on_message, connection, message)
        return None

    def connection_closed(self, connection):
        self.connections.pop(connection.id, None)
        if self._stopping and not self.connections:
            _Child.current.connections_gone()

    def stop_accepting(self):
        self._stopping = True
        self.unlisten()
        call(self.on_worker_stop, self)

    def _drop_privileges(self):
        if os.getuid() != 0 or not (self.user or self.group):
            return
        import grp
        import pwd
        user = pwd.getpwnam(self.user) if self.user else pwd.getpwuid(os.getuid())
        gid = grp.getgrnam(self.group).gr_gid if self.group else user.pw_gid
        os.setgid(gid)
        os.initgroups(user.pw_name, gid)
        os.setuid(user.pw_uid)

    @classmethod
    def run_all(cls):
        """Parse the command line and run it: start, stop, reload, status..."""
        sys.exit(cli.main(cls, cls._all))


class _Child:
    """The process-wide part of a child: its signals, its stop modes, its status files."""

    current = None

    def __init__(self, status_dir, lifeline=None):
        self.status_dir = status_dir
        self.lifeline = lifeline
        self.done = gevent.event.Event()
        self.code = 0
        self.master_pid = os.getppid()
        self.replaced = False  # a reload is replacing this process
        _Child.current = self

    def install(self):
        reserve.hold()  # status must answer at the open-file limit (geventman.reserve)
        for number, action, _, _ in signals.SIGNALS:
            gevent.signal_handler(number, getattr(self, "handle_" + action))
        gevent.spawn(self._watch_master)

    def wait(self):
        self.done.wait()
        return self.code

    def _watch_master(self):
        """Stop as with ``stop`` once the master is gone (killed with SIGKILL, say)."""
        if self.lifeline is not None:
            wait_read(self.lifeline)  # nobody writes: readable means EOF, the master died
        else:
            while os.getppid() == self.master_pid:  # run_child called without a lifeline
                gevent.sleep(1)
        if not self.done.is_set():
            log("master %d is gone, worker stops" % self.master_pid)
            self.handle_stop()

    # Signal handlers (each runs in its own greenlet).

    def handle_stop(self):
        self._stop_workers()
        for connection in TcpConnection.connections.values():
            connection.destroy()
        self.done.set()

    def handle_graceful_stop(self):
        self._stop_workers()
        self.connections_gone()

    def handle_reload(self):
        logging.reopen()  # after log rotation, as the master does
        # After a graceful reload this hurries it (master: _hurry_reload); the
        # on_worker_reload callbacks have run (or are running) already.
        if self.replaced or self._reload_callbacks():
            self._stop_workers()
            self._close_when_idle(Worker.stop_timeout)
            self.done.set()

    def handle_graceful_reload(self):
        logging.reopen()
        if not self.replaced and self._reload_callbacks():
            self.handle_graceful_stop()

    def handle_status(self):
        status.write_json(os.path.join(self.status_dir, "%d.json" % os.getpid()),
                          self.report())

    def handle_connections(self):
        rows = [connection_row(c) for c in TcpConnection.connections.values()]
        status.write_json(os.path.join(self.status_dir, "%d.connections.json" % os.getpid()),
                          rows)

    def report(self):
        worker = Worker._running[0] if Worker._running else None
        row = dict(statistics, pid=os.getpid(), timers=Timer.count(),
                   name=worker.name if worker else "none",
                   listen=worker.listen_address if worker else "none",
                   id=worker.id if worker else 0)
        fields = getattr(worker, "status_fields", None)  # a Gateway's clients, say
        if fields is not None:
            row.update(fields())
        return row

    def _reload_callbacks(self):
        """Run on_worker_reload everywhere; True if this process is to be replaced.

        A process to be replaced is marked so before the callbacks run: a reload
        signal that comes while they block hurries the reload instead of running
        them again."""
        self.replaced = all(worker.reloadable for worker in Worker._running)
        for worker in Worker._running:
            call(worker.on_worker_reload, worker)
        # A callback may have changed its worker's mind, as in Workerman.
        self.replaced = all(worker.reloadable for worker in Worker._running)
        return self.replaced

    def _stop_workers(self):
        for worker in Worker._running:
            if not worker._stopping:
                worker.stop_accepting()

    def connections_gone(self):
        if not any(worker.connections for worker in Worker._running):
            self.done.set()

    def _close_when_idle(self, timeout):
        """Close each connection once it is between requests; force the rest at timeout."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            remaining = [c for w in Worker._running for c in w.connections.values()]
            if not remaining:
                return
            now = time.monotonic()
            for connection in remaining:
                # A new connection that has not sent anything yet may have its request
                # in flight: give it a moment before calling it idle. Every connection
                # gets IDLE_GRACE first: a busy HTTP keep-alive client is between two
                # requests most of the time, and closing it there fails its next one
                # (measured: 3 failed requests in 5 reloads); within the grace its next
                # answer says "Connection: close" (http:// while the worker stops).
                settled = ((connection.bytes_read or now - connection.created > 0.5)
                           and now - started >= IDLE_GRACE)
                if settled and connection.is_idle() and not _unread_bytes(connection):
                    connection.close()
            gevent.sleep(0.02)
        for worker in Worker._running:
            for connection in worker.connections.values():
                connection.destroy()


def _unread_bytes(connection):
    """Bytes that arrived but were not read yet (so the peer did send a request)."""
    if connection._sock is None:
        return 0
    try:
        packed = fcntl.ioctl(connection._sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return struct.unpack("i", packed)[0]


def connection_row(connection):
    worker = connection.worker
    return {"id": connection.id, "worker": worker.name if worker else "none",
            "transport": connection.transport,
            "protocol": connection.protocol.__name__ if connection.protocol else "tcp",
            "local": "%s:%s" % (connection.get_local_ip(), connection.get_local_port()),
            "remote": connection.get_remote_address(),
            "send_q": connection.get_send_buffer_size(),
            "bytes_read": connection.bytes_read, "bytes_written": connection.bytes_written,
            "state": connection.state.name,
            # what the worker knows of it beyond the socket (a gateway: client id, uid)
            **(worker.connection_fields(connection)
               if getattr(worker, "connection_fields", None) else {})}


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
