"""Which business worker gets a client's events: the default router and its rule.

A router is ``router(links, client, cmd, data) -> link``: ``links`` maps a worker key to
the live link of each business worker process, ``client`` is the client connection.
The default keeps a client on one worker for its whole life (its messages are handled
in order there), sends a new client to the worker that holds the fewest, and moves a
client whose worker went away. ``link.clients`` counts the clients routed to a link.
"""


def least_loaded(links):
    """The link with the fewest clients (the first one on a tie), or None."""
    best = None
    for link in links.values():
        if best is None or link.clients < best.clients:
            best = link
    return best


def sticky(links, client, cmd=None, data=None):
    """The default router (GatewayWorker's router_least_connections with stickiness)."""
    link = client.route
    if link is not None and link.worker_key in links and links[link.worker_key] is link:
        return link
    return least_loaded(links)


def per_event(links, client, cmd=None, data=None):
    """Round robin per event: for stateless handlers (messages of one client may then
    be handled out of order, by different processes)."""
    if not links:
        return None
    keys = sorted(links)
    per_event.turn = (getattr(per_event, "turn", -1) + 1) % len(keys)
    return links[keys[per_event.turn]]
