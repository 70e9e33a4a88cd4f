"""Business workers reload (and die) under traffic while the gateway keeps every client.

Real processes: a websocket:// Gateway (one process) and two BusinessWorker processes of
one application, started with start.py; 50 clients in one selector loop
(tests/gateway_support.py) each send 200 numbered messages, a few in flight at a time.
"""
import os
import signal

import pytest

from conftest import app_source, free_port, wait_until
from gateway_support import Fleet
from websocket_support import RawClient

START = """
from geventman.gateway import BusinessWorker, Gateway, Store

Store.path = STORE
gateway = Gateway("websocket://127.0.0.1:PORT")
gateway.start_port = INNER
worker = BusinessWorker()
worker.count = 2
"""

EVENTS = """
import os

from geventman.lib import Context, Gateway


def on_message(client_id, message):
    # A session counter: each handler must see the change the one before it made,
    # on whichever process it ran.
    count = Context.session["count"] = Context.session.get("count", 0) + 1
    Gateway.send_to_current_client("TAG:%d:%d:%s" % (os.getpid(), count, message))
"""

CLIENTS, MESSAGES = 50, 200


def start_app(project, events=EVENTS):
    port, inner = free_port(), free_port()
    source = app_source(START, port).replace("STORE", repr(project.path("store")))
    project.app("gw", source.replace("INNER", str(inner)),
                events_py=events.replace("TAG", "old"))
    project.start(ports=[port, inner])
    return port


def business_pids(fleet):
    return {pid for client in fleet.clients for _, pid, _ in client.answers}


def wait_for_two_workers(project, port):
    """Until both business processes answer (each has linked to the gateway)."""
    def both():
        probe = Fleet("127.0.0.1", port, 4, 1, interval=0)
        try:
            probe.start().join(10)
            return len(business_pids(probe)) == 2
        finally:
            probe.close()
    wait_until(both, timeout=15, interval=0.2, message="two business workers linked")


@pytest.mark.parametrize("mode", [(), ("-g",)], ids=["reload", "reload-g"])
def test_reload_under_traffic_loses_nothing_and_loads_the_new_events(project, mode):
    port = start_app(project)
    wait_for_two_workers(project, port)
    fleet = Fleet("127.0.0.1", port, CLIENTS, MESSAGES, interval=0.025, window=4)
    try:
        fleet.start()
        wait_until(lambda: fleet.progress() >= 40, timeout=30, message="40 answers each")
        project.write("applications/gw/events.py", EVENTS.replace("TAG", "reloaded"))
        project.command("reload", *mode, check=True)
        wait_until(lambda: "reload done" in project.log(), timeout=30,
                   message="reload done in the log")
        assert fleet.join(60), fleet.problems()[:10]
        assert fleet.problems() == []
        tags = [tag for client in fleet.clients for tag, _, _ in client.answers]
        assert "old" in tags
        # Every client is still connected and the new events.py answers it.
        answers = fleet.ask_each("after")
        assert all(answer.startswith("reloaded:") for answer in answers), answers[:5]
    finally:
        fleet.close()
    log = project.log()
    assert "Traceback" not in log, log[-3000:]


def test_reload_with_slow_handlers_gives_back_what_the_leaving_worker_did_not_start(
        project):
    """Handlers of 0.1 s and 20 messages in flight per client: a leaving worker cannot
    handle its queue within the stop time. What it did not start goes back to the
    gateway, ahead of what the gateway held, and the next worker handles it."""
    port = start_app(project, EVENTS.replace(
        "def on_message(client_id, message):",
        "def on_message(client_id, message):\n    gevent.sleep(0.1)").replace(
        "import os", "import os\n\nimport gevent"))
    wait_for_two_workers(project, port)
    fleet = Fleet("127.0.0.1", port, 10, 40, interval=0.01, window=20)
    try:
        fleet.start()
        wait_until(lambda: fleet.progress() >= 3, timeout=30, message="3 answers each")
        project.command("reload", check=True)
        wait_until(lambda: "reload done" in project.log(), timeout=30,
                   message="reload done in the log")
        assert fleet.join(60), fleet.problems()[:10]
        assert fleet.problems() == []
    finally:
        fleet.close()
    assert "still running" not in project.log()


def test_kill_9_of_a_business_worker_moves_its_clients(project):
    port = start_app(project)
    wait_for_two_workers(project, port)
    # One message in flight per client: those a killed process had are sent again.
    fleet = Fleet("127.0.0.1", port, 20, 150, interval=0.02, window=1, resend_after=2.0)
    try:
        fleet.start()
        wait_until(lambda: fleet.progress() >= 20 and len(business_pids(fleet)) == 2,
                   timeout=30, message="both workers serving")
        victim = sorted(business_pids(fleet))[0]
        served_by_victim = [client for client in fleet.clients
                            if client.answers[-1][1] == victim]
        assert served_by_victim
        before = {client.number: len(client.answers) for client in fleet.clients}
        os.kill(victim, signal.SIGKILL)
        assert fleet.join(60), fleet.problems()[:10]
        assert fleet.problems() == []
        for client in served_by_victim:
            after = [pid for _, pid, _ in client.answers[before[client.number] + 1:]]
            assert after and victim not in after, (client.number, after[:5])
        # At most the one message in flight per client was lost with the process.
        assert sum(client.resent for client in fleet.clients) <= len(served_by_victim)
    finally:
        fleet.close()


