"""Store: where business workers and GatewayClient find the live gateways.

Each gateway process keeps an entry ``lan_ip:port`` under its application's name and
refreshes it every ``Store.refresh`` seconds; an entry not refreshed for ``Store.ttl``
seconds no longer counts, so a gateway that was killed drops out by itself, and one
that stops removes its entry at once. Three drivers, chosen with ``Store.driver``:

* ``file`` (default): one machine. A folder per application under ``Store.path``
  (default ``<tempdir>/geventman-store``) with one file per gateway, whose modification
  time is the refresh.
* ``memcached``: several machines; pymemcache, ``Store.servers = ["10.0.0.5:11211"]``.
  A key per gateway that expires after ``ttl`` (the memcached server keeps the time, so
  the hosts' clocks do not matter) and a list of addresses per application, changed
  with gets/cas.
* ``redis``: several machines; redis-py, ``Store.servers = ["10.0.0.5:6379"]``. A key per
  gateway with ``EX ttl`` and a set of addresses per application.

Settings are class attributes, as GatewayWorker's statics were; ``Store.open()`` gives a
driver for them. This module does not import gevent: GatewayClient uses it from any
Python program (patched or not, redis-py and pymemcache are cooperative under gevent).
"""
import json
import os
import re
import tempfile
import time

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class StoreError(RuntimeError):
    """The store could not be read or written (server down, bad setting)."""


class Store:
    driver = "file"
    path = None            # file driver; default <tempdir>/geventman-store
    servers = []           # memcached / redis: ["host:port", ...]; default 127.0.0.1
    ttl = 3.0              # seconds an entry lives without a refresh
    refresh = 1.0          # seconds between a gateway's refreshes
    prefix = "geventman"   # key prefix (memcached, redis)
    timeout = 2.0          # seconds for one call to a store server

    @classmethod
    def open(cls, driver=None, path=None, servers=None):
        """A driver object for the class settings (or the given ones)."""
        name = (driver or cls.driver).lower()
        if name == "file":
            return FileStore(path or cls.path or default_path(), cls.ttl)
        if name == "memcached":
            return MemcachedStore(_servers(servers or cls.servers, 11211), cls.ttl,
                                  cls.prefix, cls.timeout)
        if name == "redis":
            return RedisStore(_servers(servers or cls.servers, 6379), cls.ttl, cls.prefix,
                              cls.timeout)
        raise StoreError("unknown Store.driver %r: file, memcached or redis" % name)

    @classmethod
    def describe(cls):
        name = cls.driver.lower()
        if name == "file":
            return "file %s" % (cls.path or default_path())
        return "%s %s" % (name, ",".join(cls.servers) or "127.0.0.1")


def default_path():
    return os.path.join(tempfile.gettempdir(), "geventman-store")


def _servers(servers, port):
    if isinstance(servers, str):
        servers = [servers]
    result = []
    for server in servers or ["127.0.0.1:%d" % port]:
        host, _, number = server.rpartition(":")
        result.append((host, int(number)) if host else (server, port))
    return result


def safe_name(app):
    """An application name as a file name / key part."""
    return _SAFE.sub("_", app) or "_"


class FileStore:
    def __init__(self, path, ttl):
        self.path, self.ttl = path, ttl

    def _entry(self, app, address):
        return os.path.join(self.path, safe_name(app), address.replace(":", "_"))

    def add(self, app, address):
        entry = self._entry(app, address)
        try:
            os.utime(entry)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(entry), exist_ok=True)
            with open(entry, "w") as handle:
                handle.write(address)

    def remove(self, app, address):
        try:
            os.unlink(self._entry(app, address))
        except FileNotFoundError:
            pass

    def addresses(self, app):
        folder = os.path.join(self.path, safe_name(app))
        now = time.time()
        live = []
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        for name in names:
            entry = os.path.join(folder, name)
            try:
                fresh = now - os.stat(entry).st_mtime <= self.ttl
                if fresh:
                    with open(entry) as handle:
                        live.append(handle.read().strip())
                else:
                    os.unlink(entry)  # a gateway that died: tidy up
            except OSError:
                continue
        return sorted(address for address in live if address)

    def apps(self):
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        return [name for name in names if self.addresses(name)]


