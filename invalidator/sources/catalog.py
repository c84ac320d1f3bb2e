"""The catalogue and the slot, through regular SQL connections: slot status and
administration, ``IDENTIFY_SYSTEM``, and what ``check`` and the partition watcher need to
know of a watched table. Every psycopg error leaves as ``SourceError`` (``source_error``)."""

from __future__ import annotations

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
    """What ``check`` needs to know of a watched table."""

    exists: bool
    columns: frozenset[str] = frozenset()
    replica_identity: str = "d"  # d default, f full, i index, n nothing
    identity_columns: frozenset[str] = frozenset()
    partitioned: bool = False


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
        rows = self.query(
            "SELECT c.oid, c.relreplident, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        )
        if not rows:
            return TableFacts(False)
        oid, identity, kind = rows[0]
        columns = frozenset(
            r[0]
            for r in self.query(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0"
                " AND NOT attisdropped",
                (oid,),
            )
        )
        if identity == "d":
            index = self.query(
                "SELECT indexrelid FROM pg_index WHERE indrelid = %s AND indisprimary", (oid,)
            )
        elif identity == "i":
            index = self.query(
                "SELECT indexrelid FROM pg_index WHERE indrelid = %s AND indisreplident", (oid,)
            )
        else:
            index = []
        identity_columns: frozenset[str] = frozenset()
        if identity == "f":
            identity_columns = columns
        elif index:
            identity_columns = frozenset(
                r[0]
                for r in self.query(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid ="
                    " i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indexrelid = %s",
                    (index[0][0],),
                )
            )
        return TableFacts(True, columns, identity, identity_columns, kind == "p")
