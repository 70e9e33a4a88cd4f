"""The chat's business code: every message of every browser comes here.

Messages are JSON text frames in workerman-chat's formats (docs/chat.md lists them):
the browser logs in to a room with a name, says something to the room or to one
user, and answers the gateway's {"type":"ping"} with {"type":"pong"}. A room is a
Gateway group; the name and the room live in the client's session, so on_close
still knows them. Names and contents are sent as the user typed them (the page shows
them as text, never as HTML) but limited in length here.
"""
import json
import time

from geventman.lib import Context, Gateway

MAX_NAME = 32          # characters of a name
MAX_ROOM = 32          # characters of a room id
MAX_CONTENT = 2000     # characters of one message


class BadMessage(ValueError):
    """A message this chat cannot take; its text goes back to the sender."""


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
    session = Context.session or {}
    if "room_id" in session:
        Gateway.send_to_group(session["room_id"], dumps({
            "type": "logout", "from_client_id": client_id,
            "from_client_name": session["client_name"], "time": now()}))


def login(client_id, data):
    """Join a room: the room hears of it, the newcomer gets the room's user list."""
    if "room_id" in Context.session:
        raise BadMessage("already logged in")
    name = text(data, "client_name", MAX_NAME)
    room = text(data, "room_id", MAX_ROOM)
    # The session first, then the group: whoever finds us in the group finds our name.
    Gateway.update_session(client_id, {"room_id": room, "client_name": name})
    news = {"type": "login", "client_id": client_id, "client_name": name, "time": now()}
    Gateway.send_to_group(room, dumps(news))
    Gateway.join_group(client_id, room)
    sessions = Gateway.get_client_sessions_by_group(room)
    news["client_list"] = {other: session["client_name"]
                           for other, session in sessions.items() if "client_name" in session}
    news["client_list"][client_id] = name
    Gateway.send_to_current_client(dumps(news))


def say(client_id, data):
    """To the whole room (to_client_id "all"), or privately to one user of the room:
    then only that user and the sender get it."""
    session = Context.session
    if "room_id" not in session:
        raise BadMessage("log in first")
    target = data.get("to_client_id", "all")
    message = dumps({"type": "say", "from_client_id": client_id,
                     "from_client_name": session["client_name"], "to_client_id": target,
                     "content": text(data, "content", MAX_CONTENT, strip=False), "time": now()})
    if target == "all":
        return Gateway.send_to_group(session["room_id"], message)
    other = Gateway.get_session(target) if isinstance(target, str) else None
    if not other or other.get("room_id") != session["room_id"]:
        raise BadMessage("no such user in this room: %s" % json.dumps(target)[:40])
    Gateway.send_to_client(target, message)
    if target != client_id:
        Gateway.send_to_current_client(message)


def pong(client_id, data):
    """The answer to the gateway's ping: that it arrived is all the heartbeat needs."""


HANDLERS = {"login": login, "say": say, "pong": pong}


def text(data, key, limit, strip=True):
    """A string field that is not blank, of at most ``limit`` characters (a number is
    taken as its text: workerman-chat's pages send room_id 1)."""
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadMessage("%s is missing" % key)
    if len(value) > limit:
        raise BadMessage("%s is longer than %d characters" % (key, limit))
    return value.strip() if strip else value


def error(message):
    Gateway.send_to_current_client(dumps({"type": "error", "message": message}))


def dumps(data):
    return json.dumps(data, ensure_ascii=False)


def now():
    return time.strftime("%Y-%m-%d %H:%M:%S")
