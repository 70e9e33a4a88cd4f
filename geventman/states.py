"""The states of a connection (Workerman's ``TcpConnection::STATUS_*``).

A bottom module: connections set these states and protocols read them (the HTTP
request timeout leaves a connection alone once it is no longer ESTABLISHED), so both
import them from here and no protocol reaches up into geventman.connection.
"""
import enum


class State(enum.Enum):
    INITIAL = 0
    CONNECTING = 1
    ESTABLISHED = 2
    CLOSING = 4
    CLOSED = 8


# Reading an Enum member off its class costs about 50 ns on Python 3.11 (it goes through
# EnumType.__getattr__), and a message passes a dozen such checks: the hot paths
# compare against these module-level names instead.
INITIAL, CONNECTING, ESTABLISHED, CLOSING, CLOSED = State
