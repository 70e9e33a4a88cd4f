"""Timer end to end: in a child, in the master, and in task processes (Worker() with no address).

The text:// app here takes commands on one control connection and reports every timer
event on it, so the order of lines is the order of events in the process. To show a
timer does *not* fire, the test adds a one-shot marker timer due several intervals
later: timers fire in order of their due time, so a timer that was still alive would
have fired before the marker.
"""
import pytest

from conftest import LineClient, free_port, wait_until

TIMER_APP = """
    from geventman import Timer, Worker

    worker = Worker("text://127.0.0.1:PORT")
    worker.count = 1
    timers = {}


    def on_message(connection, data):
        command, *arguments = data.split()

        def tick(name, extra):
            connection.ticks[name] = connection.ticks.get(name, 0) + 1
            connection.send("tick %s %s %d" % (name, extra, connection.ticks[name]))

        if command == "add":
            name, interval, persistent = arguments
            timers[name] = Timer.add(float(interval), tick, args=(name, "arg"),
                                     persistent=persistent == "yes")
            connection.send("added %s %s" % (name, timers[name] is not False))
        elif command == "delete":
            connection.send("deleted %s %s" % (arguments[0], Timer.delete(timers[arguments[0]])))
        elif command == "delete_all":
            Timer.delete_all()
            connection.send("deleted_all %d" % Timer.count())
        elif command == "bad":
            connection.send("bad %r %r %d" % (Timer.add(0, tick), Timer.add(-1, tick),
                                              Timer.count()))
        elif command == "count":
            connection.send("count %d" % Timer.count())


    def on_connect(connection):
        connection.ticks = {}


    worker.on_connect = on_connect
    worker.on_message = on_message
"""


class Timers(LineClient):
    def __init__(self, port):
        super().__init__(port, timeout=10)
        self.lines = []

    def read_until(self, line):
        """Read lines up to and including ``line``; return the ones read on the way."""
        seen = []
        while True:
            got = self.recvline()  # 10 s without a line fails the test
            self.lines.append(got)
            seen.append(got)
            if got == line:
                return seen


@pytest.fixture
def timers(project):
    port = free_port()
    project.app("timers", TIMER_APP.replace("PORT", str(port)))
    project.start(ports=[port])
    client = Timers(port)
    yield client
    client.close()


def ticks(lines, name):
    return [line for line in lines if line.startswith("tick %s " % name)]


def test_sub_second_repeat_args_and_delete(timers):
    timers.sendline("add r 0.05 yes")
    assert timers.read_until("added r True") == ["added r True"]
    seen = timers.read_until("tick r arg 3")  # repeats, with the args given to add()
    assert seen == ["tick r arg 1", "tick r arg 2", "tick r arg 3"]
    timers.sendline("delete r")
    timers.read_until("deleted r True")
    timers.sendline("add marker 0.3 no")
    after_delete = timers.read_until("tick marker arg 1")
    assert ticks(after_delete, "r") == []
    timers.sendline("delete r")
    assert timers.read_until("deleted r False") == ["deleted r False"]  # gone already


def test_one_shot_fires_once(timers):
    timers.sendline("add once 0.05 no")
    timers.read_until("tick once arg 1")
    timers.sendline("add marker 0.3 no")
    after = timers.read_until("tick marker arg 1")
    assert ticks(after, "once") == []
    timers.sendline("count")
    assert timers.read_until("count 0") == ["count 0"]  # both one-shots forgot themselves


def test_delete_all_stops_every_timer(timers):
    for name in ("a", "b"):
        timers.sendline("add %s 0.05 yes" % name)
    timers.read_until("tick a arg 2")
    if "tick b arg 2" not in timers.lines:
        timers.read_until("tick b arg 2")
    timers.sendline("delete_all")
    timers.read_until("deleted_all 0")
    timers.sendline("add marker 0.3 no")
    after = timers.read_until("tick marker arg 1")
    assert ticks(after, "a") == [] and ticks(after, "b") == []


def test_non_positive_interval_is_refused(timers):
    timers.sendline("bad")
    assert timers.read_until("bad False False 0") == ["bad False False 0"]


