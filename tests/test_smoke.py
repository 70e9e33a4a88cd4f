"""The README's demo: applications/hello answers "tom" with "hello tom"."""
from conftest import LineClient, free_port


def test_text_echo_tom(project):
    port = free_port()
    project.app("hello", """
        from geventman import Worker

        worker = Worker("text://127.0.0.1:%d")
        worker.count = 2
        worker.on_message = lambda connection, data: connection.send("hello " + data)
    """ % port)
    project.start(ports=[port])
    with LineClient(port) as client:
        assert client.ask("tom") == "hello tom"
    result = project.stop()
    assert result.returncode == 0, result.stdout
    assert project.master_pid() is None
