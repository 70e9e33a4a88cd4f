"""The Gateway API outside business processes: a plain Worker of the application pushes
through a GatewayClient, with ``Gateway.secret_key`` for gateways that want a key."""
import websocket as websocket_client          # websocket-client

from conftest import LineClient, free_port, wait_until

START = """
    import os
    from geventman import Worker
    from geventman.client import GatewayError
    from geventman.gateway import BusinessWorker, Gateway, Store
    from geventman.lib import Gateway as api

    Store.path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store")
    gateway = Gateway("websocket://127.0.0.1:%d")
    gateway.start_port = %d
    gateway.secret_key = "k3y"
    worker = BusinessWorker()
    worker.secret_key = "k3y"

    api.secret_key = KEY                      # the GatewayClient of other processes
    pusher = Worker("text://127.0.0.1:%d")    # not a business process


    def push(connection, line):
        try:
            api.send_to_all(line)
            connection.send("sent to %%d" %% api.get_all_client_count())
        except GatewayError as error:
            connection.send(str(error))

    pusher.on_message = push
"""

EVENTS = """
    from geventman.lib import Gateway

    def on_connect(client_id):
        Gateway.send_to_current_client("hi")
"""


def run(project, key):
    port, push_port = free_port(), free_port()
    project.app("outside", (START % (port, free_port(), push_port)).replace("KEY", repr(key)),
                **{"events.py": EVENTS})
    project.start(ports=[port, push_port])
    page = websocket_client.create_connection("ws://127.0.0.1:%d/" % port, timeout=5)
    assert page.recv() == "hi"
    return page, LineClient(push_port)


def test_the_api_key_opens_a_keyed_gateway(project):
    page, pusher = run(project, "k3y")
    with pusher:
        assert wait_until(lambda: pusher.ask("news") == "sent to 1", message="a push")
    assert page.recv() == "news"
    page.close()


def test_without_it_the_gateway_refuses(project):
    page, pusher = run(project, "")
    with pusher:
        assert pusher.ask("news") == "gateway refused this client: wrong secret_key"
    wait_until(lambda: "wrong secret_key" in project.log(), message="the refusal logged")
    page.close()
