"""Process titles (``ps`` shows them), via setproctitle when it is installed."""
try:
    from setproctitle import setproctitle as _set
except ImportError:  # optional: titles are a convenience
    _set = None


def set_title(title):
    if _set is not None:
        _set(title)
