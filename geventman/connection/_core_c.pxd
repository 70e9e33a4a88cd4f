# The C view of _core.py for its compiled build (see geventman/speedups.py): the fields
# every message reads become members of the object, the methods every message runs
# are called without a dictionary lookup. Every name stays readable and settable from
# Python, with the same meaning as in the pure module.

cimport cython

cdef extern from "_sockio.h":
    object gm_recv(int fd, Py_ssize_t size)
    Py_ssize_t gm_send(int fd, object data) except -1
    object gm_unmask(bytes frame, Py_ssize_t key_at, Py_ssize_t length, bint text)

cdef bint COMPILED
cdef list _TEXT_HEADS
cdef object _ready
cdef list _idle_runners
cdef bint _drain_pending


cdef class ConnectionCore:
    cdef public object protocol, state, on_message
    cdef public object _sock, _read_watcher, _write_watcher, _tls
    cdef public object websocket, websocket_type
    cdef public object _recv_buffer, _pending, _batch, _send_buffer
    cdef public bint _busy, _paused
    cdef public Py_ssize_t _link, _package_length, bytes_read, bytes_written
    cdef public int _fd
    cdef dict __dict__

    cpdef _arm(self)
    cpdef _on_readable(self)
    cpdef _wakeup(self)
    cpdef _feed(self, data)
    cpdef _deliver(self, message)
    @cython.locals(end=Py_ssize_t)
    cpdef _feed_lines(self, bytes data)
    @cython.locals(size=Py_ssize_t, start=Py_ssize_t, length=Py_ssize_t, end=Py_ssize_t,
                   first=int)
    cpdef _feed_frames(self, bytes data)
    cpdef _feed_http(self, bytes data)
    cpdef _feed_packages(self, data)
    cpdef _keep(self, rest, link)
    cpdef send(self, data, raw=*)
    cpdef _hello(self, str text)
    cpdef bint _plain_frames(self)
    cpdef _write(self, data)


cpdef run_soon(task)
cpdef _schedule_drain()
@cython.locals(connection=ConnectionCore)
cpdef _drain()
