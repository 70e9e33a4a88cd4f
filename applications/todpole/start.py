"""workerman-todpole on geventman: a pond where every browser is a tadpole.

Three services, each in its own processes: a websocket Gateway that holds the
browsers (port 8282), BusinessWorkers that run events.py, and a WebServer that serves
the game in public/ (http://127.0.0.1:8383/). The page asks /config.js which port the
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
GATEWAY_PORT = int(os.environ.get("TODPOLE_GATEWAY_PORT", 8282))
WEB_PORT = int(os.environ.get("TODPOLE_WEB_PORT", 8383))
START_PORT = int(os.environ.get("TODPOLE_START_PORT", 2400))    # inner ports 2400, 2401
PING_INTERVAL = float(os.environ.get("TODPOLE_PING_INTERVAL", 10))
Store.path = os.environ.get("GEVENTMAN_STORE_PATH") or Store.path

gateway = Gateway("websocket://0.0.0.0:%d" % GATEWAY_PORT)
gateway.name = "TodpoleGateway"
gateway.count = 2
gateway.lan_ip = "127.0.0.1"
gateway.start_port = START_PORT
# Ping every interval; the page answers {"type":"pong"}. A client silent for two
# intervals is dropped at the next tick, and its tadpole leaves the pond.
gateway.ping_interval = PING_INTERVAL
gateway.ping_not_response_limit = 2
gateway.ping_data = '{"type":"ping"}'

worker = BusinessWorker()
worker.name = "TodpoleBusinessWorker"
worker.count = 2

web = WebServer("http://0.0.0.0:%d" % WEB_PORT)
web.name = "TodpoleWeb"
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
