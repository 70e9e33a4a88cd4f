"""The gateway's heartbeat as one pure function (the manual's 心跳检测 section).

The gateway runs one timer per process, every ``ping_interval`` seconds; for each
client it keeps ``silent``, the number of ticks since the client last sent anything
(any message resets it to 0). Three modes, by the two other settings:

* ``ping_data`` set, ``ping_not_response_limit`` > 0: ping every tick; a client that
  stays silent for ``limit`` ticks is dropped at the next one.
* ``ping_data`` empty, limit > 0: send nothing; the client must send something (its
  own heartbeat) within ``limit`` ticks or it is dropped.
* ``ping_data`` set, limit 0: ping every tick, never drop (TCP finds dead peers).

So a silent client goes after between ``limit`` and ``limit + 1`` intervals.
"""
KEEP, PING, DROP = "keep", "ping", "drop"


def tick(silent, limit, ping_data):
    """One tick for one client: (new silent count, KEEP | PING | DROP)."""
    if limit > 0 and silent >= limit:
        return silent, DROP
    return silent + 1, PING if ping_data else KEEP
