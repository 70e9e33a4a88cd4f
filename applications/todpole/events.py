"""The pond's business code: a relay, as workerman-todpole's server is. It keeps no
world: each browser says where its tadpole is (``update``) and what it says
(``message``), and everyone else hears it; ``welcome`` gives a newcomer its id and
``closed`` tells the pond that a tadpole left. Formats: docs/todpole.md.
"""
import json
import math

from geventman.lib import Gateway

MAX_NAME = 32            # characters of a name
MAX_MESSAGE = 200        # characters of a chat bubble
MAX_COORDINATE = 1e6     # the pond is large, not endless


class BadMessage(ValueError):
    """A message the pond cannot take; its text goes back to the sender."""


def on_connect(client_id):
    Gateway.send_to_current_client(dumps({"type": "welcome", "id": client_id}))


def on_message(client_id, message):
    try:
        data = json.loads(message)
    except ValueError:
        return error("a message must be JSON")
    if not isinstance(data, dict):
        return error("a message must be a JSON object")
    handler = HANDLERS.get(data.get("type"))
    if handler is None:
        return error("unknown message type %s" % json.dumps(data.get("type"))[:40])
    try:
        handler(client_id, data)
    except BadMessage as bad:
        error(str(bad))


def on_close(client_id):
    Gateway.send_to_all(dumps({"type": "closed", "id": client_id}))


def update(client_id, data):
    """Where the tadpole is now, to every other tadpole."""
    name = data.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        name = "Guest." + client_id[-4:]
    elif not isinstance(name, str) or len(name) > MAX_NAME:
        raise BadMessage("name must be text of at most %d characters" % MAX_NAME)
    Gateway.send_to_all(dumps({
        "type": "update", "id": client_id,
        "angle": number(data, "angle", 3), "momentum": number(data, "momentum", 3),
        "x": number(data, "x", 1), "y": number(data, "y", 1),
        "life": 1, "name": name.strip(), "authorized": False}), exclude=[client_id])


def message(client_id, data):
    """A chat bubble, to every other tadpole."""
    text = data.get("message")
    if not isinstance(text, str) or not text.strip():
        raise BadMessage("message is missing")
    if len(text) > MAX_MESSAGE:
        raise BadMessage("message is longer than %d characters" % MAX_MESSAGE)
    Gateway.send_to_all(dumps({"type": "message", "id": client_id, "message": text}),
                        exclude=[client_id])


def ignore(client_id, data):
    """login (workerman-todpole's pages send it, its server ignores it) and pong."""


HANDLERS = {"update": update, "message": message, "login": ignore, "pong": ignore}


def number(data, key, digits):
    """A finite number (JSON's NaN and Infinity are refused: a page could not parse
    them back), rounded as workerman-todpole's page rounds it."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or abs(value) > MAX_COORDINATE:
        raise BadMessage("%s must be a number" % key)
    return round(float(value), digits)


def error(text):
    Gateway.send_to_current_client(dumps({"type": "error", "message": text}))


def dumps(data):
    return json.dumps(data, ensure_ascii=False)
