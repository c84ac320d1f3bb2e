"""Apps that read a lagging replica on a miss (``pools.NAME.replicas``).

A physical standby of the test cluster replays each commit 400 ms late. Seed-guide readers
fill the cache from it; a writer updates the primary. Without ``replicas`` every delete is
on time and still useless: the next miss re-caches the old row from the standby. With it,
each delete waits until the standby has replayed the commit. `invalidator audit` judges
the same keys independently and must agree.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.cache_aside import ReplicaReaders, app_client, wait_until
from tests.conftest import running_postgres
from tests.daemon_process import DaemonProcess
from tests.integration.test_race import audit_stale, caught_up
from tests.services import MemcachedPool, PgDatabase, PostgresStandby, free_port

ROWS = 40
READERS = 4
WRITE_SECONDS = 3.0
APPLY_DELAY_MS = 400
RULE = {"table": "users", "keys": ["user:{id}"]}
# What the readers store under the keys: lets `audit` judge them.
AUDITED = {**RULE, "value": {"json": ["id", "email", "name"]}}


def users(db: PgDatabase) -> None:
    db.execute("CREATE TABLE users (id int PRIMARY KEY, email text, name text)")
    db.execute(
        f"INSERT INTO users SELECT g, 'u' || g || '@example.com', 'v0'"
        f" FROM generate_series(1, {ROWS}) g"
    )


def row_json(row: tuple[Any, ...]) -> str:
    return json.dumps({"id": row[0], "email": row[1], "name": row[2]})


def run_readers_and_writer(
    db: PgDatabase,
    standby: PostgresStandby,
    servers: list[str],
    slot: str,
    audited: Callable[[], int] | None = None,
) -> tuple[int, int, int | None]:
    """Four readers (cache-aside, misses read the standby) and one writer (the primary)
    for WRITE_SECONDS; then, once the standby replayed every write and the daemon
    confirmed it, the readers go on a little and stop. Returns (stale, cached) keys and
    what ``audited`` (an audit of the same keys) found stale."""
    stop_writer = threading.Event()
    errors: list[BaseException] = []
    replica_dsn = standby.dsn(db.name)

    def writer() -> None:
        rng = random.Random(99)
        try:
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                version = 0
                while not stop_writer.is_set():
                    version += 1
                    conn.execute(
                        "UPDATE users SET name = %s WHERE id = %s",
                        (f"v{version}", rng.randrange(1, ROWS + 1)),
                    )
                    time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    readers = ReplicaReaders(
        servers,
        replica_dsn,
        ids=range(1, ROWS + 1),
        query="SELECT id, email, name FROM users WHERE id = %s",
        encode=row_json,
        count=READERS,
    ).start()
    write = threading.Thread(target=writer)
    write.start()
    time.sleep(WRITE_SECONDS)
    stop_writer.set()
    write.join(10)
    end = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    standby.wait_for_replay(end)
    assert wait_until(lambda: caught_up(db, slot, end), timeout=60), f"{slot}: not caught up"
    time.sleep(0.3)  # readers keep reading: what they cache now comes from a caught-up standby
    readers.stop()
    assert errors == []
    cache = app_client(servers)
    try:
        stale = cached = 0
        for row in db.execute("SELECT id, email, name FROM users"):
            value = cache.get(f"user:{row[0]}")
            if value is None:
                continue
            cached += 1
            stale += value.decode() != row_json(row)
        found = audited() if audited is not None else None
        for user_id in range(1, ROWS + 1):
            cache.delete(f"user:{user_id}")
        return stale, cached, found
    finally:
        cache.close()


def test_readers_of_a_lagging_standby_cache_no_old_row_when_replicas_are_listed(
    tmp_path: Path, pg_db: PgDatabase, pg_standby: PostgresStandby, memcached: MemcachedPool
) -> None:
    users(pg_db)
    pg_standby.wait_for_replay(pg_db.cluster.current_wal_lsn())
    pg_standby.set_apply_delay(APPLY_DELAY_MS)
    try:
        plain = DaemonProcess.create(
            tmp_path,
            name="plain",
            dsn=pg_db.dsn,
            slot="plain",
            servers=memcached.servers,
            rules=[RULE],
        )
        with plain.start():
            stale_plain, cached_plain, audit_plain = run_readers_and_writer(
                pg_db,
                pg_standby,
                memcached.servers,
                "plain",
                audit_stale(pg_db, memcached.servers, AUDITED, ROWS),
            )
        replicas = [pg_standby.dsn(pg_db.name)]  # where the apps read: audit reads it too
        aware = DaemonProcess.create(
            tmp_path,
            name="aware",
            dsn=pg_db.dsn,
            slot="aware",
            servers=memcached.servers,
            rules=[RULE],
            pool={"replicas": replicas},
        )
        with aware.start():
            stale_aware, cached_aware, audit_aware = run_readers_and_writer(
                pg_db,
                pg_standby,
                memcached.servers,
                "aware",
                audit_stale(pg_db, memcached.servers, AUDITED, ROWS, {"replicas": replicas}),
            )
            waits = aware.metric("invalidator_replica_wait_seconds_count")
            wait_sum = aware.metric("invalidator_replica_wait_seconds_sum")
    finally:
        pg_standby.set_apply_delay(0)
    print(
        f"\n[replicas] standby {APPLY_DELAY_MS} ms behind, {READERS} readers, {ROWS} rows:"
        f" stale keys without replicas {stale_plain}/{cached_plain} cached,"
        f" with replicas {stale_aware}/{cached_aware};"
        f" {waits:.0f} commits waited {wait_sum / max(waits, 1) * 1000:.0f} ms on average;"
        f" audit found {audit_plain} and {audit_aware} stale"
    )
    assert (audit_plain, audit_aware) == (stale_plain, stale_aware)
    # Without replicas the standby's old rows must come back, or the comparison proves nothing.
    assert stale_plain > 0
    assert stale_aware == 0
    assert waits > 0 and wait_sum / waits >= APPLY_DELAY_MS / 1000


def test_an_unreachable_replica_delays_a_delete_by_replica_wait_max_only(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    users(pg_db)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/{pg_db.name}"
    proc = DaemonProcess.create(
        tmp_path,
        dsn=pg_db.dsn,
        slot="unreachable",
        servers=memcached.servers,
        rules=[RULE],
        pool={"replicas": [nowhere], "replica_wait_max": "1s"},
    )
    cache = app_client(memcached.servers)
    with proc.start(), contextlib.closing(cache):
        cache.set("user:1", "old", expire=300)
        pg_db.execute("UPDATE users SET name = 'new' WHERE id = 1")
        time.sleep(0.5)
        assert cache.get("user:1") == b"old"  # held: the replica has not replayed it
        assert wait_until(lambda: cache.get("user:1") is None, timeout=10)
        assert wait_until(lambda: proc.metric("invalidator_replica_lag_seconds") > 0, timeout=5)
        assert wait_until(
            lambda: proc.metric("invalidator_operations_total", op="replica_late") >= 1, timeout=5
        )
        assert "replica unreachable" in proc.log_text()
        assert "replica behind" in proc.log_text()


def test_a_late_delete_is_applied_again_once_the_replica_has_replayed(
    tmp_path: Path, pg_db: PgDatabase, pg_standby: PostgresStandby, memcached: MemcachedPool
) -> None:
    users(pg_db)
    proc = DaemonProcess.create(
        tmp_path,
        dsn=pg_db.dsn,
        slot="late",
        servers=memcached.servers,
        rules=[RULE],
        pool={"replicas": [pg_standby.dsn(pg_db.name)], "replica_wait_max": "0.3s"},
    )
    cache = app_client(memcached.servers)
    pg_standby.wait_for_replay(pg_db.cluster.current_wal_lsn())
    pg_standby.set_apply_delay(3000)
    try:
        with proc.start(), contextlib.closing(cache):
            pg_db.execute("UPDATE users SET name = 'new' WHERE id = 1")
            end = pg_db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
            # Applied once the wait ran out: the key is gone long before the standby replays.
            assert wait_until(lambda: caught_up(pg_db, "late", end), timeout=10)
            # A reader of the standby re-caches the old row it still shows...
            with psycopg.connect(pg_standby.dsn(pg_db.name), autocommit=True) as conn:
                row = conn.execute("SELECT id, email, name FROM users WHERE id = 1").fetchone()
            assert row is not None and row[2] == "v0"
            cache.set("user:1", row_json(row), expire=300)
            # ...and the delete comes again once the standby has replayed the update.
            pg_standby.wait_for_replay(end)
            assert wait_until(lambda: cache.get("user:1") is None, timeout=10)
            assert wait_until(
                lambda: proc.metric("invalidator_operations_total", op="reapply") >= 1, timeout=5
            )
            (shown,) = json.loads(proc.cli("status").stdout)["replicas"]["default"]
            assert shown["replica"] == f"127.0.0.1:{pg_standby.port}/{pg_db.name}"
            assert shown["replayed_lsn"] is not None and "error" not in shown
            assert shown["standby_of_primary"] is True
            checked = [line.strip() for line in proc.cli("check").stdout.splitlines()]
            label = f"127.0.0.1:{pg_standby.port}/{pg_db.name}"
            assert any(
                line.startswith(f"✓ pools.default.replicas: {label}: answers, replayed")
                for line in checked
            ), checked
    finally:
        pg_standby.set_apply_delay(0)


def test_a_replica_of_another_cluster_is_refused_by_name_and_never_trusted(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """A replica DSN that reaches an unrelated cluster: its WAL positions say nothing about
    ours, so its "replay" must not release anything — the wait runs out instead, loudly."""
    users(pg_db)
    with running_postgres() as other:
        proc = DaemonProcess.create(
            tmp_path,
            dsn=pg_db.dsn,
            slot="othercluster",
            servers=memcached.servers,
            rules=[RULE],
            pool={"replicas": [other.dsn()], "replica_wait_max": "2s"},
        )
        cache = app_client(memcached.servers)
        with proc.start(), contextlib.closing(cache):
            cache.set("user:1", "old", expire=300)
            pg_db.execute("UPDATE users SET name = 'new' WHERE id = 1")
            time.sleep(1.0)
            assert cache.get("user:1") == b"old"  # not released by the other cluster's LSN
            assert wait_until(lambda: cache.get("user:1") is None, timeout=10)
            assert wait_until(lambda: "is not a standby of the primary" in proc.log_text(), 10)
            checked = proc.cli("check")
            assert checked.returncode == 1
            assert "not a standby of the source's cluster" in checked.stdout, checked.stdout
