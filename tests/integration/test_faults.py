"""Faults, against real processes: nothing lost, nothing stuck, one clear error.

Each test asserts that no changed row's key is left cached afterwards. Delays are printed
(run with -s), never asserted: these tests share two cores with PostgreSQL and memcached.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from tests.cache_aside import NodeCopies, app_client, rewrite_users
from tests.cache_aside import wait_until as _wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedNode, MemcachedPool, PgDatabase, PostgresCluster

pytestmark = pytest.mark.faults

USER_RULES = [{"table": "users", "keys": ["user:{id}"]}]


# This file's waits allow 15 s (the shared default is 10 s).
wait_until = partial(_wait_until, timeout=15.0)


@pytest.fixture
def users_db(pg_db: PgDatabase) -> PgDatabase:
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, email text, name text)")
    pg_db.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.com', 'n'"
        " FROM generate_series(1, 20000) g"
    )
    return pg_db


@pytest.fixture
def app(memcached: MemcachedPool) -> Iterator[HashClient]:
    """The app's client with short timeouts: these tests stop nodes on purpose."""
    client = app_client(memcached.servers, timeout=0.5)
    yield client
    client.close()


@pytest.fixture
def copies(memcached: MemcachedPool) -> Iterator[NodeCopies]:
    """Copies of keys on every node, to check each delete reached its owner only."""
    with NodeCopies(memcached.servers) as planted:
        yield planted


@pytest.fixture
def nodes(memcached: MemcachedPool) -> Iterator[dict[str, Client]]:
    clients = {s: Client(s, no_delay=True, connect_timeout=1, timeout=1) for s in memcached.servers}
    yield clients
    for client in clients.values():
        client.close()


def make_daemon(
    tmp_path: Path,
    db: PgDatabase,
    memcached: MemcachedPool,
    name: str = "daemon",
    rules: list[dict[str, Any]] | None = None,
    slot: str = "faults",
    pool: dict[str, Any] | None = None,
) -> DaemonProcess:
    proc = DaemonProcess.create(
        tmp_path,
        name=name,
        dsn=db.dsn,
        slot=slot,
        servers=memcached.servers,
        rules=rules or USER_RULES,
    )
    if pool:
        import json

        config = json.loads(proc.config.read_text())
        config["pools"]["default"].update(pool)
        proc.config.write_text(json.dumps(config))
    return proc


@pytest.fixture
def daemon(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool
) -> Iterator[DaemonProcess]:
    proc = make_daemon(tmp_path, users_db, memcached)
    yield proc
    proc.stop()


def owner(app: HashClient, key: str) -> str:
    return str(app.hasher.get_node(key))


def node_of(memcached: MemcachedPool, server: str) -> MemcachedNode:
    return next(n for n in memcached.nodes if n.server == server)


def ids_on(app: HashClient, server: str, count: int, start: int = 1) -> list[int]:
    found: list[int] = []
    i = start
    while len(found) < count:
        if owner(app, f"user:{i}") == server:
            found.append(i)
        i += 1
    return found


def cached_anywhere(
    nodes: dict[str, Client], keys: list[str], *, down: Collection[str] = ()
) -> list[str]:
    """Keys still present on any node (owner or not) but those the caller knows are
    ``down``. A node that errs or hangs is no evidence that a key is gone: an error from a
    node expected up fails the test instead of counting as "absent"."""
    asked = {s: c for s, c in nodes.items() if s not in down}
    assert asked, "no node left to ask"

    def present(server: str, key: str) -> bool:
        try:
            return asked[server].get(key) is not None
        except Exception as exc:
            asked[server].close()
            raise AssertionError(f"node {server} should be up but failed: {exc!r}") from exc

    return [k for k in keys if any(present(s, k) for s in asked)]


def gone_after(node: Client, key: str, timeout: float = 15.0) -> float | None:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if node.get(key) is None:
            return time.perf_counter() - start
        time.sleep(0.0005)
    return None


