"""Client sessions: plain functions over dicts (the gateway keeps them, workers diff them).

A session is a dict of JSON values kept by the gateway that holds the client. A handler
sees a copy as ``Context.session``; afterwards only the top-level keys it changed go
back (``diff``), so an ``update_session`` that another process made meanwhile on other
keys survives. ``update_session`` merges recursively, as GatewayWorker's does.
"""


def merge(base, changes):
    """``changes`` merged into ``base`` (a new dict): nested dicts merge key by key,
    anything else replaces (PHP's array_replace_recursive, for string keys)."""
    result = dict(base)
    for key, value in changes.items():
        old = result.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            result[key] = merge(old, value)
        else:
            result[key] = value
    return result


def diff(before, after):
    """What a handler changed: ``{"set": {key: value}, "delete": [key]}``, or None."""
    changed = {key: value for key, value in after.items()
               if key not in before or before[key] != value}
    deleted = [key for key in before if key not in after]
    if not changed and not deleted:
        return None
    return {"set": changed, "delete": deleted}


def patch(base, changes):
    """Apply a ``diff`` to ``base`` (a new dict)."""
    result = dict(base)
    for key in changes.get("delete", ()):
        result.pop(key, None)
    result.update(changes.get("set", {}))
    return result
