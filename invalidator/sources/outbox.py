"""The LISTEN/NOTIFY source's database side: an outbox table filled by triggers.

For databases without logical decoding. A row trigger records each change of a watched
table — operation, table, and the old and new values of the columns the rules need —
into ``invalidator.outbox`` and sends an empty ``pg_notify`` as a wake-up (the data is in
the table, so NOTIFY's 8,000-byte payload limit does not apply, and a missed
notification only delays work until the next poll). Rows are drained in batches and
deleted only after memcached acknowledged their work.

Ordering rule: ids are assigned at insert time, not at commit, so a transaction with
smaller ids can commit after one with larger ids. Only rows whose transaction id is
below the current snapshot's ``xmin`` are taken — every such transaction has finished —
so no committed row is ever skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from invalidator.core.changes import Change
from invalidator.core.rules import RuleSet, TableName
from invalidator.sources.schema import ENSURE_SCHEMA_SQL, SCHEMA

CHANNEL = "invalidator_outbox"
TRIGGER = "invalidator_capture"
TRUNCATE_TRIGGER = "invalidator_capture_truncate"
LOCK_TIMEOUT = "5s"  # for the DDL of setup: fail clearly rather than block writers

INSTALL_SQL = f"""
{ENSURE_SCHEMA_SQL}
CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
    id          bigserial PRIMARY KEY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    op          text NOT NULL,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    old_row     jsonb,
    new_row     jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS outbox_txid ON {SCHEMA}.outbox (txid, id);

-- TG_ARGV: the columns the rules read (all columns when none are given).
CREATE OR REPLACE FUNCTION {SCHEMA}.capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        INSERT INTO {SCHEMA}.outbox (op, schema_name, table_name)
        VALUES ('truncate', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    ELSE
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            old_row := to_jsonb(OLD);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            new_row := to_jsonb(NEW);
        END IF;
        IF TG_NARGS > 0 THEN
            SELECT jsonb_object_agg(key, value) INTO old_row
              FROM jsonb_each(old_row) WHERE key = ANY (TG_ARGV);
            SELECT jsonb_object_agg(key, value) INTO new_row
              FROM jsonb_each(new_row) WHERE key = ANY (TG_ARGV);
        END IF;
        INSERT INTO {SCHEMA}.outbox (op, schema_name, table_name, old_row, new_row)
        VALUES (lower(TG_OP), TG_TABLE_SCHEMA, TG_TABLE_NAME, old_row, new_row);
    END IF;
    -- A wake-up only; identical notifications are merged per transaction.
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$;
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One captured change and the transaction it belongs to."""

    id: int
    txid: int
    change: Change
    created: float  # when the trigger ran (Unix seconds), for the latency metric


def install(conn: psycopg.Connection[Any], rules: RuleSet) -> tuple[list[str], list[str]]:
    """Create the schema, outbox and function; put triggers on every watched table and
    remove them from tables no rule watches any more. Idempotent. Returns (added, removed)
    as ``schema.table`` names."""
    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    conn.execute(INSTALL_SQL)
    wanted = {name: sorted(_columns(rules, name)) for name in rules.tables}
    existing = triggered_tables(conn)
    added, removed = [], []
    for schema, table in sorted(existing - set(wanted)):
        for trigger in (TRIGGER, TRUNCATE_TRIGGER):
            conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(trigger), sql.Identifier(schema, table)
                )
            )
        removed.append(f"{schema}.{table}")
    for (schema, table), columns in sorted(wanted.items()):
        target = sql.Identifier(schema, table)
        function = sql.Identifier(SCHEMA, _function_name(schema, table))
        # Replacing the function takes no lock on the table; the columns it records
        # follow the rules on every start.
        conn.execute(_row_function(function, columns))
        if (schema, table) in existing:
            continue
        # CREATE TRIGGER locks the table against writes: only when missing, and bounded by
        # lock_timeout so a long transaction cannot make every writer queue behind it.
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
                " FOR EACH ROW EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(TRIGGER), target, function)
        )
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER TRUNCATE ON {}"
                " FOR EACH STATEMENT EXECUTE FUNCTION {}.capture()"
            ).format(sql.Identifier(TRUNCATE_TRIGGER), target, sql.Identifier(SCHEMA))
        )
        added.append(f"{schema}.{table}")
    return added, removed


def triggered_tables(conn: psycopg.Connection[Any]) -> set[TableName]:
    """The tables that have the capture trigger now."""
    return {
        (s, t)
        for s, t in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE g.tgname = %s",
            (TRIGGER,),
        )
    }


def uninstall(conn: psycopg.Connection[Any]) -> None:
    """Drop every trigger and the schema (outbox included)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, g.tgname FROM pg_trigger g JOIN pg_class c"
        " ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE g.tgname IN (%s, %s)",
        (TRIGGER, TRUNCATE_TRIGGER),
    ).fetchall()
    for schema, table, trigger in rows:
        conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(trigger), sql.Identifier(schema, table)
            )
        )
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


