"""What Gateway and BusinessWorker share: the user's hooks beside the machinery's own."""
import os


def hook_property(name, internal, refusal=None):
    """A callback attribute whose reading gives the worker's own method ``internal``
    (which calls the user's hook at its point) and whose setting sets the user's hook:
    ``gateway.on_connect = f`` works as for any Worker, and the relay stays in place."""
    def get(self):
        return getattr(self, internal)

    def set_(self, value):
        if refusal and value is not None:
            raise AttributeError(refusal)
        self._hooks[name] = value
    return property(get, set_, doc="the user's %s hook (runs in this process)" % name)


def app_name(app_dir):
    """The name gateways and business workers of one application share in the Store:
    the application's folder name, so chat's workers never link to todpole's gateways."""
    return os.path.basename(os.path.normpath(app_dir)) or "app"
