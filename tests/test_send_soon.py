"""TcpConnection.send_soon: the small writes of one turn of the loop go out in one
system call, in order with send(), and nothing is lost when the connection closes."""
import gevent

from geventman.connection.tcp import TcpConnection


class CountingSink:
    """Stands where the socket would be: records each send() call."""

    def __init__(self):
        self.writes = []
        self.closed = False

    def send(self, data):
        self.writes.append(bytes(data))
        return len(data)

    def fileno(self):
        return -1

    def close(self):
        self.closed = True


def connection():
    sink = CountingSink()
    return TcpConnection(sink, ("127.0.0.1", 5000)), sink


def test_one_write_for_every_send_soon_of_a_turn():
    conn, sink = connection()
    for number in range(50):
        assert conn.send_soon(b"%d," % number) is None
    assert sink.writes == []               # nothing written yet: the turn is not over
    gevent.sleep(0)
    assert sink.writes == [b"".join(b"%d," % n for n in range(50))]


def test_send_after_send_soon_keeps_the_order():
    conn, sink = connection()
    conn.send_soon(b"first ")
    conn.send(b"second", raw=True)
    gevent.sleep(0)
    assert b"".join(sink.writes) == b"first second"


def test_close_writes_what_send_soon_collected_first():
    conn, sink = connection()
    conn.send_soon(b"last words")
    conn.close()
    assert b"".join(sink.writes) == b"last words"
    assert sink.closed


def test_destroy_drops_it():
    conn, sink = connection()
    conn.send_soon(b"dropped")
    conn.destroy()
    gevent.sleep(0)
    assert sink.writes == []
