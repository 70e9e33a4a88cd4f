"""The Autobahn echo server: every message comes back as it came (text or binary).

The port is read from GEVENTMAN_AUTOBAHN_PORT. Limits are raised above the largest
Autobahn message (16 MiB in 9.1.6/9.2.6); everything else is the default, so the
run checks what users get.
"""
import os

from geventman import Worker

worker = Worker("websocket://127.0.0.1:%s" % os.environ["GEVENTMAN_AUTOBAHN_PORT"])
worker.name = "autobahn"
worker.count = 1
if os.environ.get("GEVENTMAN_AUTOBAHN_DEFLATE") == "0":
    worker.websocket_deflate = False


def on_connect(connection):
    connection.max_package_size = 32 << 20
    connection.max_send_buffer_size = 32 << 20


worker.on_connect = on_connect
worker.on_message = lambda connection, data: connection.send(data)
