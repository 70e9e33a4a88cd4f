"""The Python cost of one message through TcpConnection, in one process, without the hub.

A socketpair stands in for the client: each round sends one request, calls the
connection's wake-up (recv, cut, decode, on_message, encode, send) directly, and
reads the answer. The same four socket calls without geventman are timed too, and
the difference is what geventman's Python costs per message. Steadier than a load
test on two shared cores, so it is what compares two versions of the hot path::

    python benchmarks/hot_path.py                  # text, websocket, http
    python benchmarks/hot_path.py --profile http   # and cProfile's view of one path
"""
import _socket
import argparse
import cProfile
import pstats
import socket
import statistics
import time

import gevent

from geventman.connection.tcp import TcpConnection
from geventman.protocols._wsframe import OPEN, Session
from geventman.protocols.http.protocol import Http
from geventman.protocols.text import Text
from geventman.protocols.websocket import Websocket

MASK = b"\x01\x02\x03\x04"
REQUESTS = {
    "text": (Text, b"ping\n"),
    "websocket": (Websocket, b"\x81\x84" + MASK + bytes(
        byte ^ MASK[index % 4] for index, byte in enumerate(b"ping"))),
    "http": (Http, b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n\r\n"),
}


def connection_pair(scenario):
    protocol, request = REQUESTS[scenario]
    server, client = socket.socketpair()
    raw = _socket.socket(fileno=server.detach())
    raw.setblocking(False)
    connection = TcpConnection(raw, ("127.0.0.1", 1), None, protocol)
    if scenario == "http":
        connection.on_message = lambda c, request: c.send("Hello, World!")
    else:
        connection.on_message = lambda c, data: c.send(data)
    if scenario == "websocket":
        connection.websocket = Session()
        connection.websocket.phase = OPEN
        connection.websocket_type = None
    connection._read_watcher = gevent.get_hub().loop.io(raw.fileno(), 1)  # as begin() does
    connection._fd = raw.fileno()

    def one():
        client.send(request)
        connection._busy = True      # as the hub sets it when it queues the wake-up
        connection._wakeup()
        client.recv(65536)

    def bare():
        client.send(request)
        raw.recv(65536)
        raw.send(b"Hello, World!")
        client.recv(65536)

    return one, bare


def per_call(function, count):
    start = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - start) / count * 1e6


def measure(scenario, count, rounds):
    one, bare = connection_pair(scenario)
    per_call(one, 2000)
    costs = [per_call(one, count) - per_call(bare, count) for _ in range(rounds)]
    return statistics.median(costs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="text,websocket,http")
    parser.add_argument("--count", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", metavar="SCENARIO")
    args = parser.parse_args(argv)
    for scenario in args.only.split(","):
        print("%-9s %.2f µs of Python per message (median of %d rounds of %d)" % (
            scenario, measure(scenario, args.count, args.rounds), args.rounds, args.count))
    if args.profile:
        one, _ = connection_pair(args.profile)
        profiler = cProfile.Profile()
        profiler.enable()
        per_call(one, 50000)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
