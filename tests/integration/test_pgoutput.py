"""What only the pgoutput source has: its publication (tables, column lists, partition
roots), kept in step with the rules by setup and run, dropped by teardown, and checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pymemcache.client.hash import HashClient

from tests.cache_aside import wait_gone, wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

RULES = [
    {"table": "users", "keys": ["user:{id}", "user_by_email:{email}"]},
    {"table": "orders", "keys": ["order:{id}"], "when_changed": ["total"]},
]


def published(db: PgDatabase, publication: str) -> dict[str, Any]:
    """The publication's tables and column lists (None: every column), as PostgreSQL has it."""
    rows = db.execute(
        "SELECT schemaname || '.' || tablename, attnames::text[] FROM pg_publication_tables"
        " WHERE pubname = %s",
        (publication,),
    )
    return {name: sorted(columns) for name, columns in rows}


def make(tmp_path: Path, db: PgDatabase, memcached: MemcachedPool, **kwargs: Any) -> DaemonProcess:
    kwargs.setdefault("rules", RULES)
    return DaemonProcess.create(
        tmp_path, dsn=db.dsn, slot="pgo", servers=memcached.servers, kind="pgoutput", **kwargs
    )


def schema(db: PgDatabase) -> None:
    db.execute("CREATE TABLE users (id int PRIMARY KEY, email text, name text, bio text)")
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text)")
    db.execute("CREATE TABLE audit (id int PRIMARY KEY, what text)")


def test_setup_publishes_exactly_the_columns_the_rules_read_and_teardown_drops_it(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """setup: the publication (rule columns + identity), then the pgoutput slot; again: in
    step; teardown: both gone."""
    schema(pg_db)
    proc = make(tmp_path, pg_db, memcached)
    assert proc.cli("setup").stdout.splitlines() == [
        "publication pgo: created with 2 tables",
        "slot pgo: created",
    ]
    assert published(pg_db, "pgo") == {
        "public.users": ["email", "id"],
        "public.orders": ["id", "total"],
    }
    assert pg_db.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = 'pgo'") == [
        ("pgoutput",)
    ]
    assert pg_db.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = 'pgo'") == [(True,)]
    assert proc.cli("setup").stdout.splitlines()[0] == "publication pgo: in step with the rules"
    status = json.loads(proc.cli("status").stdout)
    assert status["publication"] == {
        "name": "pgo",
        "exists": True,
        "tables": {"public.orders": ["id", "total"], "public.users": ["email", "id"]},
    }
    assert proc.cli("teardown").stdout.splitlines() == [
        "slot pgo: dropped",
        "publication pgo: dropped",
    ]
    assert published(pg_db, "pgo") == {}
    assert pg_db.execute("SELECT count(*) FROM pg_publication") == [(0,)]


