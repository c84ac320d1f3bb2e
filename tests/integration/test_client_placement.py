"""Apps on each Python memcached client, live: the app ``set``s 3,000 keys through its own
library over real nodes, rows change in PostgreSQL, and the daemon configured with that
``client``/``behaviors`` removes every changed key from the node that actually holds it.
``invalidator replay`` over the same changes shows the plan: every planned node is the one
the app's library wrote the key to (read back from each node directly).

Django apps go through Django's own ``PyMemcacheCache`` and ``PyLibMCCache`` backends:
``cache.set("user:7")`` stores ``myapp:1:user:7`` (KEY_PREFIX:VERSION:key), and the rule's
template ``myapp:1:user:{id}`` (examples/django.yaml) must name exactly that key."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import memcache
import pylibmc
import pytest
from django.conf import settings
from django.core.cache.backends.memcached import PyLibMCCache, PyMemcacheCache
from pymemcache.client.base import Client

from tests.cache_aside import app_client, wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

ROWS = 3000
DJANGO_CACHE = {"KEY_PREFIX": "myapp", "VERSION": 1}  # examples/django.yaml


def _weighted(servers: Sequence[str], sep: str) -> list[str]:
    return [f"{s}{sep}{i + 1}" for i, s in enumerate(servers)]


AppClient = tuple[Callable[[str, bytes], object], Callable[[], object]]  # set, close


class AppSide:
    """How an app on one client library writes (``set``) and how the daemon is told to
    place like it (its pool settings and server strings)."""

    def __init__(
        self,
        make: Callable[[list[str]], AppClient],
        pool: dict[str, Any],
        weights: str | None = None,
        stored: str = "user:{}",
    ):
        self.make = make
        self.pool = pool
        self.weights = weights  # how the app writes "host:port" + weight, None: no weights
        self.stored = stored  # the key memcached gets for the app's "user:{id}"

    def app_servers(self, servers: Sequence[str]) -> list[str]:
        return _weighted(servers, self.weights) if self.weights else list(servers)

    def config_servers(self, servers: Sequence[str]) -> list[str]:
        return _weighted(servers, " ") if self.weights else list(servers)


def _pymemcache(servers: list[str]) -> AppClient:
    client = app_client(servers)
    return (lambda key, value: client.set(key, value, noreply=False)), client.close


def _pylibmc(behaviors: dict[str, Any]) -> Callable[[list[str]], AppClient]:
    def make(servers: list[str]) -> AppClient:
        client = pylibmc.Client(servers, behaviors=behaviors)
        return client.set, client.disconnect_all

    return make


def _python_memcached(servers: list[str]) -> AppClient:
    client = memcache.Client(servers)
    return client.set, client.disconnect_all


def _django(
    backend: type[PyMemcacheCache | PyLibMCCache], options: dict[str, Any]
) -> Callable[[list[str]], AppClient]:
    """Django's own cache backend, as settings.CACHES would build it."""

    def make(servers: list[str]) -> AppClient:
        if not settings.configured:
            settings.configure()
        cache = backend(servers, {**DJANGO_CACHE, "OPTIONS": options})
        return (lambda key, value: cache.set(key, value, timeout=300)), cache.close

    return make


APPS = {
    "pymemcache": AppSide(_pymemcache, {"client": "pymemcache"}),
    "pylibmc": AppSide(_pylibmc({}), {"client": "pylibmc"}),
    "pylibmc-ketama": AppSide(
        _pylibmc({"ketama": True}), {"client": "pylibmc", "behaviors": {"ketama": True}}
    ),
    "pylibmc-ketama-weighted": AppSide(
        _pylibmc({"ketama": True}), {"client": "pylibmc", "behaviors": {"ketama": True}}, ":"
    ),
    "python-memcached": AppSide(_python_memcached, {"client": "python-memcached"}),
    "python-memcached-weighted": AppSide(
        lambda servers: _python_memcached_weighted(servers),
        {"client": "python-memcached"},
        " ",
    ),
    "django-pymemcachecache": AppSide(
        _django(PyMemcacheCache, {}), {"client": "pymemcache"}, stored="myapp:1:user:{}"
    ),
    "django-pylibmccache-ketama": AppSide(
        _django(PyLibMCCache, {"binary": True, "behaviors": {"ketama": True}}),
        {"client": "pylibmc", "behaviors": {"ketama": True}},
        stored="myapp:1:user:{}",
    ),
}


