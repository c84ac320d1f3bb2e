"""Knowing when the notify source may have missed changes: the outbox's own marker.

The outbox's triggers are the only record of a change. If the outbox table is dropped and
created again, its unread rows are gone; if a watched table's trigger is dropped, the
changes made meanwhile were never recorded. Either way a daemon that simply re-installed
what is missing would carry on with those keys stale. So one marker row in
``invalidator.outbox_marker`` remembers the outbox table (its OID) and the tables that had
triggers when the daemon last started; every session compares, and a difference is a gap
answered by ``source.on_gap`` like the logical sources' (``sources/continuity.py``). The
marker is brought up to date only once the gap's cache work is acknowledged. Dropping the
whole ``invalidator`` schema (``invalidator teardown``) removes the marker too: that is a
fresh install, not a gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from invalidator.sources.schema import SCHEMA

OUTBOX_RECREATED = "outbox_recreated"  # the outbox table was dropped and created again
TRIGGER_MISSING = "trigger_missing"  # a watched table lost its capture trigger

MARKER_SQL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox_marker (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    outbox      oid NOT NULL,
    tables      text[] NOT NULL,
    pending_gap text,
    updated_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class OutboxMarker:
    """The outbox and the triggered tables as the daemon last left them."""

    outbox: int
    tables: frozenset[str]
    pending_gap: str | None = None


def detect_outbox_gap(
    marker: OutboxMarker | None, outbox: int | None, triggered: frozenset[str]
) -> tuple[str, str] | None:
    """(reason, detail) when changes may have been missed since the marker, else None.

    ``outbox`` is the outbox table's OID now (None: absent), ``triggered`` the tables
    whose capture trigger exists now (before any is re-installed)."""
    if marker is None:
        return None
    if marker.pending_gap:
        return marker.pending_gap, f"a gap found earlier ({marker.pending_gap}) was not answered"
    if outbox != marker.outbox:
        return OUTBOX_RECREATED, "the outbox table was dropped (its unread changes are lost)"
    missing = sorted(marker.tables - triggered)
    if missing:
        return TRIGGER_MISSING, f"capture triggers were dropped from {', '.join(missing)}"
    return None


def current_outbox(conn: psycopg.Connection[Any]) -> int | None:
    row = conn.execute(f"SELECT to_regclass('{SCHEMA}.outbox')::oid").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else None


def read_marker(conn: psycopg.Connection[Any]) -> OutboxMarker | None:
    """The marker, or None when there is none (a first start, or after teardown)."""
    exists = conn.execute(f"SELECT to_regclass('{SCHEMA}.outbox_marker')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute(f"SELECT outbox, tables, pending_gap FROM {SCHEMA}.outbox_marker").fetchone()
    if row is None:
        return None
    return OutboxMarker(int(row[0]), frozenset(row[1]), row[2])


def write_marker(
    conn: psycopg.Connection[Any], outbox: int | None, tables: frozenset[str], gap: str | None
) -> None:
    """Record a pending ``gap`` (the rest left as it was), or — with ``gap`` None — the
    outbox and triggered tables as they are now."""
    conn.execute(MARKER_SQL)
    if gap is not None:
        conn.execute(
            f"UPDATE {SCHEMA}.outbox_marker SET pending_gap = %s, updated_at = now()", (gap,)
        )
        return
    conn.execute(
        f"INSERT INTO {SCHEMA}.outbox_marker (outbox, tables) VALUES (%s, %s)"
        " ON CONFLICT (id) DO UPDATE SET outbox = EXCLUDED.outbox, tables = EXCLUDED.tables,"
        " pending_gap = NULL, updated_at = now()",
        (outbox, sorted(tables)),
    )
