"""Demo: a page served by WebServer that talks to a websocket:// worker.

Open http://127.0.0.1:8080/ : the page connects to ws://<host>:2346, sends the name
you type and shows the answer ("tom" -> "hello tom"). /time.py is a Python page.
"""
from geventman import WebServer, Worker

web = WebServer("http://0.0.0.0:8080")
web.name = "web"
web.count = 2
web.add_root("localhost", "public")

greeter = Worker("websocket://0.0.0.0:2346")
greeter.name = "greeter"
greeter.count = 2
greeter.on_message = lambda connection, data: connection.send("hello " + data)
