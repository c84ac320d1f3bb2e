"""Never silently stale across a lost slot: the marker in the database notices the gap.

The scenario of a failover to a standby without the slot, on one cluster: the daemon
streams (and writes its marker), stops, the slot is dropped, rows change, the daemon
starts again. Without continuity tracking it would create a fresh slot at the current
position and those changes would never be invalidated.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.hash import HashClient

from tests.cache_aside import wait_gone, wait_until
from tests.conftest import running_postgres
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase, PostgresCluster, PostgresStandby

pytestmark = pytest.mark.integration

RULES = [{"table": "users", "keys": ["user:{id}"]}]
CHANGED = range(1, 101)
UNCHANGED = range(401, 411)


def make_daemon(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, name: str, **source: object
) -> DaemonProcess:
    return DaemonProcess.create(
        tmp_path,
        name=name,
        dsn=users_db.dsn,
        slot="gapped",
        servers=memcached.servers,
        rules=RULES,
        **source,
    )


@pytest.fixture(params=["wal2json", "pgoutput"])
def kind(request: pytest.FixtureRequest) -> str:
    """Both slot-based sources keep continuity the same way."""
    return str(request.param)


@pytest.fixture
def streamed_once(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, kind: str
) -> Iterator[DaemonProcess]:
    """A daemon has streamed (its marker is written) and stopped; then the slot is
    dropped and 100 rows change while their keys are cached."""
    first = make_daemon(tmp_path, users_db, memcached, "first", kind=kind)
    first.start()
    assert first.terminate() == 0
    users_db.execute("SELECT pg_drop_replication_slot('gapped')")
    yield first
    first.stop()


def cache_and_change(app: HashClient, users_db: PgDatabase) -> None:
    for i in [*CHANGED, *UNCHANGED]:
        app.set(f"user:{i}", json.dumps({"id": i, "name": "cached"}))
    users_db.execute("UPDATE users SET name = 'changed in the gap' WHERE id <= 100")


def readyz(proc: DaemonProcess) -> str:
    """/readyz's body, or "" while the daemon is not listening yet."""
    try:
        return proc.get("/readyz")[1]
    except OSError:
        return ""


def status(proc: DaemonProcess) -> dict[str, object]:
    record: dict[str, object] = json.loads(proc.cli("status", timeout=60).stdout)
    return record


def test_a_slot_dropped_while_the_daemon_was_down_flushes_the_pools(
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    streamed_once: DaemonProcess,
    kind: str,
) -> None:
    """on_gap: flush (the default): every changed row's key is gone after the restart —
    the pools were emptied because the changes in the gap are unknown — and the gap is
    counted, logged and shown by status."""
    cache_and_change(app, users_db)
    second = make_daemon(tmp_path, users_db, memcached, "second", kind=kind)
    try:
        second.start()
        assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
        assert wait_gone(app, [f"user:{i}" for i in UNCHANGED], timeout=15) == []  # flushed
        assert second.metric("invalidator_gaps_total") == 1
        assert "continuity lost" in second.log_path.read_text()
        assert wait_until(lambda: "gap answered" in second.log_path.read_text(), timeout=15), (
            second.log_tail()
        )
        continuity = status(second)["continuity"]
        assert isinstance(continuity, dict)
        assert (continuity["last_gap"], continuity["pending_gap"]) == ("slot_missing", None)
        # Streaming goes on: a later change is invalidated as usual.
        app.set("user:200", "cached")
        users_db.execute("UPDATE users SET name = 'after' WHERE id = 200")
        assert wait_gone(app, ["user:200"]) == []
    finally:
        second.stop()


