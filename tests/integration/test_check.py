"""`invalidator check` teaches (every check listed, ✓/✗ and what it looked at) and `run`
performs its database checks before streaming: a config whose keys cannot be built stops
it with exit 2, unless `--lenient`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase


def _daemon(
    tmp: Path, db: PgDatabase, memcached: MemcachedPool, rules: list[dict[str, Any]]
) -> DaemonProcess:
    return DaemonProcess.create(tmp, dsn=db.dsn, slot="chk", servers=memcached.servers, rules=rules)


def _users(db: PgDatabase) -> None:
    db.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text)")


def test_check_lists_every_check_with_what_it_looked_at(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """A clean config: a ✓ line for the file, the database, the table, each template's
    columns and replica identity, the plugin and every node; exit 0."""
    _users(pg_db)
    proc = _daemon(tmp_path, pg_db, memcached, [{"table": "users", "keys": ["user:{id}"]}])
    result = proc.cli("check")
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stdout + result.stderr
    expected = [
        "✓ config: parsed: wal2json source, 1 rule on 1 table, 1 pool (3 static nodes)",
        "✓ database: the role may open replication connections",
        "✓ database: wal_level is logical",
        "✓ database: slot chk does not exist yet: `invalidator setup` or the first run creates it",
        "✓ database: the wal2json output plugin is available",
        "✓ rules[0] (table public.users): table: exists (3 columns; REPLICA IDENTITY DEFAULT: id)",
        "✓ rules[0] (table public.users): keys[0]: 'user:{id}': columns exist (id)",
        "✓ rules[0] (table public.users): keys[0]: 'user:{id}': the old row of UPDATE and"
        " DELETE carries id (REPLICA IDENTITY DEFAULT: id)",
    ] + [f"✓ memcached node {server}: answers (memcached " for server in memcached.servers]
    for line in expected:
        assert any(got.startswith(line) for got in lines), (line, result.stdout)
    assert lines[-1].endswith(": 12 checks: 12 passed, 0 errors, 0 warnings"), result.stdout


def test_an_unknown_column_names_the_real_ones_and_gets_no_replica_identity_advice(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """`emial` in a template and in value.json: did-you-mean and the table's columns, the
    full field path, and no "REPLICA IDENTITY FULL" line for a column that does not exist."""
    _users(pg_db)
    proc = _daemon(
        tmp_path,
        pg_db,
        memcached,
        [
            {"table": "users", "keys": ["user_by_email:{emial}"]},
            {
                "table": "users",
                "keys": ["user:{id}"],
                "action": "refresh",
                "value": {"json": ["id", "name", "emial"]},
            },
        ],
    )
    result = proc.cli("check")
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert result.returncode == 1
    assert (
        "✗ rules[0] (table public.users): keys[0]: 'user_by_email:{emial}': unknown column"
        " emial (did you mean email? columns of public.users: id, email, name)"
    ) in lines
    assert (
        "✗ rules[1] (table public.users): value.json[2]: unknown column emial (did you mean"
        " email? columns of public.users: id, email, name)"
    ) in lines
    assert [line for line in lines if "REPLICA IDENTITY FULL" in line] == []


def test_check_json_is_one_document_for_ci(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """`--format json`: config, exit_code, summary and one record per check."""
    _users(pg_db)
    proc = _daemon(tmp_path, pg_db, memcached, [{"table": "ghost", "keys": ["g:{id}"]}])
    result = proc.cli("check", "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == document["exit_code"] == 1
    assert document["config"] == str(proc.config)
    failed = [c for c in document["checks"] if c["result"] == "error"]
    assert failed == [
        {
            "check": "tables",
            "result": "error",
            "where": "rules[0] (table public.ghost): table",
            "message": "no such table (tables in public: users)",
            "stops_run": True,
            "rule": 0,
        }
    ]
    assert document["summary"] == {
        "checks": len(document["checks"]),
        "passed": len(document["checks"]) - 1,
        "errors": 1,
        "warnings": 0,
    }


def test_run_refuses_to_start_when_keys_could_not_be_built(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """An unknown column and a template outside the replica identity: exit 2 with the ✓/✗
    list, before any slot is created."""
    _users(pg_db)
    proc = _daemon(
        tmp_path,
        pg_db,
        memcached,
        [{"table": "users", "keys": ["user:{id}", "user_by_email:{email}", "x:{nope}"]}],
    )
    result = proc.cli("run")
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert result.returncode == 2, result.stderr
    assert lines[0] == (
        f"{proc.config}: run refuses to start: 2 problems would leave keys unbuilt or"
        " misplaced (fix them, or start anyway with --lenient)"
    )
    assert (
        "✗ rules[0] (table public.users): keys[2]: 'x:{nope}': unknown column nope (columns"
        " of public.users: id, email, name)"
    ) in lines
    assert (
        "✗ rules[0] (table public.users): keys[1]: 'user_by_email:{email}' needs old email on"
        " UPDATE and DELETE but REPLICA IDENTITY DEFAULT carries only id: the old key cannot be"
        " built (ALTER TABLE public.users REPLICA IDENTITY FULL)"
    ) in lines
    assert "✓ rules[0] (table public.users): keys[0]: 'user:{id}': columns exist (id)" in lines
    slots = pg_db.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'chk'")
    assert slots == [(0,)]


def test_run_lenient_starts_and_readyz_lists_the_failed_checks(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """`--lenient`: streams, /readyz is 200 and names each failed check; a warning line."""
    _users(pg_db)
    proc = _daemon(tmp_path, pg_db, memcached, [{"table": "users", "keys": ["x:{nope}"]}])
    proc.args = ["--lenient"]
    proc.start()
    try:
        status, body = proc.get("/readyz")
        assert status == 200
        assert body.splitlines() == [
            "streaming",
            "started with a failed check (--lenient): ✗ rules[0] (table public.users):"
            " keys[0]: 'x:{nope}': unknown column nope (columns of public.users: id, email,"
            " name)",
        ]
        warnings = [
            json.loads(line)
            for line in proc.log_lines()
            if "starting despite a failed check" in line
        ]
        assert [(w["level"], w["where"]) for w in warnings] == [
            ("warning", "rules[0] (table public.users): keys[0]")
        ]
    finally:
        proc.stop()
