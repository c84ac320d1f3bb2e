"""`invalidator audit` against real PostgreSQL and memcached: it finds exactly the stale
copies planted behind the daemon's back (fallback copies too), and none after a churn
run with the daemon healthy. (The cache-aside race judged by audit: test_race.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from invalidator.core.changes import Change
from invalidator.sources.postgres import stream_options
from invalidator.sources.rows import RowReader
from invalidator.sources.wal2json import read_stream
from tests.cache_aside import ChurningWriter, get_user, owner_of, wait_until
from tests.daemon_process import DaemonProcess, metric_breakdown
from tests.services import MemcachedPool, PgDatabase, PostgresCluster, capture_wal2json

USER_RULE = {
    "table": "users",
    "keys": ["user:{id}"],
    "value": {"json": ["id", "email", "name"]},
}


def stored(db: PgDatabase, user_id: int) -> str:
    """json.dumps of the row, exactly as the seed guide's app caches it."""
    ((i, email, name),) = db.execute("SELECT id, email, name FROM users WHERE id = %s", (user_id,))
    return json.dumps({"id": i, "email": email, "name": name})


def run_audit(proc: DaemonProcess, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = proc.cli("audit", "--format", "json", *args, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def second_choice(servers: list[str], key: str) -> str:
    """Where pymemcache's HashClient puts ``key`` once its owner is marked dead."""
    owner = owner_of(servers, key)
    return owner_of([s for s in servers if s != owner], key)


@pytest.fixture
def nodes(memcached: MemcachedPool) -> Iterator[dict[str, Client]]:
    clients = {s: Client(s, no_delay=True, default_noreply=False) for s in memcached.servers}
    yield clients
    for client in clients.values():
        client.close()


def test_audit_finds_exactly_the_stale_copies_planted(
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    nodes: dict[str, Client],
) -> None:
    """200 users cached as the app caches them; 6 overwritten with an old row on their
    owner, 2 old rows on their fallback node (fallback_depth: 1) and 3 in other JSON bytes.
    audit names exactly the 8 stale copies, counts the 3 apart, and exits 1."""
    servers = memcached.servers
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="audit",
        servers=servers,
        rules=[USER_RULE, {"table": "users", "keys": ["plain:{id}"]}],
        pool={"fallback_depth": 1},
    )
    for i in range(1, 201):
        app.set(f"user:{i}", stored(users_db, i))
    old = {
        i: json.dumps({"id": i, "email": f"u{i}@example.com", "name": "old"}) for i in range(1, 9)
    }
    planted = set()
    for i in range(1, 7):
        app.set(f"user:{i}", old[i])
        planted.add((f"user:{i}", owner_of(servers, f"user:{i}")))
    for i in (7, 8):
        node = second_choice(servers, f"user:{i}")
        nodes[node].set(f"user:{i}", old[i])
        planted.add((f"user:{i}", node))
    for i in (9, 10, 11):
        row = json.loads(stored(users_db, i))
        app.set(f"user:{i}", json.dumps(row, separators=(",", ":")))

    code, (record,) = run_audit(proc, "--sample", "500")

    assert code == 1
    found = {(e["key"], e["node"]) for e in record["examples"]}
    assert (record["stale"], found) == (8, planted)
    assert (record["rows"], record["reformatted"], record["error"]) == (500, 3, None)
    assert record["cached"] == 200 + 2  # owners' copies and the two fallback copies
    assert record["fresh"] == 200 - 6 - 3
    example = next(e for e in record["examples"] if e["key"] == "user:1")
    assert (example["cached"], example["expected"]) == (old[1], stored(users_db, 1))


def test_audit_of_a_consistent_cache_exits_0(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """Every cached copy fresh: exit 0, the text report says 0 stale and nothing else."""
    proc = DaemonProcess.create(
        tmp_path, dsn=users_db.dsn, slot="audit", servers=memcached.servers, rules=[USER_RULE]
    )
    for i in range(1, 51):
        app.set(f"user:{i}", stored(users_db, i))
    result = proc.cli("audit", "--sample", "500", timeout=120)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "rules[0] public.users (pool default): 500 rows sampled, 500 copies read, 50 cached:"
        " 50 fresh, 0 same value in other bytes, 0 stale (0 re-checked)",
        "audit: 0 stale of 50 cached copies in 1 rules",
    ]


def test_audit_without_a_value_rule_is_a_config_error(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """Nothing says what any key holds: exit 2 with one line, and the DSN never shown."""
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="audit",
        servers=memcached.servers,
        rules=[{"table": "users", "keys": ["user:{id}"]}],
    )
    result = proc.cli("audit")
    assert result.returncode == 2
    assert result.stderr == ("no rule has a 'value': audit cannot tell what any key should hold\n")


def test_no_stale_copy_after_churn_with_the_daemon_healthy(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """Every user cached by the app's cache-aside read, then another service churns rows
    (caching and updating them) while the daemon runs: once it has caught up, audit finds
    every remaining copy fresh, and it did compare many."""
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="audit",
        servers=memcached.servers,
        rules=[USER_RULE],
        audit={"every": "1s", "sample": 500},
    )
    try:
        proc.start()
        for i in range(1, 501):
            get_user(app, users_db, i)
        with ChurningWriter(memcached.servers, users_db.dsn, seed=18, sizes=[1, 5, 20]) as writer:
            time.sleep(3)
        assert writer.errors == []
        end = users_db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
        assert wait_until(lambda: caught_up(users_db, "audit", end), timeout=30)

        code, (record,) = run_audit(proc, "--sample", "500")

        assert len(writer.updated) > 50
        assert (code, record["stale"], record["error"]) == (0, 0, None)
        assert record["cached"] == record["fresh"] == 500 - len(writer.updated)
        assert wait_until(lambda: proc.metric("invalidator_audit_checked_total") > 0, 20)
        assert proc.metric("invalidator_audit_stale_total") == 0
    finally:
        proc.stop()


def caught_up(db: PgDatabase, slot: str, lsn: str) -> bool:
    rows = db.execute(
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (lsn, slot),
    )
    return rows == [(True,)]


def test_the_probe_in_run_counts_stale_copies(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """audit: {every, sample} inside run: copies planted stale behind the daemon's back
    show up in invalidator_audit_stale_total{pool,rule}, fresh ones only as checked."""
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="audit",
        servers=memcached.servers,
        rules=[USER_RULE],
        audit={"every": "0.5s", "sample": 500},
    )
    for i in range(1, 21):
        app.set(f"user:{i}", stored(users_db, i))
    for i in range(21, 24):
        app.set(f"user:{i}", b"not the row")
    try:
        proc.start()
        assert wait_until(lambda: proc.metric("invalidator_audit_stale_total") >= 3, 30)
        samples = proc.metrics()  # one scrape: a round counts checked, then stale
        checked = metric_breakdown(samples, "invalidator_audit_checked_total", "rule")
        stale = metric_breakdown(samples, "invalidator_audit_stale_total", "rule")
        rounds = stale["0"] / 3
        assert rounds == int(rounds) >= 1
        assert checked["0"] >= 23 * rounds
        assert any("audit found stale keys" in line for line in proc.log_lines())
    finally:
        proc.stop()


def test_rows_are_read_as_the_stream_gives_them(
    pg_cluster: PostgresCluster, pg_db: PgDatabase
) -> None:
    """The oracle is wal2json itself: a row of many types, inserted and decoded from the
    stream (the daemon's options), equals the same row sampled and looked up by audit, so
    the value audit expects is the one a refresh would write."""
    pg_db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, big bigint, n numeric(8,2), f float8, nan float8,"
        " ok bool, s text, v varchar(10), ts timestamptz, d date, u uuid, j jsonb, b bytea,"
        " a int[], missing text)"
    )
    insert = (
        "INSERT INTO t VALUES (1, 9007199254740993, 1.10, 0.5, 'NaN', true, 'Zoë \"q\"', 'v',"
        " '2024-05-01 12:30:00+02', '2024-05-01', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
        " '{\"k\": [1, 2]}', '\\x01ff', ARRAY[1, 2], NULL)"
    )
    lines = capture_wal2json(pg_cluster, pg_db.name, "audit_types", [insert], stream_options(None))
    (change,) = [e for e in read_stream(lines, "capture") if isinstance(e, Change)]
    reader = RowReader(pg_db.dsn)
    try:
        assert reader.sample("public", "t", 5) == [dict(change.new or {})]
        assert reader.lookup("public", "t", {"id": 1, "ts": change.new["ts"]}) == [change.new]
    finally:
        reader.close()


