"""The manual's first example: a text server that answers "tom" with "hello tom"."""
from geventman import Worker

hello = Worker("text://0.0.0.0:2347")
hello.name = "hello"
hello.count = 2


def on_message(connection, data):
    connection.send("hello " + data)


hello.on_message = on_message