BIG_START = START.replace("worker.count = 2", """worker.count = 1
gateway.send_to_client_buffer_size = 32 << 20
worker.on_worker_reload = lambda worker: setattr(worker.events, "reloading", True)""")

BIG_EVENTS = """
import gevent

from geventman.lib import Gateway

reloading = False


def on_message(client_id, message):
    if message == "big":
        for _ in range(500):   # until the reload begins (5 s at most)
            if reloading:
                break
            gevent.sleep(0.01)
        Gateway.send_to_current_client("big:" + "x" * 6000000)
    else:
        Gateway.send_to_current_client("ok:" + message)
"""


def test_what_a_leaving_worker_sent_last_reaches_the_client(project):
    """A handler that sends a large reply as the reload begins: the reply is still in
    the link's send buffer when the worker is done; it must get to the gateway before
    the process exits."""
    port, inner = free_port(), free_port()
    source = app_source(BIG_START, port).replace("STORE", repr(project.path("store")))
    project.app("gw", source.replace("INNER", str(inner)), events_py=BIG_EVENTS)
    project.start(ports=[port, inner])
    with RawClient(port, timeout=15) as client:
        wait_until(lambda: client.ask("hi") == "ok:hi", message="a business worker")
        client.send(0x81, "big")
        project.command("reload", check=True)
        first, payload = client.recv_frame()
        assert (first, len(payload), payload[:4]) == (0x81, 6000004, b"big:")
        wait_until(lambda: "reload done" in project.log(), message="reload done")
        assert client.ask("after") == "ok:after"


HELD_EVENTS = """
import gevent

from geventman.lib import Context, Gateway

reloading = False


def on_message(client_id, message):
    if message == "slow":
        Context.session["seen"] = "slow"
        for _ in range(500):   # until the reload begins (5 s at most)
            if reloading:
                break
            gevent.sleep(0.01)
        Gateway.send_to_current_client("leaving")
        gevent.sleep(0.3)      # the client's next message now waits in the gateway
    else:
        Gateway.send_to_current_client("%s after %s" % (message, Context.session.get("seen")))
"""


def test_an_event_held_during_a_reload_sees_the_session_the_leaving_worker_wrote(project):
    """The gateway holds the events of a leaving worker's clients; the worker's last
    change of the session arrives after they were held: they must go on with it."""
    port, inner = free_port(), free_port()
    source = app_source(BIG_START, port).replace("STORE", repr(project.path("store")))
    project.app("gw", source.replace("INNER", str(inner)), events_py=HELD_EVENTS)
    project.start(ports=[port, inner])
    with RawClient(port, timeout=15) as client:
        wait_until(lambda: client.ask("hi") == "hi after None", message="a business worker")
        client.send(0x81, "slow")
        project.command("reload", check=True)
        assert client.recv_frame() == (0x81, b"leaving")
        assert client.ask("next") == "next after slow"


CLOSE_EVENTS = """
import os

import gevent

from geventman.lib import Gateway

HERE = os.path.dirname(os.path.abspath(__file__))


def on_message(client_id, message):
    if message == "hi":
        Gateway.send_to_current_client(client_id)
    else:
        gevent.sleep(0.1)


def on_close(client_id):
    with open(os.path.join(HERE, "closed.txt"), "a") as handle:
        handle.write(client_id + "\\n")
"""


def test_on_close_of_a_client_gone_while_its_worker_left_still_runs(project):
    """A client sends 3 s of work and goes; its worker is reloaded before it reaches
    the CLOSE event, so gives it back to the gateway, which no longer has the client:
    the next worker still runs on_close, once."""
    port, inner = free_port(), free_port()
    source = app_source(BIG_START, port).replace("STORE", repr(project.path("store")))
    project.app("gw", source.replace("INNER", str(inner)), events_py=CLOSE_EVENTS)
    project.start(ports=[port, inner])
    closed = project.path("applications/gw/closed.txt")

    def closes():
        try:
            with open(closed) as handle:
                return handle.read().split().count(client_id)
        except FileNotFoundError:
            return 0

    with RawClient(port, timeout=15) as client:
        client_id = wait_until(lambda: client.ask("hi"), message="a business worker")
        for number in range(30):
            client.send(0x81, "work %d" % number)
    project.command("reload", check=True)
    wait_until(lambda: "reload done" in project.log(), message="reload done")
    wait_until(closes, message="on_close of %s" % client_id)
    with RawClient(port, timeout=15) as client:   # a new worker serves; once only
        assert client.ask("hi") != client_id
        assert closes() == 1
