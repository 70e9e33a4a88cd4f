# An entry script: what it prints is the body; `request` and `http` are given.
import time

http.header("Content-Type: text/plain; charset=utf-8")
print("server time:", time.strftime("%Y-%m-%d %H:%M:%S"))
print("you asked for:", request.server["REQUEST_URI"])
