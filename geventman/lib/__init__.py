"""``from geventman.lib import Gateway, Context``: the import path GatewayWorker users know
(``GatewayWorker\\Lib\\Gateway``); both live in geventman/gateway/api.py."""
from geventman.gateway.api import Context, Gateway

__all__ = ["Gateway", "Context"]