def test_run_brings_the_publication_in_step_after_a_rules_change(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """A rule on another table and column: the next run alters the publication (no table
    left that no rule reads), and the new rule's keys are invalidated."""
    schema(pg_db)
    pg_db.execute("INSERT INTO audit VALUES (1, 'x')")
    # audit:{what} needs the old `what` on UPDATE: run refuses to start without it.
    pg_db.execute("ALTER TABLE audit REPLICA IDENTITY FULL")
    proc = make(tmp_path, pg_db, memcached)
    proc.cli("setup")
    config = json.loads(proc.config.read_text())
    config["rules"] = [
        {
            "table": "users",
            "keys": ["user:{id}"],
            "action": "refresh",
            "value": {"json": ["id", "name"]},
        },
        {"table": "audit", "keys": ["audit:{what}"]},
    ]
    proc.config.write_text(json.dumps(config))
    try:
        proc.start()
        assert published(pg_db, "pgo") == {
            "public.users": ["id", "name"],
            "public.audit": ["id", "what"],
        }
        app.set("audit:x", "cached")
        app.set("audit:y", "cached")
        pg_db.execute("UPDATE audit SET what = 'y' WHERE id = 1")
        assert wait_gone(app, ["audit:y"]) == []
    finally:
        proc.stop()


def test_replica_identity_full_publishes_every_column(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """With REPLICA IDENTITY FULL a column list would make UPDATEs fail: none is set."""
    schema(pg_db)
    pg_db.execute("ALTER TABLE users REPLICA IDENTITY FULL")
    make(tmp_path, pg_db, memcached).cli("setup")
    assert published(pg_db, "pgo")["public.users"] == ["bio", "email", "id", "name"]
    pg_db.execute("UPDATE users SET bio = 'b'")  # accepted: the list covers the identity


def test_a_table_without_replica_identity_is_refused_with_the_reason(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """Publishing it would make the application's UPDATEs fail: setup refuses (exit 1,
    one line), check says why, and nothing is created."""
    pg_db.execute("CREATE TABLE events (a int, b text)")
    proc = make(tmp_path, pg_db, memcached, rules=[{"table": "events", "keys": ["event:{a}"]}])
    result = proc.cli("setup")
    assert result.returncode == 1
    assert (
        "table public.events has REPLICA IDENTITY DEFAULT and no primary key: in a publication"
        " its UPDATEs and DELETEs would fail" in result.stderr
    )
    assert pg_db.execute("SELECT count(*) FROM pg_publication") == [(0,)]
    check = proc.cli("check")
    assert check.returncode == 1
    assert any(
        line.strip().startswith("✗ source.publication (pgo): table public.events")
        for line in check.stdout.splitlines()
    ), check.stdout
    pg_db.execute("UPDATE events SET b = 'still works'")


def test_check_reports_a_publication_that_misses_a_rules_columns(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """An existing publication without a column a template needs: an error naming the rule,
    what is published and what is missing; after setup, no finding about it is left."""
    schema(pg_db)
    pg_db.execute("CREATE PUBLICATION pgo FOR TABLE users (id), orders (id, total)")
    proc = make(tmp_path, pg_db, memcached)
    check = proc.cli("check")
    assert check.returncode == 1
    assert (
        "✗ rules[0] (table public.users): publication pgo publishes only"
        " id: the rule reads email too (setup or run adds them)"
    ) in [line.strip() for line in check.stdout.splitlines()], check.stdout
    proc.cli("setup")
    after = [line.strip() for line in proc.cli("check").stdout.splitlines()]
    assert [line for line in after if "publication" in line and line[0] in "✗⚠"] == [], after


def test_a_role_that_may_not_alter_the_publication_streams_from_one_that_covers_the_rules(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """Managed databases: the owner created the publication with more columns than the
    rules read; the daemon's role may not alter it, warns, and streams from it."""
    schema(pg_db)
    role = f"inval_{pg_db.name}"
    pg_db.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
    pg_db.execute(f"GRANT SELECT ON users, orders TO {role}")
    pg_db.execute("CREATE PUBLICATION pgo FOR TABLE users (id, email, name), orders")
    proc = DaemonProcess.create(
        tmp_path,
        dsn=pg_db.cluster.dsn(pg_db.name, role),
        slot="pgo",
        servers=memcached.servers,
        rules=RULES,
        kind="pgoutput",
    )
    # RULES' user_by_email:{email} needs REPLICA IDENTITY FULL for UPDATEs; this test is
    # about the publication and only inserts.
    proc.args = ["--lenient"]
    try:
        proc.start()
        app.set("user_by_email:x@example.com", "cached")
        pg_db.execute("INSERT INTO users VALUES (1, 'x@example.com', 'x', 'b')")
        assert wait_gone(app, ["user_by_email:x@example.com"]) == []
        assert "publication left as it is" in proc.log_path.read_text()
        assert published(pg_db, "pgo")["public.users"] == ["email", "id", "name"]
    finally:
        proc.stop()
        pg_db.execute("SELECT pg_drop_replication_slot('pgo')")
        pg_db.execute(f"DROP OWNED BY {role}")
        pg_db.execute(f"DROP ROLE {role}")


def test_a_table_added_to_the_publication_after_changes_the_slot_holds_is_a_gap(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """A rule on a new table, added while the daemon was down: the audit rows changed
    meanwhile were decoded without that table in the publication and never come back.
    The pools are emptied (on_gap: flush) and the gap is counted, not passed over."""
    schema(pg_db)
    pg_db.execute("INSERT INTO audit VALUES (1, 'x')")
    users_only = [{"table": "users", "keys": ["user:{id}"]}]
    proc = make(tmp_path, pg_db, memcached, rules=users_only)
    with proc.start():
        pass  # streamed once: the slot and the publication (users) exist
    app.set("audit:1", "cached")
    app.set("user:9", "cached")  # unrelated: emptied too
    pg_db.execute("UPDATE audit SET what = 'changed while down' WHERE id = 1")
    config = json.loads(proc.config.read_text())
    config["rules"] = [*users_only, {"table": "audit", "keys": ["audit:{id}"]}]
    proc.config.write_text(json.dumps(config))
    with proc.start():
        assert wait_gone(app, ["audit:1", "user:9"], timeout=15) == []
        assert proc.breakdown("invalidator_gaps_total", "reason") == {"publication_extended": 1}
        assert "lacked table public.audit" in proc.log_text()
    # Answered: the next start, with the publication in step, finds no gap.
    app.set("user:9", "cached")
    with proc.start():
        assert proc.metric("invalidator_gaps_total") == 0
        assert app.get("user:9") == b"cached"


def test_a_rule_on_a_partition_whose_root_has_rules_is_refused_by_name(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """Its changes arrive under the root's name (publish_via_partition_root): the rule
    would never match, silently. The daemon stays unready and says why."""
    pg_db.execute("CREATE TABLE events (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)")
    pg_db.execute("CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (1000)")
    proc = make(
        tmp_path,
        pg_db,
        memcached,
        rules=[
            {"table": "events", "keys": ["event:{id}"]},
            {"table": "events_1", "keys": ["early_event:{id}"]},
        ],
    )
    with proc.start(wait=False):
        assert wait_until(
            lambda: "rules on partition public.events_1 never match" in proc.log_text(), 20
        ), proc.log_tail()
        status, _body = proc.get("/readyz")
        assert status != 200
