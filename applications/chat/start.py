"""workerman-chat on geventman: a chat with rooms and private messages.

Three services, each in its own processes: a websocket Gateway that holds the
browsers (port 7272), BusinessWorkers that run events.py, and a WebServer that serves
the page in public/ (http://127.0.0.1:55151/). The page asks /config.js which port the
gateway listens on, so changing a port here is enough.

Copy this folder to applications/<yours>, change the ports (and the names below), and
you have a service of your own: see README.md.
"""
import json
import os

from geventman import WebServer
from geventman.gateway import BusinessWorker, Gateway, Store
from geventman.protocols.http import Response

# The environment may move the ports (the tests run the demo on free ones).
GATEWAY_PORT = int(os.environ.get("CHAT_GATEWAY_PORT", 7272))
WEB_PORT = int(os.environ.get("CHAT_WEB_PORT", 55151))
START_PORT = int(os.environ.get("CHAT_START_PORT", 2300))    # inner ports 2300, 2301
PING_INTERVAL = float(os.environ.get("CHAT_PING_INTERVAL", 10))
Store.path = os.environ.get("GEVENTMAN_STORE_PATH") or Store.path

gateway = Gateway("websocket://0.0.0.0:%d" % GATEWAY_PORT)
gateway.name = "ChatGateway"
gateway.count = 2
gateway.lan_ip = "127.0.0.1"
gateway.start_port = START_PORT
# Ping every interval; the page answers {"type":"pong"}. A client silent for two
# intervals is dropped at the next tick (a browser that vanished without a FIN).
gateway.ping_interval = PING_INTERVAL
gateway.ping_not_response_limit = 2
gateway.ping_data = '{"type":"ping"}'

worker = BusinessWorker()
worker.name = "ChatBusinessWorker"
worker.count = 2

web = WebServer("http://0.0.0.0:%d" % WEB_PORT)
web.name = "ChatWeb"
web.count = 1
web.add_root("localhost", "public")


def serve(connection, request):
    """/config.js tells the page where the gateway is; the rest are files of public/."""
    if request.path == "/config.js":
        script = "window.GATEWAY_PORT = %s;\n" % json.dumps(GATEWAY_PORT)
        return connection.send(Response(200, [
            ("Content-Type", "application/javascript; charset=utf-8"),
            ("Cache-Control", "no-store")], script))
    return web.handle(connection, request)


web.on_message = serve
