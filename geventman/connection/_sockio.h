/* The socket calls of the compiled hot path (_core_c, see _core_c.pxd): recv(2) and
 * send(2) on the connection's descriptor, without the Python socket method around
 * them (an attribute lookup, argument parsing, a timeout check, the GIL given up and
 * taken back, a 64 KiB object allocated per read and shrunk). The sockets are
 * non-blocking, so holding the GIL costs nothing. Each function answers as the pure
 * code's use of socket.recv/socket.send does (see ConnectionCore._wakeup and _write).
 */
#ifndef GEVENTMAN_SOCKIO_H
#define GEVENTMAN_SOCKIO_H

#include <Python.h>
#include <errno.h>
#include <sys/socket.h>

/* Read into one buffer per process, then copy what came into a bytes object of its
 * size: a small message costs a small allocation. No greenlet switch or other thread
 * can come between the read and the copy (the GIL is held). */
static char gm_read_buffer[65536];

/* One read of at most `size` bytes: the bytes read; b"" at the end of the stream or on
 * an error (the caller then closes the connection); None when there is nothing to read. */
static PyObject *gm_recv(int fd, Py_ssize_t size)
{
    ssize_t got;
    if (size > (Py_ssize_t)sizeof(gm_read_buffer))
        size = sizeof(gm_read_buffer);
    do {
        got = recv(fd, gm_read_buffer, (size_t)size, 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        got = 0;
    }
    return PyBytes_FromStringAndSize(gm_read_buffer, got);
}

/* One write of `data` (exactly bytes): the count of bytes the kernel took, 0 when its
 * buffer is full, -1 with OSError (its errno subclass) raised. */
static Py_ssize_t gm_send(int fd, PyObject *data)
{
    ssize_t sent;
    do {
        sent = send(fd, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                    MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return (Py_ssize_t)sent;
}

/* The payload of a short masked frame whose bounds the caller checked: `length`
 * (at most 125) bytes after the 4-byte key at `key_at` in `frame` (exactly bytes),
 * unmasked (RFC 6455 5.3); a str when `text` (NULL with UnicodeDecodeError raised when
 * it is not UTF-8), else bytes. One object made, where slicing, apply_mask and decode
 * would make four. */
static PyObject *gm_unmask(PyObject *frame, Py_ssize_t key_at, Py_ssize_t length, int text)
{
    const unsigned char *key = (const unsigned char *)PyBytes_AS_STRING(frame) + key_at;
    const unsigned char *masked = key + 4;
    unsigned char plain[128];
    Py_ssize_t i;
    if (length > 125)
        length = 125;
    for (i = 0; i < length; i++)
        plain[i] = masked[i] ^ key[i & 3];
    if (text)
        return PyUnicode_DecodeUTF8((const char *)plain, length, NULL);
    return PyBytes_FromStringAndSize((const char *)plain, length);
}

#endif