def test_a_restart_without_a_gap_flushes_nothing(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient, kind: str
) -> None:
    """The same slot on the same server: no gap, nothing flushed, nothing counted."""
    first = make_daemon(tmp_path, users_db, memcached, "first", kind=kind)
    first.start()
    assert first.terminate() == 0
    for i in UNCHANGED:
        app.set(f"user:{i}", "cached")
    first.start()
    try:
        app.set("user:5", "cached")
        users_db.execute("UPDATE users SET name = 'x' WHERE id = 5")
        assert wait_gone(app, ["user:5"]) == []
        assert [app.get(f"user:{i}") for i in UNCHANGED] == [b"cached"] * len(UNCHANGED)
        assert first.metric("invalidator_gaps_total") == 0
        # The marker follows the confirmed position, without disturbing the stream.
        assert wait_until(
            lambda: status(first)["continuity"]["confirmed_lsn"] != "0/0",  # type: ignore[index]
            timeout=15,
        )
        assert "source unavailable" not in first.log_path.read_text(), first.log_tail()
    finally:
        first.stop()


def test_on_gap_refuse_stays_unready_with_the_reason_and_touches_nothing(
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    streamed_once: DaemonProcess,
    kind: str,
) -> None:
    """on_gap: refuse: /readyz says why, no key is touched, status shows the pending gap;
    a later start with on_gap: flush answers it."""
    cache_and_change(app, users_db)
    refusing = make_daemon(tmp_path, users_db, memcached, "refusing", on_gap="refuse", kind=kind)
    try:
        refusing.start(wait=False)
        assert wait_until(
            lambda: "continuity lost (slot_missing)" in readyz(refusing), timeout=20
        ), refusing.log_tail()
        assert refusing.get("/readyz")[0] == 503
        time.sleep(0.5)
        assert app.get("user:1") is not None  # nothing flushed, nothing deleted
        continuity = status(refusing)["continuity"]
        assert isinstance(continuity, dict)
        assert continuity["pending_gap"] == "slot_missing"
    finally:
        refusing.stop()
    answering = make_daemon(tmp_path, users_db, memcached, "answering", kind=kind)
    try:
        answering.start()
        assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
    finally:
        answering.stop()


def test_a_slot_invalidated_by_max_slot_wal_keep_size_flushes_the_pools(
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    kind: str,
) -> None:
    """PostgreSQL removes WAL the stopped daemon's slot still needed (wal_status lost): the
    slot can never stream again; the daemon drops it, creates it afresh and flushes."""
    first = make_daemon(tmp_path, users_db, memcached, "first", kind=kind)
    first.start()
    assert first.terminate() == 0
    cache_and_change(app, users_db)
    cluster = users_db.cluster
    try:
        cluster.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        cluster.execute("SELECT pg_reload_conf()")
        users_db.execute("CREATE TABLE filler (payload text)")
        for _ in range(8):  # well past a few 16 MB segments, each followed by a checkpoint
            users_db.execute(
                "INSERT INTO filler SELECT repeat(md5(i::text), 64)"
                " FROM generate_series(1, 20000) i"
            )
            cluster.execute("SELECT pg_switch_wal()")
            cluster.execute("CHECKPOINT")
            state = users_db.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'gapped'"
            )
            if state == [("lost",)]:
                break
        assert state == [("lost",)], state
    finally:
        cluster.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        cluster.execute("SELECT pg_reload_conf()")
    second = make_daemon(tmp_path, users_db, memcached, "second", kind=kind)
    try:
        second.start()
        assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
        assert second.metric("invalidator_gaps_total") == 1
        assert "slot_lost" in second.log_path.read_text()
        app.set("user:300", "cached")
        users_db.execute("UPDATE users SET name = 'after' WHERE id = 300")
        assert wait_gone(app, ["user:300"]) == []
    finally:
        second.stop()
        first.stop()