def _function_name(schema: str, table: str) -> str:
    import hashlib

    digest = hashlib.sha1(f"{schema}.{table}".encode()).hexdigest()[:12]
    return f"capture_{digest}"


def _row_function(function: sql.Identifier, columns: list[str]) -> sql.Composed:
    """A row trigger function for one table that records exactly the rules' columns with
    jsonb_build_object (several times cheaper than filtering to_jsonb of the whole row)."""

    def image(record: str) -> sql.Composable:
        if not columns:
            return sql.SQL("to_jsonb({})").format(sql.SQL(record))
        pairs = sql.SQL(", ").join(
            sql.SQL("{}, {}.{}").format(sql.Literal(c), sql.SQL(record), sql.Identifier(c))
            for c in columns
        )
        return sql.SQL("jsonb_build_object({})").format(pairs)

    return sql.SQL("""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {outbox} (op, schema_name, table_name, old_row, new_row)
    VALUES (lower(TG_OP), TG_TABLE_SCHEMA, TG_TABLE_NAME,
            CASE WHEN TG_OP <> 'INSERT' THEN {old} END,
            CASE WHEN TG_OP <> 'DELETE' THEN {new} END);
    PERFORM pg_notify({channel}, '');
    RETURN NULL;
END
$$""").format(
        function=function,
        outbox=sql.Identifier(SCHEMA, "outbox"),
        old=image("OLD"),
        new=image("NEW"),
        channel=sql.Literal(CHANNEL),
    )


def _columns(rules: RuleSet, name: TableName) -> set[str]:
    columns: set[str] = set()
    for rule in rules.rules_for(*name):
        columns |= rule.columns
    return columns


FETCH_SQL = f"""
SELECT id, txid::text::bigint, op, schema_name, table_name, old_row, new_row,
       extract(epoch FROM created_at)::float8
  FROM {SCHEMA}.outbox
 WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
   AND (txid, id) > (%s::text::xid8, %s)
 ORDER BY txid, id
 LIMIT %s
"""


def fetch(conn: psycopg.Connection[Any], after: tuple[int, int], limit: int) -> list[OutboxRow]:
    """Rows of finished transactions after the cursor ``(txid, id)``, in that order.

    Safe as a cursor: once every transaction below ``xmin`` has finished, no row with a
    smaller ``(txid, id)`` can appear any more."""
    rows = conn.execute(FETCH_SQL, (str(after[0]), after[1], limit)).fetchall()
    return [_row(r) for r in rows]


def numeric_exact(conn: psycopg.Connection[Any]) -> None:
    """Decode jsonb numbers like wal2json's: numeric keeps its scale (Decimal)."""
    import json
    from decimal import Decimal
    from functools import partial

    from psycopg.types.json import set_json_loads

    set_json_loads(partial(json.loads, parse_float=Decimal), conn)


def _row(r: tuple[Any, ...]) -> OutboxRow:
    id_, txid, op, schema, table, old, new, created = r
    change = Change(op, schema, table, _plain(new), _plain(old))
    return OutboxRow(id_, txid, change, created)


def _plain(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


def delete(conn: psycopg.Connection[Any], ids: Iterable[int]) -> None:
    conn.execute(
        sql.SQL("DELETE FROM {}.outbox WHERE id = ANY(%s)").format(sql.Identifier(SCHEMA)),
        (list(ids),),
    )


def backlog(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.outbox").format(sql.Identifier(SCHEMA))
    ).fetchone()
    return int(row[0]) if row else 0
