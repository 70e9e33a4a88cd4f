"""What ``reload`` picks up, as docs/getting-started.md#what-reload-picks-up says:
code first imported in a child is read again, what the master loaded is not.

A handler module imported in ``on_worker_start`` (and the negative, an edit to
start.py) is the ``reload`` example of tests/test_docs.py; WebServer entry files are
tests/test_http_webserver.py. Here: a protocol in ``protocols/``, a module that
start.py also imports at the top, and a protocol file that exists but fails.
"""
from conftest import LineClient, app_source, free_port, wait_until

SHOUT = '''
class Shout:
    @staticmethod
    def input(buffer):
        return buffer.find(b"\\n") + 1

    @staticmethod
    def decode(package):
        return package.decode().strip()

    @staticmethod
    def encode(data):
        return data.upper().encode() + b"\\n"
'''

SHOUT_START = '''
from geventman import Worker

worker = Worker("shout://127.0.0.1:PORT")
worker.count = 2
worker.on_message = lambda connection, data: connection.send(data)
'''


def edit(project, relative, old, new):
    """Replace ``old`` by ``new`` (of another length, so no stale .pyc is used)."""
    path = project.path(relative)
    with open(path) as handle:
        source = handle.read()
    assert old in source and len(old) != len(new)
    with open(path, "w") as handle:
        handle.write(source.replace(old, new))


def reload_all(project, count=2):
    old = set(project.wait_children(count))
    project.command("reload", check=True)
    project.wait_children(count, timeout=15, exclude=old)


def test_reload_picks_up_an_application_protocol(project):
    port = free_port()
    project.app("shout", app_source(SHOUT_START, port), protocols__shout_py=SHOUT)
    project.start(ports=[port])
    with LineClient(port) as client:
        assert client.ask("hi") == "HI"
    edit(project, "applications/shout/protocols/shout.py",
         'data.upper().encode() + b"\\n"', 'b"<" + data.upper().encode() + b">\\n"')
    reload_all(project)
    for _ in range(4):      # whichever child takes the connection
        with LineClient(port) as client:
            assert client.ask("hi") == "<HI>"


IMPORTED_TWICE = '''
from geventman import Worker

from applications.twice import answers     # at the top: loaded in the master

worker = Worker("text://127.0.0.1:PORT")
worker.count = 2


def on_worker_start(worker):
    from applications.twice import answers  # the master's copy: already imported
    worker.on_message = answers.on_message


worker.on_worker_start = on_worker_start
'''

ANSWERS = '''
def on_message(connection, data):
    connection.send("v1: " + data)
'''


def test_reload_keeps_a_module_the_master_imported(project):
    port = free_port()
    project.app("twice", app_source(IMPORTED_TWICE, port), answers_py=ANSWERS)
    project.start(ports=[port])
    with LineClient(port) as client:
        assert client.ask("x") == "v1: x"
    edit(project, "applications/twice/answers.py", '"v1: "', '"version 2: "')
    reload_all(project)
    for _ in range(4):
        with LineClient(port) as client:
            assert client.ask("x") == "v1: x"


def test_a_protocol_file_that_fails_is_an_error_of_the_children(project):
    """The master checks only that protocols/<name>.py exists: start succeeds, each
    child logs the error and is respawned, and reads the file again when it is."""
    port = free_port()
    project.app("shout", app_source(SHOUT_START, port),
                protocols__shout_py=SHOUT.replace("class Shout:", "class Shout(:"))
    result = project.start_daemon()
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: "worker[none] on_worker_start failed" in project.log(),
               message="the child's error in the log")
    assert "SyntaxError" in project.log()
    edit(project, "applications/shout/protocols/shout.py", "class Shout(:", "class Shout:")
    wait_until(lambda: port_answers(port), timeout=15, message="a respawned child serves")


def port_answers(port):
    try:
        with LineClient(port, timeout=2) as client:
            return client.ask("hi") == "HI"
    except OSError:
        return False
