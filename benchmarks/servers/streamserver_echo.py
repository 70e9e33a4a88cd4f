"""The peer: a bare gevent StreamServer text echo, N forked processes, one socket.

``python streamserver_echo.py PORT [PROCESSES] [--reuseport]``. The parent binds and
listens, forks PROCESSES children that each run a StreamServer on the inherited
listening socket, and waits; SIGTERM or SIGINT to the parent stops the children. This
is the "raw gevent StreamServer, 2 procs" column of DESIGN.md section 6: what plain
gevent does with no framework on top.

With one shared socket every child is woken for a new connection and the first takes
as many as are queued (StreamServer's max_accept is 100), so a burst of connections
may all land in one process. ``--reuseport`` gives each child its own SO_REUSEPORT
socket instead, bound before the fork as geventman's master does, and the kernel
spreads the connections by their address hash.

Each connection is served the way a gevent user writes it: a recv loop on gevent's
cooperative socket, every complete line answered, the answers of one read written
with one sendall. TCP_NODELAY is set, as on geventman's accepted sockets.
"""
import os
import signal
import socket
import sys

from gevent import monkey

monkey.patch_all()

from gevent.server import StreamServer  # noqa: E402


def handle(sock, address):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    recv, sendall = sock.recv, sock.sendall
    while True:
        try:
            data = recv(65536)
        except OSError:
            return
        if not data:
            return
        data = pending + data if pending else data
        end = data.rfind(b"\n")
        if end < 0:
            pending = data
            continue
        pending = data[end + 1:]
        try:
            sendall(data[:end + 1])  # an echo of every whole line read
        except OSError:
            return


def serve(listener):
    server = StreamServer(listener, handle)
    server.serve_forever()


def bind(port, reuseport):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(102400)
    return listener


def main():
    reuseport = "--reuseport" in sys.argv
    argv = [arg for arg in sys.argv[1:] if arg != "--reuseport"]
    port = int(argv[0])
    processes = int(argv[1]) if len(argv) > 1 else 2
    shared = bind(port, reuseport)
    listeners = [shared] + [bind(port, True) for _ in range(processes - 1) if reuseport]
    children = []
    for index in range(processes):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            serve(listeners[index] if reuseport else shared)
            os._exit(0)
        children.append(pid)

    def stop(number, frame):
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
