"""Gateway/BusinessWorker: clients held by gateways that never reload, business code in
BusinessWorker processes that do.

``from geventman.gateway import Gateway, BusinessWorker, Store``. Names are imported
lazily: ``Store`` and ``wire`` work without gevent (GatewayClient uses them from any
Python program), while Gateway and BusinessWorker need a patched process.
"""
__all__ = ["Gateway", "BusinessWorker", "Store"]


def __getattr__(name):
    if name == "Gateway":
        from geventman.gateway.gateway import Gateway
        return Gateway
    if name == "BusinessWorker":
        from geventman.gateway.business import BusinessWorker
        return BusinessWorker
    if name == "Store":
        from geventman.gateway.store import Store
        return Store
    raise AttributeError("module 'geventman.gateway' has no attribute %r" % name)