class MemcachedStore:
    def __init__(self, servers, ttl, prefix, timeout):
        from pymemcache.client.base import Client
        from pymemcache.client.hash import HashClient
        # default_noreply=False: pymemcache's pooled default is noreply sets, which
        # measured 30x slower here with stale reads (DESIGN.md section 5).
        options = dict(default_noreply=False, connect_timeout=timeout, timeout=timeout)
        if len(servers) == 1:
            self.client = Client(servers[0], **options)
        else:
            self.client = HashClient(servers, **options)
        self.ttl, self.prefix = max(1, int(round(ttl))), prefix

    def _key(self, *parts):
        return ":".join((self.prefix,) + tuple(safe_name(part) for part in parts))

    def add(self, app, address):
        try:
            self.client.set(self._key(app, "gw", address), b"1", expire=self.ttl)
            self._change_list(self._key(app, "gateways"), add=address)
            self._change_list(self._key("apps"), add=app)
        except Exception as error:
            raise StoreError("memcached: %r" % error) from error

    def remove(self, app, address):
        try:
            self.client.delete(self._key(app, "gw", address))
            self._change_list(self._key(app, "gateways"), remove=address)
        except Exception as error:
            raise StoreError("memcached: %r" % error) from error

    def _change_list(self, key, add=None, remove=None, keep=None):
        """Change a JSON list with gets/cas, again on a conflict."""
        for _ in range(20):
            raw, token = self.client.gets(key)
            items = json.loads(raw) if raw else []
            new = [item for item in items if item != remove and (keep is None or item in keep)]
            if add is not None and add not in new:
                new.append(add)
            if new == items and raw is not None:
                return
            if raw is None:
                if self.client.add(key, json.dumps(new).encode(), noreply=False):
                    return
            elif self.client.cas(key, json.dumps(new).encode(), token, noreply=False):
                return
        raise StoreError("memcached: %s changed too often" % key)

    def addresses(self, app):
        try:
            raw = self.client.get(self._key(app, "gateways"))
            listed = json.loads(raw) if raw else []
            if not listed:
                return []
            keys = {self._key(app, "gw", address): address for address in listed}
            found = self.client.get_many(list(keys))
        except Exception as error:
            raise StoreError("memcached: %r" % error) from error
        live = sorted(keys[key] for key in found)
        if len(live) < len(listed):
            try:
                self._change_list(self._key(app, "gateways"), keep=set(live))
            except Exception:
                pass  # tidying only
        return live

    def apps(self):
        raw = self.client.get(self._key("apps"))
        return [app for app in (json.loads(raw) if raw else []) if self.addresses(app)]


class RedisStore:
    def __init__(self, servers, ttl, prefix, timeout):
        import redis
        host, port = servers[0]  # one server (or a proxy / sentinel's primary)
        self.client = redis.Redis(host=host, port=port, socket_timeout=timeout,
                                  socket_connect_timeout=timeout)
        self.ttl, self.prefix = max(1, int(round(ttl))), prefix
        self._error = redis.RedisError

    def _key(self, *parts):
        return ":".join((self.prefix,) + tuple(safe_name(part) for part in parts))

    def add(self, app, address):
        try:
            pipe = self.client.pipeline()
            pipe.set(self._key(app, "gw", address), b"1", ex=self.ttl)
            pipe.sadd(self._key(app, "gateways"), address)
            pipe.sadd(self._key("apps"), app)
            pipe.execute()
        except self._error as error:
            raise StoreError("redis: %s" % error) from error

    def remove(self, app, address):
        try:
            pipe = self.client.pipeline()
            pipe.delete(self._key(app, "gw", address))
            pipe.srem(self._key(app, "gateways"), address)
            pipe.execute()
        except self._error as error:
            raise StoreError("redis: %s" % error) from error

    def addresses(self, app):
        try:
            listed = sorted(member.decode() for member in
                            self.client.smembers(self._key(app, "gateways")))
            if not listed:
                return []
            found = self.client.mget([self._key(app, "gw", address) for address in listed])
            dead = [address for address, value in zip(listed, found) if value is None]
            if dead:
                self.client.srem(self._key(app, "gateways"), *dead)
        except self._error as error:
            raise StoreError("redis: %s" % error) from error
        return [address for address, value in zip(listed, found) if value is not None]

    def apps(self):
        names = sorted(member.decode() for member in self.client.smembers(self._key("apps")))
        return [app for app in names if self.addresses(app)]