def test_another_cluster_behind_the_dsn_flushes_the_pools(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """The database was copied to another cluster (dump and restore, marker included) and
    the DSN now reaches that one: its slot never saw our changes, its system identifier is
    not the marker's. Changes made there before the daemon starts are not lost: flush."""
    first = make_daemon(tmp_path, users_db, memcached, "first")
    first.start()
    assert first.terminate() == 0
    with running_postgres() as other:
        copy = other.create_database(users_db.name)
        dump = subprocess.run(
            [users_db.cluster.bin("pg_dump"), "--no-owner", users_db.dsn],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        subprocess.run(
            [other.bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", copy.dsn],
            input=dump,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert copy.execute("SELECT count(*) FROM invalidator.continuity") == [(1,)]
        for i in CHANGED:
            app.set(f"user:{i}", "cached")
        copy.execute("UPDATE users SET name = 'changed on the other cluster' WHERE id <= 100")
        moved = DaemonProcess.create(
            tmp_path,
            name="moved",
            dsn=copy.dsn,
            slot="gapped",
            servers=memcached.servers,
            rules=RULES,
        )
        try:
            moved.start()
            assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
            assert moved.metric("invalidator_gaps_total") == 1
            assert "other_cluster" in moved.log_path.read_text()
        finally:
            moved.stop()


def test_a_failover_to_a_promoted_standby_flushes_the_pools(
    tmp_path: Path,
    pg_cluster: PostgresCluster,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
) -> None:
    """The real failover: the daemon streams from the primary; while it is down, rows
    change and reach a physical standby; the standby is promoted (a new timeline, and on
    PostgreSQL 15 no slot) and the daemon is pointed at it. The marker came over with the
    data: the gap is found and the pools are emptied before streaming."""
    with running_postgres(PostgresStandby(pg_cluster)) as standby:
        first = make_daemon(tmp_path, users_db, memcached, "primary")
        first.start()
        app.set("user:300", "cached")
        users_db.execute("UPDATE users SET name = 'on the primary' WHERE id = 300")
        assert wait_gone(app, ["user:300"]) == []
        # The marker holds a confirmed position (written after the stream confirmed).
        assert wait_until(
            lambda: status(first)["continuity"]["confirmed_lsn"] != "0/0",  # type: ignore[index]
            timeout=15,
        )
        first.stop()
        cache_and_change(app, users_db)
        assert isinstance(standby, PostgresStandby)
        standby.wait_for_replay(pg_cluster.current_wal_lsn())
        standby.promote()
        promoted = DaemonProcess.create(
            tmp_path,
            name="promoted",
            dsn=standby.dsn(users_db.name),
            slot="gapped",
            servers=memcached.servers,
            rules=RULES,
        )
        with promoted.start():
            assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
            assert wait_gone(app, [f"user:{i}" for i in UNCHANGED], timeout=15) == []
            reasons = promoted.breakdown("invalidator_gaps_total", "reason")
            assert sum(reasons.values()) == 1, reasons
            # PostgreSQL 15 and 16 have no failover slots: the slot is missing on the
            # promoted standby, and its timeline is newer than the marker's.
            assert set(reasons) <= {"slot_missing", "new_timeline"}, reasons
            assert "continuity lost" in promoted.log_text()
            continuity = status(promoted)["continuity"]
            assert isinstance(continuity, dict) and continuity["last_gap"] in reasons
            # It streams from the new primary: a later change is invalidated as usual.
            app.set("user:200", "cached")
            standby.execute(
                "UPDATE users SET name = 'after failover' WHERE id = 200", dbname=users_db.name
            )
            assert wait_gone(app, ["user:200"]) == []


def test_a_slot_advanced_by_someone_else_flushes_the_pools(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """While the daemon is down, rows change and someone advances its slot past them
    (pg_replication_slot_advance, "to fix the lag"): the daemon never sees those changes,
    but its marker says how far it confirmed, so the slot being further is a gap."""
    first = make_daemon(tmp_path, users_db, memcached, "first")
    first.start()
    app.set("user:300", "cached")
    users_db.execute("UPDATE users SET name = 'streamed' WHERE id = 300")
    assert wait_gone(app, ["user:300"]) == []
    assert first.terminate() == 0
    cache_and_change(app, users_db)
    users_db.execute("SELECT pg_switch_wal()")  # past the marker's 1 MB of slack
    users_db.execute("UPDATE users SET name = 'later' WHERE id = 301")
    users_db.execute("SELECT pg_replication_slot_advance('gapped', pg_current_wal_lsn())")
    second = make_daemon(tmp_path, users_db, memcached, "second")
    with second.start():
        assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
        assert wait_gone(app, [f"user:{i}" for i in UNCHANGED], timeout=15) == []  # flushed
        assert second.breakdown("invalidator_gaps_total", "reason") == {"slot_advanced": 1}
        assert "someone else advanced it" in second.log_text()
        continuity = status(second)["continuity"]
        assert isinstance(continuity, dict) and continuity["last_gap"] == "slot_advanced"


# -- the notify source: the outbox's marker ------------------------------------------------


def notify_daemon(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, name: str, **source: object
) -> DaemonProcess:
    return make_daemon(tmp_path, users_db, memcached, name, kind="notify", **source)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("DROP TABLE invalidator.outbox", "outbox_recreated"),
        ("DROP TRIGGER invalidator_capture ON users", "trigger_missing"),
    ],
    ids=["outbox dropped", "trigger dropped"],
)
def test_a_damaged_outbox_while_the_daemon_was_down_flushes_the_pools(
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    damage: str,
    reason: str,
) -> None:
    """The outbox (with its unread rows) or a table's trigger was dropped while the daemon
    was down: the changes meanwhile are unknown, so the pools are emptied — once."""
    first = notify_daemon(tmp_path, users_db, memcached, "first")
    first.start()
    assert first.terminate() == 0
    cache_and_change(app, users_db)  # recorded in the outbox, or not at all
    users_db.execute(damage)
    second = notify_daemon(tmp_path, users_db, memcached, "second")
    with second.start():
        assert wait_gone(app, [f"user:{i}" for i in CHANGED], timeout=15) == []
        assert wait_gone(app, [f"user:{i}" for i in UNCHANGED], timeout=15) == []  # flushed
        assert second.breakdown("invalidator_gaps_total", "reason") == {reason: 1}
        assert wait_until(lambda: "gap answered" in second.log_text(), timeout=15)
        app.set("user:200", "cached")
        users_db.execute("UPDATE users SET name = 'after' WHERE id = 200")
        assert wait_gone(app, ["user:200"]) == []
    # Answered: the next start finds the outbox as it left it.
    for i in UNCHANGED:
        app.set(f"user:{i}", "cached")
    third = notify_daemon(tmp_path, users_db, memcached, "third")
    with third.start():
        assert third.metric("invalidator_gaps_total") == 0
        assert [app.get(f"user:{i}") for i in UNCHANGED] == [b"cached"] * len(UNCHANGED)


def test_a_notify_restart_without_damage_flushes_nothing(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    first = notify_daemon(tmp_path, users_db, memcached, "first")
    first.start()
    assert first.terminate() == 0
    for i in UNCHANGED:
        app.set(f"user:{i}", "cached")
    app.set("user:5", "cached")
    users_db.execute("UPDATE users SET name = 'x' WHERE id = 5")  # recorded while down
    with first.start():
        assert wait_gone(app, ["user:5"]) == []
        assert [app.get(f"user:{i}") for i in UNCHANGED] == [b"cached"] * len(UNCHANGED)
        assert first.metric("invalidator_gaps_total") == 0


def test_notify_on_gap_refuse_stays_unready_with_the_reason(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    first = notify_daemon(tmp_path, users_db, memcached, "first")
    first.start()
    assert first.terminate() == 0
    users_db.execute("DROP TRIGGER invalidator_capture ON users")
    app.set("user:401", "cached")
    refusing = notify_daemon(tmp_path, users_db, memcached, "refusing", on_gap="refuse")
    with refusing.start(wait=False):
        assert wait_until(lambda: "trigger_missing" in readyz(refusing), timeout=15), (
            refusing.log_tail()
        )
        assert app.get("user:401") == b"cached"  # nothing flushed
