"""The master's decisions, without forking: reload order, exit counting, the signal
table, the command parser, the status table and the pid file.

These are the plain functions the master and the commands are built from (STYLE.md
lesson 9); the real-process behaviour is in test_master.py.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from geventman import cli, pidfile, signals, status
from geventman.master import count_exit, reload_order


class FakeWorker:
    def __init__(self, name, reloadable=True):
        self.name, self.reloadable = name, reloadable


# -- reload_order -------------------------------------------------------------------

def test_reload_order_follows_worker_then_slot_not_pid():
    web, task = FakeWorker("web"), FakeWorker("task")
    children = {900: (1, 0, task), 300: (0, 2, web), 700: (0, 0, web), 100: (0, 1, web)}
    assert reload_order(children, lambda worker: True) == [700, 100, 300, 900]


def test_reload_order_leaves_out_what_the_filter_rejects():
    web, keeper = FakeWorker("web"), FakeWorker("keeper", reloadable=False)
    children = {10: (0, 0, keeper), 11: (1, 0, web), 12: (1, 1, web)}
    assert reload_order(children, lambda worker: worker.reloadable) == [11, 12]
    assert reload_order(children, lambda worker: False) == []
    assert reload_order({}, lambda worker: True) == []


def test_reload_order_does_not_change_the_children():
    web = FakeWorker("web")
    children = {5: (0, 1, web), 4: (0, 0, web)}
    before = dict(children)
    reload_order(children, lambda worker: True)
    assert children == before


# -- count_exit ---------------------------------------------------------------------

def test_count_exit_counts_per_worker_and_status():
    exits = {"web": {}}
    count_exit(exits, "web", 9)
    count_exit(exits, "web", 9)
    count_exit(exits, "web", 0)
    count_exit(exits, "task", 64000)
    assert exits == {"web": {"9": 2, "0": 1}, "task": {"64000": 1}}


def test_count_exit_keys_survive_a_json_round_trip():
    # The master writes exits into master.json; the CLI reads them back: keys must
    # be the same strings on both sides or counts would split.
    exits = {}
    count_exit(exits, "web", 9)
    exits = json.loads(json.dumps(exits))
    count_exit(exits, "web", 9)
    assert exits == {"web": {"9": 2}}


def test_sigkill_is_counted_as_9_like_workerman():
    """The raw wait status of a SIGKILLed child is 9, of exit(3) 768 (as pcntl_wait)."""
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    killed.kill()
    _, raw_killed = os.waitpid(killed.pid, 0)
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    _, raw_exited = os.waitpid(exited.pid, 0)
    exits = {}
    count_exit(exits, "web", raw_killed)
    count_exit(exits, "web", raw_exited)
    assert exits == {"web": {"9": 1, "768": 1}}


# -- the signal table ---------------------------------------------------------------

def test_signal_meanings_are_workermans():
    assert signals.ACTION == {
        signal.SIGINT: "stop", signal.SIGTERM: "graceful_stop",
        signal.SIGUSR1: "reload", signal.SIGQUIT: "graceful_reload",
        signal.SIGUSR2: "status", signal.SIGIO: "connections",
    }


def test_signal_table_is_one_to_one():
    numbers = [number for number, _, _, _ in signals.SIGNALS]
    actions = [action for _, action, _, _ in signals.SIGNALS]
    assert len(set(numbers)) == len(numbers)
    assert len(set(actions)) == len(actions)
    for number, action in zip(numbers, actions):
        assert signals.NUMBER[action] == number
        assert signals.ACTION[number] == action


def test_every_action_has_a_handler_in_master_and_child():
    from geventman.master import Master
    from geventman.worker import _Child
    for _, action, _, _ in signals.SIGNALS:
        assert callable(getattr(Master, "handle_" + action, None)), action
        assert callable(getattr(_Child, "handle_" + action, None)), action


def test_every_signal_command_parses():
    for _, _, command, _ in signals.SIGNALS:
        parsed = cli.parse(["start.py"] + command.split())
        assert parsed.name == command.split()[0]


def test_markdown_table_has_one_row_per_signal():
    table = signals.markdown_table().splitlines()
    assert table[0] == "| signal | command | meaning |"
    assert len(table) == 2 + len(signals.SIGNALS)
    assert "| SIGUSR1 | `reload` |" in table[2 + [a for _, a, _, _ in signals.SIGNALS].index("reload")]
    for number, _, command, _ in signals.SIGNALS:
        assert any(signal.Signals(number).name in row and "`%s`" % command in row
                   for row in table)


# -- cli.parse ----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def forget_parsed_command(monkeypatch):
    """cli.parse remembers the command for cli.main; do not leak it between tests."""
    monkeypatch.setattr(cli, "_current", None)


@pytest.mark.parametrize("argv, expected", [
    (["start"], dict(name="start", daemon=False, graceful=False, json=False, apps=[])),
    (["start", "-d"], dict(name="start", daemon=True)),
    (["stop", "-g"], dict(name="stop", graceful=True, daemon=False)),
    (["restart", "-d"], dict(name="restart", daemon=True)),
    (["restart", "-d", "-g"], dict(name="restart", daemon=True, graceful=True)),
    (["reload"], dict(name="reload", graceful=False)),
    (["reload", "-g"], dict(name="reload", graceful=True)),
    (["status", "--json"], dict(name="status", json=True, daemon=False)),
    (["status", "-d"], dict(name="status", daemon=True)),
    (["connections"], dict(name="connections")),
    (["start", "--app", "chat", "--app", "todo", "-d"],
     dict(name="start", apps=["chat", "todo"], daemon=True)),
])
def test_parse(argv, expected):
    command = cli.parse(["start.py"] + argv)
    for key, value in expected.items():
        assert getattr(command, key) == value, key
    assert cli.current(["start.py", "stop"]) is command


@pytest.mark.parametrize("argv", [[], ["launch"], ["start", "-x"], ["start", "--app"],
                                  ["stop", "now"], ["-d", "start"]])
def test_parse_rejects_bad_command_lines(argv):
    with pytest.raises(cli.UsageError) as error:
        cli.parse(["start.py"] + argv)
    assert "Usage: python start.py" in str(error.value)


def test_only_start_and_restart_start():
    starts = {name: cli.parse(["start.py", name]).starts for name in cli.COMMANDS}
    assert starts == {"start": True, "restart": True, "stop": False, "reload": False,
                      "status": False, "connections": False}


def test_usage_error_exits_64(tmp_path):
    script = tmp_path / "start.py"
    script.write_text("from geventman import boot\nboot.prepare()\n")
    result = subprocess.run([sys.executable, str(script), "frobnicate"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 64
    assert "Usage: python start.py" in result.stdout


def test_fill_defaults_puts_files_next_to_start_py(tmp_path):
    class Config:
        pid_file = None
        log_file = None
    start_file = str(tmp_path / "start.py")
    cli.fill_defaults(Config, start_file, cli.Command("start"))
    assert Config.pid_file == str(tmp_path / "geventman.pid")
    assert Config.log_file == str(tmp_path / "geventman.log")
    Config.pid_file = None
    cli.fill_defaults(Config, start_file, cli.Command("start", apps=["b", "a"]))
    assert Config.pid_file == str(tmp_path / "geventman.a.b.pid")


# -- status.process_rows / status.render --------------------------------------------

def master_report(children, exits=None):
    return {
        "version": "9.9.9", "python": "3.11.0", "start_time": time.time() - 90061,
        "load": [0.5, 0.25, 0.125], "master_pid": 1,
        "workers": [{"name": "web", "listen": "text://127.0.0.1:1", "count": len(children)}],
        "children": children,
        "exits": exits if exits is not None else {"web": {}},
    }


def child_answer(pid, **counters):
    answer = {"pid": pid, "name": "web", "listen": "text://127.0.0.1:1", "id": 0,
              "connections": 0, "total_request": 0, "send_fail": 0, "throw_exception": 0,
              "timers": 0}
    answer.update(counters)
    return answer


def test_process_rows_marks_silent_children_busy():
    me = os.getpid()
    children = [{"pid": me, "name": "web", "listen": "text://127.0.0.1:1", "id": 0},
                {"pid": 2 ** 22 + 7, "name": "web", "listen": "text://127.0.0.1:1", "id": 1}]
    rows = status.process_rows(master_report(children),
                               {me: child_answer(me, connections=3, total_request=17)})
    assert [row["pid"] for row in rows] == [me, 2 ** 22 + 7]
    assert rows[0]["busy"] is False
    assert rows[0]["connections"] == 3 and rows[0]["total_request"] == 17
    assert rows[0]["memory"] > 0                      # this test process, via psutil
    assert rows[1]["busy"] is True
    assert rows[1]["memory"] is None                  # no such process
    for key in ("connections", "total_request", "send_fail", "throw_exception", "timers"):
        assert rows[1][key] is None


def test_render_has_workermans_blocks_and_exit_statuses():
    me = os.getpid()
    children = [{"pid": me, "name": "web", "listen": "text://127.0.0.1:1", "id": 0},
                {"pid": 2 ** 22 + 7, "name": "web", "listen": "text://127.0.0.1:1", "id": 1}]
    report = master_report(children, exits={"web": {"9": 2, "0": 1}, "task": {}})
    rows = status.process_rows(report, {me: child_answer(me, total_request=41, timers=2)})
    text = status.render(report, rows, qps={me: 5})
    lines = text.splitlines()
    assert "GLOBAL STATUS" in lines[0]
    assert any("PROCESS STATUS" in line for line in lines)
    assert "geventman version:9.9.9" in text and "Python version:3.11.0" in text
    assert "run 1 days 1 hours 1 minutes" in text
    assert "load average: 0.50, 0.25, 0.12" in text
    assert "1 workers" in text and "2 processes" in text
    assert ["web", "9", "2"] in [line.split() for line in lines]
    assert ["web", "0", "1"] in [line.split() for line in lines]
    assert ["task", "0", "0"] in [line.split() for line in lines]
    # exit statuses sorted numerically, and listed before the process block
    web_exits = [line.split()[1] for line in lines if line.split()[:1] == ["web"]
                 and len(line.split()) == 3]
    assert web_exits == ["0", "9"]
    mine = [line for line in lines if line.startswith(str(me))][0].split()
    assert mine[-1] == "[idle]" and "41" in mine and mine[-2] == "5"
    silent = [line for line in lines if line.startswith(str(2 ** 22 + 7))][0]
    assert silent.split()[-1] == status.BUSY and "N/A" in silent


def test_render_connections_lists_each_connection_or_busy():
    children = [{"pid": 11, "name": "web", "listen": "x", "id": 0},
                {"pid": 12, "name": "web", "listen": "x", "id": 1}]
    answers = {11: [{"id": 1, "worker": "web", "transport": "tcp", "protocol": "Text",
                     "send_q": 0, "bytes_read": 5, "bytes_written": 9,
                     "state": "ESTABLISHED", "local": "127.0.0.1:8000",
                     "remote": "127.0.0.1:51234"}]}
    text = status.render_connections(master_report(children), answers)
    assert "127.0.0.1:51234" in text and "ESTABLISHED" in text
    assert [line for line in text.splitlines() if line.startswith("12")][0].endswith(status.BUSY)


def test_collect_is_bounded_and_returns_what_answered(tmp_path):
    directory = str(tmp_path)
    status.clear(directory)
    report = master_report([{"pid": 11, "name": "web", "listen": "x", "id": 0},
                            {"pid": 12, "name": "web", "listen": "x", "id": 1}])
    status.write_json(os.path.join(directory, "master.json"), report)
    status.write_json(os.path.join(directory, "11.json"), child_answer(11))
    started = time.monotonic()
    master, answers = status.collect(directory, ".json", timeout=0.3)
    assert time.monotonic() - started < 2
    assert master["children"][1]["pid"] == 12
    assert list(answers) == [11]


def test_collect_without_a_master_answer_gives_none(tmp_path):
    started = time.monotonic()
    assert status.collect(str(tmp_path), ".json", timeout=0.2) == (None, {})
    assert time.monotonic() - started < 2


def test_clear_empties_the_folder(tmp_path):
    directory = str(tmp_path / "status")
    status.clear(directory)
    status.write_json(os.path.join(directory, "1.json"), {"a": 1})
    assert status.read_json(os.path.join(directory, "1.json")) == {"a": 1}
    status.clear(directory)
    assert os.listdir(directory) == []


# -- pidfile ------------------------------------------------------------------------

def test_pidfile_round_trip(tmp_path):
    path = str(tmp_path / "geventman.pid")
    assert pidfile.read(path) is None
    pidfile.write(path, os.getpid())
    assert open(path).read() == "%d\n" % os.getpid()
    assert pidfile.read(path) == os.getpid()
    assert os.listdir(str(tmp_path)) == ["geventman.pid"]   # no temporary left over
    pidfile.remove(path, os.getpid())
    assert not os.path.exists(path)


def test_pidfile_of_a_dead_process_reads_as_none(tmp_path):
    path = str(tmp_path / "geventman.pid")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write(path, dead.pid)
    assert pidfile.read(path) is None


def test_pidfile_of_a_zombie_reads_as_none(tmp_path):
    path = str(tmp_path / "geventman.pid")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while pidfile.alive(zombie.pid):
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.01)
        os.kill(zombie.pid, 0)            # still there: a zombie, not yet waited for
        pidfile.write(path, zombie.pid)
        assert pidfile.read(path) is None
    finally:
        zombie.wait()


@pytest.mark.parametrize("content", ["", "garbage", "0", "-5"])
def test_pidfile_with_junk_reads_as_none(tmp_path, content):
    path = tmp_path / "geventman.pid"
    path.write_text(content)
    assert pidfile.read(str(path)) is None


def test_pidfile_remove_keeps_a_newer_masters_file(tmp_path):
    path = str(tmp_path / "geventman.pid")
    pidfile.write(path, os.getpid())
    pidfile.remove(path, os.getpid() + 1)
    assert pidfile.read(path) == os.getpid()
    pidfile.remove(str(tmp_path / "missing.pid"), 1)   # no error


def test_pidfile_alive_for_init_and_for_a_free_pid():
    assert pidfile.alive(1)
    assert pidfile.alive(os.getpid())
    assert not pidfile.alive(2 ** 22 + 7)   # above pid_max's maximum


# -- tables: every column as wide as its longest cell --------------------------------

LONG_NAME = "a_worker_name_of_30_characters"
LONG_ADDRESS = "websocket://[2001:db8:85a3::8a2e:370:7334]:65535"


def assert_columns(lines, header_at=0):
    """Every row has as many cells as the header, each starting where the header's
    column starts (columns are separated by at least two spaces)."""
    header = lines[header_at]
    starts = [match.start() for match in re.finditer(r"(?:(?<=  )|^)\S", header)]
    for line in lines[header_at + 1:]:
        cells = [match.start() for match in re.finditer(r"(?:(?<=  )|^)\S", line)]
        assert cells == starts, "\n%s\n%s" % (header, line)


def test_status_columns_fit_a_long_name_and_address():
    assert len(LONG_NAME) == 30
    children = [{"pid": 4194311, "name": LONG_NAME, "listen": LONG_ADDRESS, "id": 0,
                 "start_time": 1767607200.0},
                {"pid": 7, "name": "w", "listen": "none", "id": 1, "start_time": None}]
    report = master_report(children, exits={LONG_NAME: {"9": 1}, "w": {}})
    answers = {7: child_answer(7, name="w", listen="none", total_request=123456789)}
    rows = status.process_rows(report, answers)
    assert rows[0]["timestamp"] == status.readable_time(1767607200.0)
    lines = status.render(report, rows).splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("pid")][0]
    assert lines[header].split() == list(status.PROCESS_COLUMNS)
    assert "timestamp" in status.PROCESS_COLUMNS
    body = lines[header:header + 3]
    assert_columns(body)
    assert all(len(line.split()) == len(status.PROCESS_COLUMNS) for line in body)
    first = body[1].split()
    assert first[0] == "4194311" and first[2] == LONG_ADDRESS and first[4] == LONG_NAME
    assert first[3] == time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1767607200.0))
    exits = [i for i, line in enumerate(lines) if line.startswith("worker_name")][0]
    assert_columns(lines[exits:exits + 3])
    assert lines[exits + 1].split() == [LONG_NAME, "9", "1"]
    assert "GLOBAL STATUS" in lines[0] and "PROCESS STATUS" in lines[header - 1]


def test_connections_columns_fit_a_long_name():
    children = [{"pid": 11, "name": LONG_NAME, "listen": LONG_ADDRESS, "id": 0}]
    answers = {11: [{"id": 1, "worker": LONG_NAME, "transport": "tcp",
                     "protocol": "AVeryLongProtocolName", "send_q": 0, "bytes_read": 5,
                     "bytes_written": 9, "state": "ESTABLISHED",
                     "local": "[2001:db8:85a3::8a2e:370:7334]:65535",
                     "remote": "127.0.0.1:51234"},
                    {"id": 22, "worker": "w", "transport": "tcp", "protocol": "Text",
                     "send_q": 1234567, "bytes_read": 5, "bytes_written": 9,
                     "state": "CLOSING", "local": "127.0.0.1:1", "remote": "127.0.0.1:2"}]}
    lines = status.render_connections(master_report(children), answers).splitlines()
    assert_columns(lines)
    assert LONG_NAME in lines[1].split() and "AVeryLongProtocolName" in lines[1].split()


def test_start_table_fits_a_long_name_and_address():
    class Named:
        user, count = "someone", 12

        def __init__(self, name, listen_address):
            self.name, self.listen_address = name, listen_address

    lines = cli.start_table([Named(LONG_NAME, LONG_ADDRESS), Named("w", "none")],
                            detached=False).splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("user")][0]
    assert_columns(lines[header:header + 3])
    assert lines[header + 1].split() == ["someone", LONG_NAME, LONG_ADDRESS, "12", "[OK]"]
    assert "WORKERS" in lines[header - 1]
