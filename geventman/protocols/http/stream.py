"""File bodies: small ones in the response, big ones streamed through the send buffer.

A big file is never read whole: a greenlet reads it in chunks and sends each one;
when the connection's send buffer passes a high-water mark it waits for
``on_buffer_drain`` (chained in front of the application's own callback). While
the file streams the connection does not read, so a pipelined request behind it is
answered after the whole file, in order.
"""
import os

from gevent import spawn_raw
from gevent.event import Event

from geventman.log import log

SMALL_FILE = 256 << 10     # files up to this size go out with the header block
CHUNK = 64 << 10


def file_body(connection, state, handle, offset, length, keep_alive):
    """The bytes to send now; starts a streamer for the rest of a big file."""
    if length <= SMALL_FILE:
        try:
            return os.pread(handle.fileno(), length, offset)
        finally:
            handle.close()
    connection.pause_recv()   # also keeps a reload from closing it as idle (is_idle)
    spawn_raw(_stream, connection, state, handle, offset, length, keep_alive)
    return b""


def _stream(connection, state, handle, offset, remaining, keep_alive):
    drained = state.drained = Event()
    application_drain = connection.on_buffer_drain

    def on_drain(conn):
        drained.set()
        if application_drain is not None:
            application_drain(conn)

    connection.on_buffer_drain = on_drain
    high_water = min(4 * CHUNK, max(connection.max_send_buffer_size // 2, CHUNK))
    try:
        remaining = _pump(connection, handle, offset, remaining, drained, high_water)
    except OSError as error:
        log("http: reading %r failed: %s" % (getattr(handle, "name", handle), error))
    finally:
        handle.close()
        connection.on_buffer_drain = application_drain
        state.drained = None
    _finish(connection, remaining, keep_alive)


def _pump(connection, handle, offset, remaining, drained, high_water):
    fd = handle.fileno()
    while remaining > 0 and connection.state.name == "ESTABLISHED":
        chunk = os.pread(fd, min(CHUNK, remaining), offset)
        if not chunk:
            break  # the file shrank: the promised length cannot be kept
        offset += len(chunk)
        remaining -= len(chunk)
        if connection.send(chunk, raw=True) is False:
            break
        if connection.get_send_buffer_size() >= high_water:
            drained.clear()
            drained.wait()
    return remaining


def _finish(connection, remaining, keep_alive):
    if remaining:
        connection.destroy()          # the body came short: the peer must see EOF
    elif not keep_alive:
        connection.close()
    else:
        connection.resume_recv()