def confirmed_at_least(db: PgDatabase, slot: str, lsn: str) -> bool:
    rows = db.execute(
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (lsn, slot),
    )
    return bool(rows and rows[0][0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_stopped_node_does_not_hold_up_healthy_nodes_or_the_position(
    daemon: DaemonProcess,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    nodes: dict[str, Client],
) -> None:
    """SIGSTOP one node: healthy nodes' keys keep vanishing; the slot never confirms past
    the stuck node's work; after SIGCONT its keys are deleted too."""
    daemon.start()
    stuck = memcached.nodes[0]
    stuck_ids = ids_on(app, stuck.server, 20)
    for i in stuck_ids:
        nodes[stuck.server].set(f"user:{i}", b"cached")
    healthy_ids = [i for i in range(1, 400) if owner(app, f"user:{i}") != stuck.server][:150]
    stuck.pause()
    try:
        users_db.execute("UPDATE users SET name = 'x' WHERE id = ANY(%s)", (stuck_ids,))
        stuck_end = users_db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
        delays = []
        with psycopg.connect(users_db.dsn, autocommit=True) as conn:
            for i in healthy_ids:
                key = f"user:{i}"
                client = nodes[owner(app, key)]
                client.set(key, b"cached")
                conn.execute("UPDATE users SET name = 'y' WHERE id = %s", (i,))
                delay = gone_after(client, key)
                assert delay is not None, key
                delays.append(delay)
        time.sleep(1.0)
        assert not confirmed_at_least(users_db, "faults", stuck_end)
    finally:
        stuck.resume()
    print(
        f"\n[stopped node] healthy nodes, commit→gone over {len(delays)} updates: "
        f"p50 {statistics.median(delays) * 1000:.2f} ms, p99 "
        f"{percentile(delays, 0.99) * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms"
    )
    assert wait_until(lambda: cached_anywhere(nodes, [f"user:{i}" for i in stuck_ids]) == [])
    assert wait_until(lambda: confirmed_at_least(users_db, "faults", stuck_end))


def test_restarted_node_drops_its_pending_work_and_the_stream_moves_on(
    daemon: DaemonProcess,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    nodes: dict[str, Client],
) -> None:
    """A stopped node is restarted (its data is gone): its queued deletes are dropped,
    the position moves past them, and later changes are invalidated normally."""
    daemon.start()
    node = memcached.nodes[1]
    ids = ids_on(app, node.server, 11)
    warm = ids.pop()
    # Let the daemon meet the node first (its stats handshake records pid and start time).
    nodes[node.server].set(f"user:{warm}", b"cached")
    users_db.execute("UPDATE users SET name = 'w' WHERE id = %s", (warm,))
    assert gone_after(nodes[node.server], f"user:{warm}") is not None
    node.pause()
    users_db.execute("UPDATE users SET name = 'x' WHERE id = ANY(%s)", (ids,))
    end = users_db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    time.sleep(0.5)
    node.resume()
    node.restart()
    assert wait_until(lambda: confirmed_at_least(users_db, "faults", end))
    nodes[node.server].close()
    key = f"user:{ids[0]}"
    nodes[node.server].set(key, b"cached")
    users_db.execute("UPDATE users SET name = 'z' WHERE id = %s", (ids[0],))
    assert gone_after(nodes[node.server], key) is not None
    assert "restarted" in daemon.log_path.read_text()


def test_fallback_depth_removes_copies_written_while_the_owner_was_dead(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, nodes: dict[str, Client]
) -> None:
    """An app's HashClient marks a stopped node dead and writes its keys to the next
    rendezvous choice (pymemcache #527); with fallback_depth: 1 those copies are deleted."""
    proc = make_daemon(tmp_path, users_db, memcached, pool={"fallback_depth": 1})
    app = HashClient(
        memcached.servers,
        use_pooling=False,
        no_delay=True,
        default_noreply=False,
        connect_timeout=0.2,
        timeout=0.2,
        retry_attempts=1,
        retry_timeout=0,
        dead_timeout=600,
        ignore_exc=True,
    )
    try:
        proc.start()
        dead = memcached.nodes[2]
        ids = ids_on(app, dead.server, 5)
        dead.stop()
        for i in ids:
            for _ in range(4):  # fail, mark dead, then land on the next choice
                app.set(f"user:{i}", b"old row")
        assert app.hasher.get_node(f"user:{ids[0]}") != dead.server
        copies = cached_anywhere(nodes, [f"user:{i}" for i in ids], down={dead.server})
        assert len(copies) == len(ids)
        users_db.execute("UPDATE users SET name = 'new' WHERE id = ANY(%s)", (ids,))
        assert wait_until(
            lambda: cached_anywhere(nodes, [f"user:{i}" for i in ids], down={dead.server}) == []
        )
    finally:
        memcached.nodes[2].ensure_running()
        app.close()
        proc.stop()


def test_postgres_restart_mid_stream_loses_nothing(
    daemon: DaemonProcess,
    users_db: PgDatabase,
    pg_cluster: PostgresCluster,
    app: HashClient,
    nodes: dict[str, Client],
    copies: NodeCopies,
) -> None:
    """PostgreSQL restarts while a 20,000-row transaction is being streamed: the daemon
    reconnects with backoff, resumes from the slot, and every key is deleted - on its
    owner only (copies planted on every node), keys of absent rows kept."""
    daemon.start()
    keys = [f"user:{i}" for i in range(1, 20001, 97)]
    for key in keys:
        app.set(key, b"cached")
    planted = [k for k in (f"user:{i}" for i in range(2, 20001, 101)) if k not in keys]
    absent = [f"user:{i}" for i in range(20001, 20021)]
    copies.plant([*planted, *absent])
    users_db.execute("UPDATE users SET name = 'big'")
    time.sleep(0.05)
    started = time.monotonic()
    pg_cluster.restart()
    restarted = time.monotonic() - started
    assert wait_until(lambda: cached_anywhere(nodes, keys) == [], timeout=30)
    daemon.wait_ready(30)
    copies.assert_exact(
        planted,
        absent,
        timeout=30,
        settle=lambda: copies.barrier("user:{}", range(1, 200), rewrite_users(users_db)),
    )
    after = f"user:{5}"
    app.set(after, b"cached")
    users_db.execute("UPDATE users SET name = 'after' WHERE id = 5")
    assert wait_until(lambda: app.get(after) is None)
    print(f"\n[postgres restart] restart took {restarted:.2f}s; stream resumed, 0 keys left")


def test_replication_connection_dropped_mid_transaction(
    daemon: DaemonProcess,
    users_db: PgDatabase,
    app: HashClient,
    nodes: dict[str, Client],
    copies: NodeCopies,
) -> None:
    """The walsender is terminated while a 20,000-row transaction streams: it is streamed
    again from the slot and no key is left; what is streamed twice is still deleted on
    the owner only (copies planted on every node), keys of absent rows kept."""
    daemon.start()
    keys = [f"user:{i}" for i in range(3, 20001, 89)]
    for key in keys:
        app.set(key, b"cached")
    planted = [k for k in (f"user:{i}" for i in range(4, 20001, 103)) if k not in keys]
    absent = [f"user:{i}" for i in range(20001, 20021)]
    copies.plant([*planted, *absent])
    users_db.execute("UPDATE users SET name = 'mid'")
    time.sleep(0.1)
    users_db.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
        " WHERE slot_name = 'faults'"
    )
    assert wait_until(lambda: cached_anywhere(nodes, keys) == [], timeout=30)
    copies.assert_exact(
        planted,
        absent,
        timeout=30,
        settle=lambda: copies.barrier("user:{}", range(1, 200), rewrite_users(users_db)),
    )


def test_second_replica_stands_by_and_takes_over(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """Two daemons started together: exactly one streams, the other is not ready; when
    the streaming one is killed the other takes over within seconds."""
    first = make_daemon(tmp_path, users_db, memcached, name="a")
    second = make_daemon(tmp_path, users_db, memcached, name="b")
    try:
        first.start(wait=False)
        second.start(wait=False)
        assert wait_until(lambda: first.ready() or second.ready())
        time.sleep(2.0)
        ready = [p for p in (first, second) if p.ready()]
        assert len(ready) == 1
        active = ready[0]
        standby = second if active is first else first
        assert standby.get("/readyz")[0] == 503
        assert "standby" in standby.get("/readyz")[1]
        active.kill()
        killed = time.monotonic()
        assert wait_until(standby.ready, timeout=15)
        print(
            f"\n[two replicas] standby took over {time.monotonic() - killed:.2f}s "
            "after the active one was SIGKILLed"
        )
        app.set("user:77", b"cached")
        users_db.execute("UPDATE users SET name = 'taken over' WHERE id = 77")
        assert wait_until(lambda: app.get("user:77") is None)
    finally:
        first.stop()
        second.stop()


def test_large_backlog_catches_up_and_lag_metric_shows_it(
    daemon: DaemonProcess, users_db: PgDatabase, app: HashClient, nodes: dict[str, Client]
) -> None:
    """200,000 changes behind: replication_lag_bytes shows the backlog, then drains to ~0;
    keys cached before the last update are gone."""
    daemon.start()
    daemon.terminate()
    for _ in range(10):
        users_db.execute("UPDATE users SET name = md5(name)")
    keys = [f"user:{i}" for i in range(1, 20001, 101)]
    for key in keys:
        app.set(key, b"cached")
    users_db.execute("UPDATE users SET name = 'last'")
    end = users_db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    started = time.monotonic()
    daemon.start()
    lags = []
    while not confirmed_at_least(users_db, "faults", end) and time.monotonic() - started < 60:
        lags.append(daemon.metric("invalidator_replication_lag_bytes"))
        time.sleep(0.1)
    drained = time.monotonic() - started
    assert cached_anywhere(nodes, keys) == []
    assert wait_until(lambda: daemon.metric("invalidator_replication_lag_bytes") < 1_000_000)
    print(
        f"\n[backlog] 220,000 changes: lag metric peaked at {max(lags) / 1e6:.1f} MB, "
        f"confirmed to the end {drained:.1f}s after start"
    )
    assert max(lags) > 10_000_000


BAD_RULES = [
    {"table": "users", "keys": ["user:{id}", "name:{name}", "mail:{email}"]},
    {"table": "events", "keys": ["event:{a}"]},
    {"table": "ghost", "keys": ["ghost:{id}"]},
    {"table": "docs", "keys": ["doc:{id}"]},
]


def test_bad_rows_are_counted_and_logged_while_good_keys_still_go(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, nodes: dict[str, Client]
) -> None:
    """NULL, space-containing, over-long and non-ASCII key values, MB-sized TOAST rows,
    a rule on a missing table, and a table whose UPDATE wal2json drops: the daemon keeps
    streaming, counts each problem, logs it, and invalidates every buildable key."""
    users_db.execute("CREATE TABLE events (a int, b text)")
    users_db.execute("INSERT INTO events VALUES (1, 'x')")
    users_db.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    proc = make_daemon(tmp_path, users_db, memcached, rules=BAD_RULES)
    proc.args = ["--lenient"]  # a missing table and no replica identity: run would refuse
    app = HashClient(
        memcached.servers,
        use_pooling=False,
        no_delay=True,
        default_noreply=False,
        allow_unicode_keys=True,
    )
    try:
        proc.start()
        for key in ("user:1", "user:2", "user:3", "user:4", "name:Zoë", "doc:1"):
            app.set(key, b"cached")
        with psycopg.connect(users_db.dsn, autocommit=True) as conn:
            conn.execute("UPDATE users SET email = NULL WHERE id = 1")
            conn.execute("UPDATE users SET name = 'has space' WHERE id = 2")
            conn.execute("UPDATE users SET name = repeat('x', 300) WHERE id = 3")
            conn.execute("UPDATE users SET name = 'Zoë' WHERE id = 4")
            conn.execute(
                "INSERT INTO docs SELECT 1, string_agg(md5(g::text), '')"
                " FROM generate_series(1, 150000) g"
            )  # ~4.8 MB
            conn.execute("UPDATE events SET b = 'y'")
        keys = ["user:1", "user:2", "user:3", "user:4", "name:Zoë", "doc:1"]
        assert wait_until(lambda: [k for k in keys if app.get(k) is not None] == [])
        assert wait_until(lambda: proc.metric("invalidator_unbuildable_keys_total") >= 6)
        log = proc.log_path.read_text()
        for reason in (
            "column email is null",
            "key contains whitespace",
            "wal2json dropped an UPDATE",
        ):
            assert reason in log, reason
        assert proc.ready()
    finally:
        app.close()
        proc.stop()


def test_malformed_config_stops_run_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """`invalidator run` with an unknown rule field: one line, exit 2, nothing started."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        "source: {dsn: 'postgresql://u:pw@127.0.0.1:1/x'}\n"
        "pools: {default: {servers: ['127.0.0.1:1']}}\n"
        "rules:\n  - {table: users, keys: ['user:{id}'], whenchanged: [a]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "invalidator", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        2,
        f"{config}: rules[0] (table public.users): whenchanged: unknown field"
        " (did you mean 'when_changed'?)\n",
    )


def test_slot_lost_while_down_is_not_silently_recreated_when_create_slot_is_false(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """create_slot: false and no slot: not ready, and /readyz says why."""
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="missing",
        servers=memcached.servers,
        rules=USER_RULES,
        create_slot=False,
    )
    try:
        proc.start(wait=False)

        def says_why() -> bool:
            try:
                return "does not exist" in proc.get("/readyz")[1]
            except OSError:
                return False  # not listening yet

        assert wait_until(says_why, timeout=10)
        assert proc.get("/readyz")[0] == 503
    finally:
        proc.stop()


def test_unreachable_node_overflow_becomes_one_flush_and_holds_the_position(
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
    app: HashClient,
    nodes: dict[str, Client],
) -> None:
    """A stopped node's queue passes max_queue: its work is replaced by one flush_all, the
    stream keeps going for healthy nodes, the slot does not confirm past the dropped work,
    and when the node answers again it is flushed (no stale key can survive)."""
    proc = make_daemon(tmp_path, users_db, memcached, pool={"max_queue": 500})
    try:
        proc.start()
        stuck = memcached.nodes[0]
        stuck_keys = [f"user:{i}" for i in ids_on(app, stuck.server, 50)]
        healthy_keys = [
            f"user:{i}" for i in range(1, 2000) if owner(app, f"user:{i}") != stuck.server
        ][:50]
        for key in stuck_keys + healthy_keys:
            app.set(key, b"cached")
        stuck.pause()
        users_db.execute("UPDATE users SET name = 'all'")  # ~6,700 deletes for the node
        end = users_db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
        assert wait_until(lambda: cached_anywhere(nodes, healthy_keys, down={stuck.server}) == [])
        assert wait_until(lambda: "operations replaced by flush_all" in proc.log_path.read_text())
        time.sleep(1.0)
        assert not confirmed_at_least(users_db, "faults", end)
        stuck.resume()
        assert wait_until(lambda: confirmed_at_least(users_db, "faults", end), timeout=20)
        assert cached_anywhere(nodes, stuck_keys + healthy_keys) == []
        assert proc.metric("invalidator_operations_total") > 0
        assert wait_until(
            lambda: 'op="flush_all",pool="*",result="flushed"' in proc.get("/metrics")[1]
        )
    finally:
        memcached.nodes[0].ensure_running()
        proc.stop()
