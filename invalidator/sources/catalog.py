"""The catalogue and the slot, through regular SQL connections: slot status and
administration, ``IDENTIFY_SYSTEM``, and what ``check``, ``run``'s pre-flight, ``init`` and
the partition watcher need to know of the watched tables (``Catalogue``: one connection).
Every psycopg error leaves as ``SourceError`` (``source_error``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from invalidator.core.rules import TableName
from invalidator.errors import SourceError
from invalidator.sources.postgres import CONNECT_TIMEOUT, PLUGIN, SESSION_OPTIONS, source_error


@dataclass(frozen=True, slots=True)
class SlotStatus:
    slot: str
    exists: bool
    active: bool = False
    active_pid: int | None = None
    plugin: str | None = None
    confirmed_flush_lsn: str | None = None
    restart_lsn: str | None = None
    retained_bytes: int | None = None
    lag_bytes: int | None = None
    wal_status: str | None = None  # reserved | extended | unreserved | lost


@dataclass(frozen=True, slots=True)
class Server:
    """``IDENTIFY_SYSTEM``: which cluster, and which timeline of it, the DSN reaches."""

    system_identifier: str
    timeline: int


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What ``check``, ``run``'s pre-flight and ``init`` need to know of a watched table."""

    exists: bool
    columns: frozenset[str] = frozenset()
    replica_identity: str = "d"  # d default, f full, i index, n nothing
    identity_columns: frozenset[str] = frozenset()
    partitioned: bool = False
    kind: str = "r"  # pg_class.relkind: r table, p partitioned, v view, m materialized view, ...
    ordered: tuple[str, ...] = ()  # the columns in table order
    not_null: frozenset[str] = frozenset()
    primary_key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()  # other unique, total, column-only indexes


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The database's answers to every question ``check`` and ``run`` ask, read at once."""

    server_version: str
    wal_level: str
    may_replicate: bool  # REPLICATION, superuser, or rds_replication
    slots: dict[str, str]  # slot name → plugin
    tables: dict[TableName, TableFacts]
    names: dict[str, tuple[str, ...]]  # schema → its tables (for "did you mean")

    def facts(self, schema: str, table: str) -> TableFacts:
        return self.tables.get((schema, table), TableFacts(False))