def test_the_probe_audits_rows_the_stream_changed_lately(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """A rule whose when_changed leaves out a column its value holds: an UPDATE of that
    column leaves the cached copy stale. The probe samples 1 random row of 5,000 a round,
    so only its record of recently changed rows can find the one row changed — and does."""
    pg_db.execute("CREATE TABLE items (id int PRIMARY KEY, v int, note text)")
    pg_db.execute("INSERT INTO items SELECT g, g, 'n' FROM generate_series(1, 5000) g")
    pg_db.execute("ALTER TABLE items REPLICA IDENTITY FULL")  # the old v: unchanged is known
    rule = {
        "table": "items",
        "keys": ["item:{id}"],
        "when_changed": ["v"],
        "value": {"json": ["id", "v", "note"]},
    }
    proc = DaemonProcess.create(
        tmp_path,
        dsn=pg_db.dsn,
        slot="audit",
        servers=memcached.servers,
        rules=[rule],
        audit={"every": "0.5s", "sample": 1},
    )
    app.set("item:4242", json.dumps({"id": 4242, "v": 4242, "note": "n"}))
    try:
        proc.start()
        pg_db.execute("UPDATE items SET note = 'changed' WHERE id = 4242")
        assert wait_until(lambda: proc.metric("invalidator_audit_stale_total") >= 1, 30)
        assert app.get("item:4242") is not None  # the daemon left it: when_changed
        (line,) = [line for line in proc.log_lines() if "audit found stale keys" in line]
        assert json.loads(line)["examples"] == [
            f"item:4242@{owner_of(memcached.servers, 'item:4242')}"
        ]
    finally:
        proc.stop()
