"""The Autobahn echo server for WSGI WebSockets: a WebServer whose entry is a WSGI app
that echoes through environ["wsgi.websocket"] (gevent-websocket's interface), so the
cases go through the WSGI bridge and the same framing as websocket://.

The port is read from GEVENTMAN_AUTOBAHN_PORT. Limits are raised above the largest
Autobahn message (16 MiB in 9.1.6/9.2.6), as in tests/autobahn/echo.
"""
import os

from geventman import WebServer

web = WebServer("http://127.0.0.1:%s" % os.environ["GEVENTMAN_AUTOBAHN_PORT"])
web.name = "autobahn-wsgi"
web.count = 1
web.add_root("localhost", "www")
if os.environ.get("GEVENTMAN_AUTOBAHN_DEFLATE") == "0":
    web.websocket_deflate = False


def on_connect(connection):
    connection.max_package_size = 32 << 20
    connection.max_send_buffer_size = 32 << 20


web.on_connect = on_connect
