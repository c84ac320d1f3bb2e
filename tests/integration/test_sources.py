"""The same end-to-end guarantees for every source: wal2json and pgoutput logical
replication and the LISTEN/NOTIFY outbox (triggers)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from tests.cache_aside import (
    ChurningWriter,
    NodeCopies,
    assert_churn_invalidated,
    get_user,
    rewrite_users,
    wait_until,
)
from tests.cache_aside import wait_gone as _wait_gone
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

RULES = [{"table": "users", "keys": ["user:{id}", "user_by_email:{email}"]}]


# This file's waits allow 15 s (the shared default is 10 s).
wait_gone = partial(_wait_gone, timeout=15.0)


@pytest.fixture(params=["wal2json", "pgoutput", "notify"])
def source(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def copies(memcached: MemcachedPool) -> Iterator[NodeCopies]:
    """Copies of keys on every node, to check each delete reached its owner only."""
    with NodeCopies(memcached.servers) as nodes:
        yield nodes


@pytest.fixture
def daemon(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, source: str
) -> Iterator[DaemonProcess]:
    proc = DaemonProcess.create(
        tmp_path, dsn=users_db.dsn, slot="src", servers=memcached.servers, rules=RULES, kind=source
    )
    yield proc
    proc.stop()


def test_cache_aside_update_and_delete_behind_the_apps_back(
    daemon: DaemonProcess, users_db: PgDatabase, app: HashClient, copies: NodeCopies
) -> None:
    """The app caches; SQL changes the row; the key is gone and the app reads the new row;
    a changed email removes the old and new email keys; a DELETE removes the user. With
    copies on every node: each key leaves its owner only, and other rows' keys stay."""
    daemon.start()
    get_user(app, users_db, 7)
    neighbours = ["user:6", "user_by_email:u6@example.com", "user:10"]
    copies.plant(["user:7", "user_by_email:u7@example.com", *neighbours])
    users_db.execute("UPDATE users SET name = 'renamed' WHERE id = 7")
    assert wait_gone(app, ["user:7"]) == []
    copies.assert_exact(
        ["user:7", "user_by_email:u7@example.com"],
        neighbours,
        settle=lambda: copies.barrier("user:{}", range(400, 501), rewrite_users(users_db)),
    )
    assert get_user(app, users_db, 7) == {"id": 7, "email": "u7@example.com", "name": "renamed"}
    for key in ("user_by_email:u8@example.com", "user_by_email:n8@example.com", "user:9"):
        app.set(key, "cached")
    changed = [
        "user:8",
        "user_by_email:u8@example.com",
        "user_by_email:n8@example.com",
        "user:9",
        "user_by_email:u9@example.com",
    ]
    copies.plant([*changed, *neighbours])
    users_db.execute("UPDATE users SET email = 'n8@example.com' WHERE id = 8")
    users_db.execute("DELETE FROM users WHERE id = 9")
    assert (
        wait_gone(app, ["user_by_email:u8@example.com", "user_by_email:n8@example.com", "user:9"])
        == []
    )
    copies.assert_exact(
        changed,
        neighbours,
        settle=lambda: copies.barrier("user:{}", range(400, 501), rewrite_users(users_db)),
    )


def test_changes_while_the_daemon_is_down_are_invalidated_when_it_returns(
    daemon: DaemonProcess, users_db: PgDatabase, app: HashClient, copies: NodeCopies
) -> None:
    """Stopped daemon: 200 changes accumulate (slot or outbox) and are applied on start,
    each on its key's owner only (rows 201-250 keep their copies everywhere)."""
    daemon.start()
    daemon.terminate()
    for i in range(1, 201):
        app.set(f"user:{i}", "cached")
    copies.plant(f"user:{i}" for i in range(1, 251))
    with psycopg.connect(users_db.dsn, autocommit=True) as conn:
        for i in range(1, 201):
            conn.execute("UPDATE users SET name = 'offline' WHERE id = %s", (i,))
    daemon.start()
    assert wait_gone(app, [f"user:{i}" for i in range(1, 201)]) == []
    copies.assert_exact(
        [f"user:{i}" for i in range(1, 201)],
        [f"user:{i}" for i in range(201, 251)],
        settle=lambda: copies.barrier("user:{}", range(1, 201), rewrite_users(users_db)),
    )