def quoted_name(name: str) -> str:
    """A SQL identifier, quoted only where it needs to be."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def quoted_table(schema: str, table: str) -> str:
    """``schema.table`` as SQL, quoted only where a name needs it (``public.users``)."""
    return f"{quoted_name(schema)}.{quoted_name(table)}"


# One row per requested table: kind, replica identity, columns (in order), NOT NULL
# columns, and its unique, total, column-only indexes (the primary key first).
_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, c.relreplident::text,
  (SELECT coalesce(json_agg(a.attname ORDER BY a.attnum), '[]') FROM pg_attribute a
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT coalesce(json_agg(a.attname ORDER BY a.attnum), '[]') FROM pg_attribute a
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull),
  (SELECT coalesce(json_agg(json_build_object(
      'primary', i.indisprimary, 'replident', i.indisreplident, 'columns',
      (SELECT json_agg(a.attname ORDER BY k.ord)
         FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum))
      ORDER BY i.indisprimary DESC, i.indexrelid), '[]')
    FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
      AND i.indpred IS NULL AND i.indexprs IS NULL)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""


def _table_facts(row: tuple[Any, ...]) -> TableFacts:
    _, _, kind, identity, ordered, not_null, indexes = row
    primary = next((tuple(i["columns"]) for i in indexes if i["primary"]), ())
    replident = next((tuple(i["columns"]) for i in indexes if i["replident"]), ())
    unique = tuple(tuple(i["columns"]) for i in indexes if not i["primary"])
    if identity == "f":
        identity_columns = frozenset(ordered)
    elif identity == "d":
        identity_columns = frozenset(primary)
    elif identity == "i":
        identity_columns = frozenset(replident)
    else:
        identity_columns = frozenset()
    return TableFacts(
        True,
        frozenset(ordered),
        identity,
        identity_columns,
        kind == "p",
        kind,
        tuple(ordered),
        frozenset(not_null),
        primary,
        unique,
    )


class Admin:
    """A regular (SQL) connection for slot management and catalogue questions."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT, options=SESSION_OPTIONS
            )
        except psycopg.Error as exc:
            raise source_error("cannot connect to PostgreSQL", exc, self.dsn) from None
        try:
            yield conn
        except psycopg.Error as exc:
            raise source_error("PostgreSQL query failed", exc) from None
        finally:
            conn.close()

    def query(self, query: str | sql.Composed, params: Any = None) -> list[tuple[Any, ...]]:
        with self._connect() as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, query: str | sql.Composed, params: Any = None) -> None:
        """Run a statement (or several, without ``params``) that returns no rows."""
        with self._connect() as conn:
            conn.execute(query, params)

    def wal_level(self) -> str:
        return str(self.query("SHOW wal_level")[0][0])

    def slot_status(self, slot: str) -> SlotStatus:
        rows = self.query(
            "SELECT active, active_pid, plugin, confirmed_flush_lsn::text, restart_lsn::text,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        if not rows:
            return SlotStatus(slot, exists=False)
        active, pid, plugin, confirmed, restart, retained, lag, wal = rows[0]
        return SlotStatus(
            slot, True, bool(active), pid, plugin, confirmed, restart, retained, lag, wal
        )

    def identify(self) -> Server:
        """The cluster and timeline the DSN reaches (``IDENTIFY_SYSTEM`` on a replication
        connection: the timeline of a just-promoted standby, before any checkpoint)."""
        try:
            with psycopg.connect(
                self.dsn,
                replication="database",
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
            ) as conn:
                row = conn.execute("IDENTIFY_SYSTEM").fetchone()
        except psycopg.Error as exc:
            raise source_error("cannot identify the server", exc, self.dsn) from None
        assert row is not None
        return Server(str(row[0]), int(row[1]))

    def create_slot(self, slot: str, plugin: str = PLUGIN) -> bool:
        """Create the logical slot (output ``plugin``) unless it exists; True if created."""
        status = self.slot_status(slot)
        if status.exists:
            if status.plugin != plugin:
                raise SourceError(f"slot {slot} exists with plugin {status.plugin}, not {plugin}")
            return False
        # PostgreSQL 17+: a failover slot, which sync_replication_slots copies to standbys,
        # so a promotion keeps it (and continuity finds no gap). Before 17 a failover loses
        # the slot: continuity notices and on_gap answers.
        failover = int(self.query("SHOW server_version_num")[0][0]) >= 170000
        create = (
            "SELECT pg_create_logical_replication_slot(%s, %s, false, false, true)"
            if failover
            else "SELECT pg_create_logical_replication_slot(%s, %s)"
        )
        try:
            self.query(create, (slot, plugin))
        except SourceError as exc:
            if "already exists" in str(exc):
                return False  # another replica created it first
            raise
        return True

    def drop_slot(self, slot: str) -> bool:
        if not self.slot_status(slot).exists:
            return False
        self.query("SELECT pg_drop_replication_slot(%s)", (slot,))
        return True

    def partitions(self, tables: Iterable[TableName]) -> dict[TableName, TableName]:
        """Every partition (at any depth) of the given tables → the watched ancestor."""
        result: dict[TableName, TableName] = {}
        for schema, table in tables:
            rows = (
                self.query(
                    "SELECT n.nspname, c.relname FROM pg_partition_tree(%s::regclass) t"
                    " JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid ="
                    " c.relnamespace WHERE t.level > 0",
                    (sql.Identifier(schema, table).as_string(None),),
                )
                if self.table_facts(schema, table).partitioned
                else []
            )
            for child_schema, child in rows:
                result[(child_schema, child)] = (schema, table)
        return result

    def table_facts(self, schema: str, table: str) -> TableFacts:
        return self.tables_facts([(schema, table)]).get((schema, table), TableFacts(False))

    def tables_facts(self, tables: Iterable[TableName]) -> dict[TableName, TableFacts]:
        with self._connect() as conn:
            return _tables_facts(conn, tables)

    def catalogue(self, tables: Iterable[TableName]) -> Catalogue:
        """Everything ``check`` and ``run`` ask of the database, on one connection."""
        tables = list(tables)
        schemas = sorted({schema for schema, _ in tables})
        with self._connect() as conn:
            version, level, may_replicate = conn.execute(
                "SELECT current_setting('server_version'), current_setting('wal_level'),"
                " r.rolsuper OR r.rolreplication OR EXISTS (SELECT FROM pg_roles g WHERE"
                " g.rolname = 'rds_replication' AND pg_has_role(r.oid, g.oid, 'member'))"
                " FROM pg_roles r WHERE r.rolname = current_user"
            ).fetchall()[0]
            slots = dict(
                conn.execute(
                    "SELECT slot_name, coalesce(plugin, '') FROM pg_replication_slots"
                ).fetchall()
            )
            facts = _tables_facts(conn, tables)
            names: dict[str, list[str]] = {schema: [] for schema in schemas}
            for schema, name in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
                " AND n.nspname = ANY(%s) ORDER BY 1, 2",
                (schemas,),
            ).fetchall():
                names[schema].append(name)
        return Catalogue(
            str(version),
            str(level),
            bool(may_replicate),
            slots,
            facts,
            {schema: tuple(found) for schema, found in names.items()},
        )


def _tables_facts(
    conn: psycopg.Connection[Any], tables: Iterable[TableName]
) -> dict[TableName, TableFacts]:
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return {}
    rows = conn.execute(
        _TABLES_SQL, ([schema for schema, _ in wanted], [table for _, table in wanted])
    ).fetchall()
    return {(row[0], row[1]): _table_facts(row) for row in rows}
