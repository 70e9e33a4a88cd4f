"""Sessions in Redis: a real redis-server on loopback, two worker processes share them."""
import shutil
import subprocess

import pytest
import requests

from conftest import free_port, port_open, wait_until

APP = """
from geventman import Worker
from geventman.protocols.http import RedisStore, Session

Session.store = RedisStore("redis://127.0.0.1:%(redis)d/0", prefix="test:")
Session.lifetime = 600
worker = Worker("http://127.0.0.1:%(port)d")
worker.count = 2

def on_message(connection, request):
    session = request.session
    session["n"] = session.get("n", 0) + 1
    connection.send("%%d" %% session["n"])

worker.on_message = on_message
"""


@pytest.fixture
def redis_port(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (tests/run.sh installs it)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), message="redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_redis_session_store(project, redis_port):
    import redis
    port = free_port()
    project.app("web", APP % {"port": port, "redis": redis_port})
    project.start(ports=[port])
    client = requests.Session()
    url = "http://127.0.0.1:%d/" % port
    answers = []
    for _ in range(6):
        answers.append(client.get(url, headers={"Connection": "close"}, timeout=10).text)
    assert answers == ["1", "2", "3", "4", "5", "6"]
    keys = redis.Redis(port=redis_port).keys("test:*")
    assert len(keys) == 1
    assert 0 < redis.Redis(port=redis_port).ttl(keys[0]) <= 600
    project.stop()
