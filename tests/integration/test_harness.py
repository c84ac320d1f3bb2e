"""The test harness itself: real PostgreSQL with wal2json, real memcached nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pymemcache.client.base import Client

from tests.services import (
    MemcachedNode,
    MemcachedPool,
    PgDatabase,
    PostgresCluster,
    ServiceError,
    capture_wal2json,
)


@contextmanager
def client(node: MemcachedNode, timeout: float = 2.0) -> Iterator[Client]:
    c = Client((node.host, node.port), connect_timeout=timeout, timeout=timeout)
    try:
        yield c
    finally:
        c.close()


def test_cluster_runs_with_logical_wal_level(pg_cluster: PostgresCluster) -> None:
    """The session cluster is up on 127.0.0.1 with wal_level=logical."""
    assert pg_cluster.host == "127.0.0.1"
    assert pg_cluster.execute("SHOW wal_level") == [("logical",)]


def test_pg_db_is_a_fresh_database(pg_db: PgDatabase) -> None:
    """pg_db is a new, empty database reachable through its DSN."""
    assert pg_db.execute("SELECT current_database()") == [(pg_db.name,)]
    assert pg_db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_wal2json_capture_shows_insert(pg_cluster: PostgresCluster, pg_db: PgDatabase) -> None:
    """A captured INSERT comes out of wal2json (format 2) as an "I" record between B and C."""
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
    lines = capture_wal2json(
        pg_cluster, pg_db.name, "harness_slot", ["INSERT INTO users VALUES (1, 'a@example.com')"]
    )
    records = [json.loads(line) for line in lines]
    assert [r["action"] for r in records] == ["B", "I", "C"]
    insert = records[1]
    assert (insert["schema"], insert["table"]) == ("public", "users")
    assert {c["name"]: c["value"] for c in insert["columns"]} == {"id": 1, "email": "a@example.com"}
    assert pg_cluster.execute("SELECT count(*) FROM pg_replication_slots") == [(0,)]


def test_three_memcached_nodes_answer_set_get(memcached: MemcachedPool) -> None:
    """Each of the three nodes stores and returns its own value."""
    assert len(memcached.servers) == 3
    assert len(set(memcached.servers)) == 3
    for index, node in enumerate(memcached):
        with client(node) as c:
            assert c.set("harness:key", f"value-{index}", noreply=False)
    for index, node in enumerate(memcached):
        with client(node) as c:
            assert c.get("harness:key") == f"value-{index}".encode()


def test_restart_loses_data(memcached: MemcachedPool) -> None:
    """restart() keeps the port but starts empty."""
    node = memcached[0]
    server, old_pid = node.server, node.pid
    with client(node) as c:
        c.set("harness:key", "v", noreply=False)
    node.restart()
    assert node.server == server
    assert node.pid != old_pid
    with client(node) as c:
        assert c.get("harness:key") is None


def test_pause_blocks_and_resume_answers(memcached: MemcachedPool) -> None:
    """A paused node times out; after resume() it answers with its data intact."""
    node = memcached[1]
    with client(node) as c:
        c.set("harness:key", "kept", noreply=False)
    node.pause()
    try:
        with client(node, timeout=0.3) as c, pytest.raises(TimeoutError):
            c.get("harness:key")
    finally:
        node.resume()
    with client(node) as c:
        assert c.get("harness:key") == b"kept"


def test_missing_postgres_binaries_name_the_package() -> None:
    """A cluster without PostgreSQL binaries fails with the Debian package to install."""
    with pytest.raises(ServiceError, match="apt-get install postgresql-15"):
        PostgresCluster(bindir="/nonexistent/bin").start()


def test_wal2json_capture_includes_non_transactional_message(
    pg_cluster: PostgresCluster, pg_db: PgDatabase
) -> None:
    """A non-transactional logical message (never flushed by a commit) is still captured."""
    lines = capture_wal2json(
        pg_cluster,
        pg_db.name,
        "harness_slot",
        ["SELECT pg_logical_emit_message(false, 'inval', 'now')"],
    )
    records = [json.loads(line) for line in lines]
    assert [(r["action"], r["transactional"], r["content"]) for r in records] == [
        ("M", False, "now")
    ]
