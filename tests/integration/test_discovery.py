"""DNS SRV discovery against a real DNS server (dnsmasq) whose records change mid-stream."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from tests.cache_aside import owner_of
from tests.cache_aside import wait_until as _wait_until
from tests.daemon_process import DaemonProcess
from tests.dns_server import SRV_NAME, DnsServer
from tests.services import MemcachedPool, PgDatabase, ServiceError

DOMAIN = "memcached.test.internal"


# This file's waits allow 15 s (the shared default is 10 s).
wait_for = partial(_wait_until, timeout=15.0)


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.close()


@pytest.fixture
def four_nodes() -> Iterator[MemcachedPool]:
    pool = MemcachedPool(4)
    try:
        pool.start()
    except ServiceError as err:
        pytest.fail(str(err), pytrace=False)
    yield pool
    pool.stop()


@pytest.fixture
def resolve_test_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps connect to the pods' stable names; here those names live on 127.0.0.1."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(DOMAIN):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def names(pool: MemcachedPool, indexes: list[int]) -> list[tuple[str, int]]:
    return [(f"memcached-{i}.{DOMAIN}", pool.nodes[i].port) for i in indexes]


def app_for(records: list[tuple[str, int]]) -> HashClient:
    """An app whose MEMCACHED_SERVERS are the pods' stable names, as in the seed guide."""
    return HashClient(
        [f"{t}:{p}" for t, p in records],
        use_pooling=False,
        no_delay=True,
        default_noreply=False,
        connect_timeout=0.5,
        timeout=0.5,
        ignore_exc=True,
    )


def cached_on(pool: MemcachedPool, records: list[tuple[str, int]], keys: list[str]) -> list[str]:
    """The keys an app on ``records`` left on the node pymemcache's own HashClient owns for
    them (each record's name mapped to its node), read there directly; the others missing."""
    by_name = {f"memcached-{i}.{DOMAIN}:{n.port}": n.server for i, n in enumerate(pool.nodes)}
    found = []
    for key in keys:
        owner = by_name[owner_of([f"{t}:{p}" for t, p in records], key)]
        client = Client(owner, no_delay=True, connect_timeout=1, timeout=1)
        try:
            if client.get(key) is not None:
                found.append(key)
        finally:
            client.close()
    return found


def cached_anywhere(pool: MemcachedPool, keys: list[str]) -> list[str]:
    left = set()
    for node in pool.nodes:
        if not node.running:
            continue
        client = Client(node.server, no_delay=True, connect_timeout=1, timeout=1)
        try:
            left.update(k for k in keys if client.get(k) is not None)
        finally:
            client.close()
    return sorted(left)


@pytest.mark.usefixtures("resolve_test_names")
def test_scaling_3_to_4_to_2_during_a_stream_leaves_no_stale_key(
    tmp_path: Path, pg_db: PgDatabase, four_nodes: MemcachedPool, dns_server: DnsServer
) -> None:
    """Membership follows the SRV records; after each change, keys cached by apps on the
    old ring and on the new ring are all deleted (grace period on old owners)."""
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    pg_db.execute("INSERT INTO users SELECT g, 'n' FROM generate_series(1, 300) g")
    dns_server.set(names(four_nodes, [0, 1, 2]))
    proc = DaemonProcess.create(
        tmp_path,
        dsn=pg_db.dsn,
        slot="disc",
        servers=["unused:1"],
        rules=[{"table": "users", "keys": ["user:{id}"]}],
    )
    config = json.loads(proc.config.read_text())
    config["pools"]["default"] = {
        "discover": {
            "srv": SRV_NAME,
            "every": "0.2s",
            "grace": "30s",
            "nameservers": [dns_server.nameserver],
        }
    }
    proc.config.write_text(json.dumps(config))
    keys_changed: list[str] = []

    def round_(
        old_ring: list[tuple[str, int]], new_ring: list[tuple[str, int]], ids: range
    ) -> None:
        old_app, new_app = app_for(old_ring), app_for(new_ring)
        try:
            for i in ids:
                old_app.set(f"user:{i}", b"cached by an app that has not seen the change")
                new_app.set(f"user:{i}", b"cached")
        finally:
            old_app.close()
            new_app.close()
        # The apps ignore errors: check each copy is really where each app's ring put it,
        # or "gone afterwards" below would hold for keys that were never cached.
        keys = [f"user:{i}" for i in ids]
        assert cached_on(four_nodes, old_ring, keys) == keys, "old ring's copies missing"
        assert cached_on(four_nodes, new_ring, keys) == keys, "new ring's copies missing"
        with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
            conn.execute("UPDATE users SET name = md5(name) WHERE id = ANY(%s)", (list(ids),))
        keys_changed.extend(f"user:{i}" for i in ids)

    def membership_seen(count: int) -> bool:
        text = proc.log_path.read_text()
        return any(
            json.loads(line).get("event") == "pool membership"
            and len(json.loads(line)["nodes"]) == count
            for line in text.splitlines()
            if '"pool membership"' in line
        )

    try:
        proc.start()
        three = names(four_nodes, [0, 1, 2])
        round_(three, three, range(1, 101))
        assert wait_for(lambda: cached_anywhere(four_nodes, keys_changed) == [])

        four = names(four_nodes, [0, 1, 2, 3])
        dns_server.set(four)
        assert wait_for(lambda: membership_seen(4))
        round_(three, four, range(101, 201))
        assert wait_for(lambda: cached_anywhere(four_nodes, keys_changed) == [])

        two = names(four_nodes, [0, 1])
        dns_server.set(two)
        four_nodes.nodes[3].stop()
        four_nodes.nodes[2].stop()
        assert wait_for(lambda: membership_seen(2))
        round_(two, two, range(201, 301))
        assert wait_for(lambda: cached_anywhere(four_nodes, keys_changed) == [])
        assert proc.ready()
    finally:
        proc.stop()