def test_master_timers_do_not_fire_in_children_and_status_counts_timers(project):
    port = free_port()
    project.app("mastertimer", """
        import os

        from geventman import Timer, Worker

        HERE = os.path.dirname(os.path.abspath(__file__))


        def note(name):
            with open(os.path.join(HERE, name), "a") as handle:
                handle.write("%%d\\n" %% os.getpid())


        # Runs in the master (and in any CLI command that imports the apps).
        Timer.add(0.05, note, args=("ticks",))

        worker = Worker("text://127.0.0.1:%d")
        worker.count = 1


        def on_worker_start(worker):
            Timer.add(100, note, args=("never",))
            Timer.add(100, note, args=("never",))
            Timer.add(0.5, note, args=("marker",), persistent=False)


        worker.on_worker_start = on_worker_start
        worker.on_message = lambda connection, data: connection.send(data)
    """ % port)

    def pids(name):
        try:
            with open(project.path("applications", "mastertimer", name)) as handle:
                return set(int(line) for line in handle.read().split())
        except OSError:
            return set()

    process = project.start(ports=[port])
    [child] = project.wait_children(1)
    wait_until(lambda: process.pid in pids("ticks"), message="the master's timer fired")
    # The child's own one-shot fired after 0.5 s: ten intervals of the master's timer.
    wait_until(lambda: pids("marker") == {child}, message="the child's one-shot timer")
    assert child not in pids("ticks")
    rows = wait_until(lambda: [row for row in project.status_json()["processes"]
                               if not row["busy"]], message="status of the child")
    assert [(row["pid"], row["timers"]) for row in rows] == [(child, 2)]
    assert pids("never") == set()


def test_task_processes_without_address_run_timers(project):
    project.app("tasks", """
        import os

        from geventman import Timer, Worker

        HERE = os.path.dirname(os.path.abspath(__file__))
        worker = Worker()
        worker.name = "tasks"
        worker.count = 2


        def tick(worker):
            with open(os.path.join(HERE, "ticks"), "a") as handle:
                handle.write("%d %d\\n" % (worker.id, os.getpid()))


        worker.on_worker_start = lambda worker: Timer.add(0.05, tick, args=(worker,))
    """)
    project.start()
    children = project.wait_children(2)

    def counted():
        try:
            with open(project.path("applications", "tasks", "ticks")) as handle:
                pairs = [tuple(map(int, line.split())) for line in handle]
        except OSError:
            return {}
        found = {}
        for pair in pairs:
            found[pair] = found.get(pair, 0) + 1
        return found

    found = wait_until(lambda: (lambda found: found if len(found) == 2 and
                                min(found.values()) >= 3 else None)(counted()),
                       message="three ticks in each task process")
    assert sorted(slot for slot, _ in found) == [0, 1]
    assert sorted(pid for _, pid in found) == children
    rows = wait_until(lambda: (lambda rows: rows if all(not row["busy"] for row in rows)
                               else None)(project.status_json()["processes"]),
                      message="status of both task processes")
    assert sorted((row["name"], row["listen"], row["timers"]) for row in rows) == [
        ("tasks", "none", 1), ("tasks", "none", 1)]


def test_slow_repeating_timer_runs_never_overlap(project):
    """A callback that blocks longer than the interval: ticks are skipped, not stacked."""
    port = free_port()
    project.app("slow", """
        import gevent
        from geventman import Worker, Timer

        state = {"running": 0, "most": 0, "runs": 0}
        worker = Worker("text://127.0.0.1:%d")

        def slow():
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            gevent.sleep(0.15)
            state["running"] -= 1
            state["runs"] += 1

        worker.on_worker_start = lambda w: Timer.add(0.02, slow)
        worker.on_message = lambda c, d: c.send("%%(runs)d %%(most)d" %% state)
    """ % port)
    project.start(ports=[port])
    with LineClient(port) as client:
        runs, most = wait_until(lambda: (lambda r: r if r[0] >= 3 else None)(
            [int(x) for x in client.ask("?").split()]), message="three runs")
    assert most == 1
