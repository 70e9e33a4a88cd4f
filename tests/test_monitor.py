"""The file monitor (geventman/monitor.py): its decisions on a folder of files, and
end to end: ``start --watch`` with the chat demo reloads the business code within 2 s
of an edit of events.py while every client of the gateway stays connected."""
import os
import time

import pytest

from conftest import free_port, port_open, wait_until
from demo_support import running_demo
from geventman import cli
from geventman.monitor import FileMonitor, changes, snapshot


def touch(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    # A later mtime than any earlier write, whatever the file system's resolution.
    stamp = time.time_ns() + 10_000_000
    os.utime(path, ns=(stamp, stamp))


def test_snapshot_takes_py_files_only(tmp_path):
    touch(str(tmp_path / "chat" / "events.py"), "x = 1")
    touch(str(tmp_path / "chat" / "public" / "page.html"), "<p>")
    touch(str(tmp_path / "chat" / "__pycache__" / "events.py"), "cached")
    touch(str(tmp_path / "chat" / ".git" / "hook.py"), "hidden")
    assert list(snapshot(str(tmp_path))) == [str(tmp_path / "chat" / "events.py")]


def test_changes_are_edits_additions_and_removals(tmp_path):
    edited, removed = str(tmp_path / "a.py"), str(tmp_path / "b.py")
    touch(edited, "a = 1")
    touch(removed, "b = 1")
    before = snapshot(str(tmp_path))
    assert changes(before, snapshot(str(tmp_path))) == []
    touch(edited, "a = 2")
    os.unlink(removed)
    added = str(tmp_path / "new" / "c.py")
    touch(added, "c = 1")
    assert changes(before, snapshot(str(tmp_path))) == sorted([edited, removed, added])


def test_a_change_during_a_reload_waits_for_it_then_reloads_once(tmp_path):
    reloads, busy = [], [False]
    path = str(tmp_path / "events.py")
    touch(path, "v = 1")
    monitor = FileMonitor(str(tmp_path), lambda: reloads.append(1), lambda: busy[0])
    assert monitor.look() == [] and reloads == []
    busy[0] = True
    touch(path, "v = 2")
    assert monitor.look() == [] and reloads == []          # a reload is under way
    touch(path, "v = 3")
    assert monitor.look() == []
    busy[0] = False
    assert monitor.look() == [path] and reloads == [1]     # one more, for both edits
    assert monitor.look() == [] and reloads == [1]


def test_watch_is_an_option_of_the_command_line():
    assert cli.parse(["start.py", "start", "--watch"]).watch
    assert not cli.parse(["start.py", "start", "-d"]).watch
    assert "--watch" in cli.USAGE


APP = """
    from geventman import Worker

    Worker.file_monitor = True
    hello = Worker("text://127.0.0.1:%d")
    hello.on_message = lambda connection, data: connection.send("hello " + data)
"""


def test_file_monitor_setting_watches_in_the_foreground_only(project):
    port = free_port()
    project.app("hello", APP % port)
    project.start(ports=[port])
    wait_until(lambda: "file monitor: watching" in project.log(), message="monitor on")
    assert project.stop().returncode == 0
    os.unlink(project.path("geventman.log"))
    assert project.start_daemon(ports=[port]).returncode == 0   # -d, not asked: off
    assert project.stop().returncode == 0
    assert "file monitor" not in project.log()
    assert project.start_daemon("--watch", ports=[port]).returncode == 0   # asked: on
    wait_until(lambda: "file monitor: watching" in project.log(), message="monitor on")
    assert project.stop().returncode == 0
    assert not port_open(port)


def login(chat, name):
    client = chat.client()
    client.send({"type": "login", "client_name": name, "room_id": "dev"})
    client.recv_type("login")
    return client


def test_editing_events_py_reloads_within_two_seconds_keeping_clients(tmp_path_factory):
    with running_demo(tmp_path_factory, "chat", "CHAT", args=["--watch"]) as chat:
        wait_until(lambda: "file monitor: watching" in chat.project.log(), message="monitor")
        with login(chat, "ada") as ada, login(chat, "bo") as bo:
            ada.send({"type": "dance"})
            assert ada.recv_type("error")["message"] == 'unknown message type "dance"'
            with open(chat.events_path()) as handle:
                source = handle.read()
            edited = source.replace('"unknown message type %s"', '"no dancing here: %s"')
            assert edited != source
            with open(chat.events_path(), "w") as handle:
                handle.write(edited)
            edited_at = time.monotonic()

            def answer_changed():
                ada.send({"type": "dance"})
                return ada.recv_type("error")["message"] == 'no dancing here: "dance"'
            wait_until(answer_changed, 2.0, interval=0.05, message="the edited answer")
            took = time.monotonic() - edited_at
            # Both clients are still connected, logged in, in their room.
            ada.send({"type": "say", "to_client_id": "all", "content": "still here"})
            for client in (ada, bo):
                assert client.recv_type("say")["content"] == "still here"
            assert bo.nothing_more(0.2)   # no logout: nobody left
        log = chat.project.log()
        assert "file monitor: applications/chat/events.py changed, reloading" in log
        assert "Traceback" not in log
        print("edit to new answer: %.2f s" % took)