def test_repeated_sigkill_loses_no_invalidation(
    daemon: DaemonProcess,
    users_db: PgDatabase,
    app: HashClient,
    memcached: MemcachedPool,
    copies: NodeCopies,
) -> None:
    """SIGKILL 5 times while rows change; after catch-up no changed row's key is cached.
    Copies of every row's user key on every node: deletes (and their replays) reach the
    owner only; keys of rows that do not exist stay."""
    absent = [f"user:{i}" for i in range(501, 521)]
    copies.plant([*(f"user:{i}" for i in range(1, 501)), *absent])
    daemon.start()
    with ChurningWriter(memcached.servers, users_db.dsn, seed=11, sizes=[1, 1, 5, 20]) as writer:
        for _ in range(5):
            time.sleep(random.uniform(0.3, 0.7))
            daemon.kill()
            daemon.start()
    assert_churn_invalidated(copies, app, writer, users_db, absent, at_least=50)


def test_a_stopped_node_gets_its_deletes_when_it_answers_again(
    daemon: DaemonProcess, users_db: PgDatabase, app: HashClient, memcached: MemcachedPool
) -> None:
    """SIGSTOP the owner of some keys: healthy nodes' keys go at once, the stopped node's
    keys once it resumes; nothing is left."""
    daemon.start()
    node = memcached.nodes[0]
    ids = [i for i in range(1, 300) if app.hasher.get_node(f"user:{i}") == node.server][:10]
    # Keys owned by the healthy nodes only: a read from the stopped node would block.
    others = [i for i in range(1, 300) if app.hasher.get_node(f"user:{i}") != node.server][:10]
    direct = Client(node.server, no_delay=True, timeout=2)
    try:
        for i in ids:
            direct.set(f"user:{i}", b"cached")
        for i in others:
            app.set(f"user:{i}", "cached")
        node.pause()
        try:
            users_db.execute("UPDATE users SET name = 'x' WHERE id = ANY(%s)", (ids + others,))
            assert wait_gone(app, [f"user:{i}" for i in others]) == []
        finally:
            node.resume()
        end = time.monotonic() + 20
        while any(direct.get(f"user:{i}") is not None for i in ids) and time.monotonic() < end:
            time.sleep(0.05)
        assert [i for i in ids if direct.get(f"user:{i}") is not None] == []
    finally:
        direct.close()


def test_unchanged_toasted_values_do_not_hide_a_change(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient, source: str
) -> None:
    """A body stored out of line (TOAST): an UPDATE of the title alone (the body unchanged,
    not in the new row of a replication stream) invalidates the row's, the old and the new
    title's keys, and a refresh writes the whole row, body included, never a null body."""
    users_db.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    users_db.execute("ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL")
    users_db.execute("ALTER TABLE docs REPLICA IDENTITY FULL")
    users_db.execute(
        "INSERT INTO docs SELECT 1, 'first', string_agg(md5(g::text), '') "
        "FROM generate_series(1, 3000) g"
    )  # 96 kB, out of line
    body = users_db.execute("SELECT body FROM docs")[0][0]
    rules = [
        {"table": "docs", "keys": ["doc:{id}", "doc_title:{title}"]},
        {
            "table": "docs",
            "keys": ["doc_full:{id}"],
            "action": "refresh",
            "value": {"json": ["id", "title", "body"]},
        },
    ]
    proc = DaemonProcess.create(
        tmp_path, dsn=users_db.dsn, slot="src", servers=memcached.servers, rules=rules, kind=source
    )
    try:
        proc.start()
        keys = ["doc:1", "doc_title:first", "doc_title:second"]
        for key in keys:
            app.set(key, "cached")
        users_db.execute("UPDATE docs SET title = 'second' WHERE id = 1")
        assert wait_gone(app, keys) == []
        expected = json.dumps({"id": 1, "title": "second", "body": body}).encode()
        assert wait_until(lambda: app.get("doc_full:1") == expected)
    finally:
        proc.stop()


