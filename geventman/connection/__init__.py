"""Connections: accepted TCP, outgoing TCP, and per-datagram UDP."""
from geventman.connection.async_tcp import AsyncTcpConnection
from geventman.connection.tcp import CONNECT_FAIL, SEND_FAIL, State, TcpConnection
from geventman.connection.udp import UdpConnection

__all__ = ["AsyncTcpConnection", "TcpConnection", "UdpConnection", "State",
           "CONNECT_FAIL", "SEND_FAIL"]