def _python_memcached_weighted(servers: list[str]) -> AppClient:
    """memcache.Client takes weights as ("host:port", weight) tuples."""
    pairs = [(s.split()[0], int(s.split()[1])) for s in servers]
    client = memcache.Client(pairs)
    return client.set, client.disconnect_all


@pytest.fixture
def nodes(memcached: MemcachedPool) -> Iterator[dict[str, Client]]:
    """One direct client per node, to read where each key really is."""
    clients = {s: Client(s, no_delay=True, connect_timeout=2, timeout=2) for s in memcached.servers}
    yield clients
    for client in clients.values():
        client.close()


def holders(nodes: dict[str, Client], keys: Sequence[str]) -> dict[str, list[str]]:
    """Key → the nodes holding it now."""
    held: dict[str, list[str]] = {k: [] for k in keys}
    for server, client in nodes.items():
        for key, _ in client.get_many(list(keys)).items():
            held[key].append(server)
    return held


def replay_plan(config: Path, wal: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "invalidator", "replay", "--config", str(config), str(wal)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("name", list(APPS))
def test_daemon_deletes_where_the_apps_client_wrote(
    name: str,
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    nodes: dict[str, Client],
) -> None:
    """Every key of a changed row leaves the node the app's library wrote it to; no other
    key goes; the plan names that node for every key."""
    side = APPS[name]
    users_db.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.com', 'user ' || g"
        " FROM generate_series(501, %s) g",
        (ROWS,),
    )
    daemon = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="placement",
        servers=side.config_servers(memcached.servers),
        rules=[{"table": "users", "on": ["update"], "keys": [side.stored.replace("{}", "{id}")]}],
        pool={k: v for k, v in side.pool.items()},
    )
    try:
        daemon.start()
        users_db.execute("SELECT pg_create_logical_replication_slot('observer', 'wal2json')")
        app_set, app_close = side.make(side.app_servers(memcached.servers))
        try:
            for i in range(1, ROWS + 1):
                app_set(f"user:{i}", b"cached")
        finally:
            app_close()
        keys = [side.stored.format(i) for i in range(1, ROWS + 1)]
        before = holders(nodes, keys)
        assert {k: v for k, v in before.items() if len(v) != 1} == {}, "a key not on one node"
        wrote_to = {k: v[0] for k, v in before.items()}
        assert len(set(wrote_to.values())) == len(nodes)  # keys on every node: misses show

        users_db.execute("UPDATE users SET name = name || '!' WHERE id % 3 = 0")
        changed = [side.stored.format(i) for i in range(3, ROWS + 1, 3)]
        kept = sorted(set(keys) - set(changed))

        def gone() -> bool:
            return all(not v for v in holders(nodes, changed).values())

        assert wait_until(gone, timeout=30), "changed keys still cached: " + str(
            sorted(k for k, v in holders(nodes, changed).items() if v)[:10]
        )
    finally:
        daemon.stop()
    assert [k for k, v in holders(nodes, kept).items() if v != [wrote_to[k]]] == []

    wal = tmp_path / "changes.jsonl"
    rows = users_db.execute(
        "SELECT data FROM pg_logical_slot_peek_changes('observer', NULL, NULL,"
        " 'format-version', '2', 'include-lsn', '1')"
    )
    wal.write_text("".join(row[0] + "\n" for row in rows))
    plan = replay_plan(daemon.config, wal)
    assert sorted(op["key"] for op in plan) == sorted(changed)
    assert [op for op in plan if op["node"] != wrote_to[op["key"]]] == []