def test_a_table_altered_while_streaming_keeps_being_invalidated(
    tmp_path: Path, daemon: DaemonProcess, users_db: PgDatabase, app: HashClient
) -> None:
    """ADD COLUMN, DROP COLUMN and a column type change while the daemon streams: each
    later change of the table is still read (a new relation description) and invalidated."""
    daemon.start()
    statements = [
        "ALTER TABLE users ADD COLUMN nick text DEFAULT 'n'",
        "ALTER TABLE users DROP COLUMN name",
        "ALTER TABLE users ALTER COLUMN id TYPE bigint",
    ]
    for round_, statement in enumerate(statements, 1):
        users_db.execute(statement)
        app.set(f"user:{round_}", "cached")
        app.set(f"user_by_email:u{round_}@example.com", "cached")
        users_db.execute(
            "UPDATE users SET email = 'v' || id || '@example.com' WHERE id = %s", (round_,)
        )
        gone = [f"user:{round_}", f"user_by_email:u{round_}@example.com"]
        assert wait_gone(app, gone) == [], statement


def test_outbox_rows_of_out_of_order_commits_are_not_skipped_and_are_removed(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """Transaction A takes its id first but writes and commits after B: B's row is held
    back until A finishes, both are applied, and the outbox ends empty."""
    import subprocess
    import sys

    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="src",
        servers=memcached.servers,
        rules=RULES,
        kind="notify",
    )
    try:
        proc.start()
        app.set("user:21", "cached")
        app.set("user:22", "cached")
        with psycopg.connect(users_db.dsn) as a, psycopg.connect(users_db.dsn) as b:
            a.execute("SELECT pg_current_xact_id()")  # A's transaction id comes first
            b.execute("UPDATE users SET name = 'b' WHERE id = 22")
            b.commit()
            time.sleep(1.5)  # several polls while A is open
            assert app.get("user:22") is not None  # held back: A might still write
            a.execute("UPDATE users SET name = 'a' WHERE id = 21")
            a.commit()
        assert wait_gone(app, ["user:21", "user:22"]) == []

        def outbox_rows() -> int:
            out = subprocess.run(
                [sys.executable, "-m", "invalidator", "status", "--config", str(proc.config)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            return int(json.loads(out)["outbox_rows"])

        end = time.monotonic() + 10
        while outbox_rows() and time.monotonic() < end:
            time.sleep(0.1)
        assert outbox_rows() == 0
    finally:
        proc.stop()


def test_setup_follows_rules_changes_and_teardown_removes_everything(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """setup is idempotent; after a rules change it adds and removes triggers; teardown
    drops triggers, function, outbox and schema."""
    import subprocess
    import sys

    users_db.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="src",
        servers=memcached.servers,
        rules=RULES,
        kind="notify",
    )

    def cli(command: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "invalidator", command, "--config", str(proc.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    def triggered() -> list[str]:
        return [
            r[0]
            for r in users_db.execute(
                "SELECT DISTINCT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
                " WHERE g.tgname LIKE 'invalidator_capture%' ORDER BY 1"
            )
        ]

    assert "triggers added on public.users" in cli("setup")
    assert "triggers added on no new table" in cli("setup")
    config = json.loads(proc.config.read_text())
    config["rules"] = [{"table": "orders", "keys": ["order:{id}"]}]
    proc.config.write_text(json.dumps(config))
    assert "added on public.orders; removed from public.users" in cli("setup")
    assert triggered() == ["orders"]
    cli("teardown")
    assert triggered() == []
    assert users_db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'invalidator'") == [
        (0,)
    ]
