"""Request timeouts: a client that starts a request must finish it.

Without them one client could hold a connection (a descriptor, a slot in
``worker.connections``) for ever by sending a request head a byte at a time, or a body
that never ends. ``request_timeout`` (seconds, on the worker or on one connection;
``None`` or 0 turns it off) bounds both, as nginx's client_header_timeout and
client_body_timeout do:

* the head (request line and header fields) must be complete ``request_timeout``
  seconds after its first byte arrived;
* a body may not go ``request_timeout`` seconds without a new byte.

A request that misses either is answered ``408 Request Timeout``, one line is logged
and the connection is closed. Time spent in the application does not count: the
clock of a pipelined request starts when its handler's predecessor has returned, and
a connection that is answering (its handler runs, a file streams) is never timed.

Nothing is paid per request in the common case: a request that arrives whole in one
read is never watched. A request that does not is put on a watch list, and one loop
timer per process goes over that list every quarter of the shortest timeout (at most
once a second) while it is not empty.
"""
import time

from gevent import get_hub, spawn_raw

from geventman.log import log
from geventman.states import ESTABLISHED

DEFAULT = 60.0  # seconds, as nginx's client_header_timeout and client_body_timeout

_watched = {}   # connection -> [kind, since, bytes_read when since was set]
_timer = None
_interval = None


def timeout_of(connection):
    """The connection's request_timeout: its own, else its worker's, else DEFAULT."""
    value = getattr(connection, "request_timeout", None)
    if value is None:
        worker = connection.worker
        value = getattr(worker, "request_timeout", DEFAULT)
    return value or None


def watch(connection, kind):
    """Time a request of ``connection`` whose ``kind`` ("head" or "body") has begun but
    is not complete. A head keeps the clock of its first byte; a body restarts it."""
    if kind == "head" and connection in _watched:
        return True
    limit = timeout_of(connection)
    if limit is None:
        _watched.pop(connection, None)  # turned off while a request was being read
        return False
    _watched[connection] = [kind, time.monotonic(), connection.bytes_read]
    _start_timer(limit)
    return True


def done(connection):
    """The request is complete, or the connection is gone."""
    _watched.pop(connection, None)


def _start_timer(limit):
    global _timer, _interval
    interval = min(1.0, limit / 4)
    if _timer is not None:
        if _timer.active and _interval <= interval:
            return
        _timer.stop()
        _timer.close()
    _timer, _interval = get_hub().loop.timer(interval, interval), interval
    _timer.start(_sweep)


def _sweep():
    """Hub side: time out what is overdue; stop the timer when nothing is watched."""
    now = time.monotonic()
    for connection, entry in list(_watched.items()):
        kind, since, seen = entry
        if connection.state is not ESTABLISHED:
            done(connection)
        elif connection._busy or connection._paused or (
                kind == "body" and connection.bytes_read != seen):
            # The application's time, or a body that moved on: the clock restarts.
            entry[1], entry[2] = now, connection.bytes_read
        elif now - since >= (timeout_of(connection) or float("inf")):
            entry[1] = float("inf")  # overdue: _time_out decides, once
            spawn_raw(_time_out, connection, entry)
    if not _watched:
        _timer.stop()


def _time_out(connection, entry):
    """In a greenlet, soon after the sweep: by now the request may have been completed
    (and even answered) by input read in the same turn of the loop."""
    if _watched.get(connection) is not entry or connection.state is not ESTABLISHED:
        return  # completed since (decode took it off the list), or gone
    kind, _, seen = entry
    if connection._busy or connection._paused or (
            kind == "body" and connection.bytes_read != seen):
        entry[1], entry[2] = time.monotonic(), connection.bytes_read
        return
    done(connection)
    log("http: 408 request %s not complete within %ss from %s:%s, closing" % (
        kind, timeout_of(connection), connection.get_remote_ip(),
        connection.get_remote_port()))
    # The protocol says it its way (http:// and websocket:// answer 408).
    answer = getattr(connection.protocol, "timed_out", None)
    connection.close(answer(connection) if answer else None, raw=True)
