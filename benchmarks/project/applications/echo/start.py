"""text:// echo for the benchmarks: each line comes back as it was sent.

GEVENTMAN_BENCH_PORT picks the port (default 2347), GEVENTMAN_BENCH_COUNT the
number of processes (default 2, as the peer in benchmarks/servers/).
"""
import os

from geventman import Worker

echo = Worker("text://127.0.0.1:%s" % os.environ.get("GEVENTMAN_BENCH_PORT", "2347"))
echo.name = "echo"
echo.count = int(os.environ.get("GEVENTMAN_BENCH_COUNT", "2"))


def on_message(connection, data):
    connection.send(data)


echo.on_message = on_message
