"""Rows of the watched tables as they are now, for ``audit``: sampled, read again, and a
``value: {query}`` run for one of them.

Values come back as the stream gives them (``sources.wal2json``): integers, ``numeric``
as ``Decimal``, floats (NaN and infinities as None), booleans; every other type in
PostgreSQL's text form (``bytea`` as hex without ``\\x``), so the value audit expects is
the one a refresh would have written. One connection of its own, with a statement timeout,
so a slow audit query is cancelled instead of becoming load. A ``value: {query}`` result is
loaded as the daemon's own value queries load it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import AdaptersMap, Loader
from psycopg.rows import dict_row, tuple_row
from psycopg.types.string import TextLoader

from invalidator.core.changes import lsn_to_int
from invalidator.errors import SourceError
from invalidator.sources.postgres import _LazyConnection, source_error

STATEMENT_TIMEOUT_MS = 2_000
# Below this many rows (estimated) a sample is ORDER BY random(): exact and cheap; above,
# TABLESAMPLE SYSTEM reads only about the pages it needs.
SMALL_TABLE = 20_000
MIN_PAGES = 20
SAMPLE_TRIES = 3
# Types psycopg loads as the stream gives them; every other type is loaded as text.
_NATIVE = frozenset({"int2", "int4", "int8", "oid", "numeric", "bool", "text", "varchar"})
_NATIVE |= {"bpchar", "name"}


class _FloatLoader(Loader):
    """float4/float8 as wal2json prints them: NaN and the infinities become null."""

    def load(self, data: Any) -> float | None:
        value = float(bytes(data))
        return value if math.isfinite(value) else None


class _HexLoader(Loader):
    """bytea as wal2json prints it: hex digits without the ``\\x`` prefix."""

    def load(self, data: Any) -> str:
        return bytes(data).decode("ascii").removeprefix("\\x")


def stream_adapters(adapters: AdaptersMap) -> None:
    """Make ``adapters`` load values as the stream gives them (see the module's text)."""
    for info in adapters.types:
        if info.name not in _NATIVE:
            adapters.register_loader(info.oid, TextLoader)
        if info.array_oid:
            adapters.register_loader(info.array_oid, TextLoader)
    adapters.register_loader("float4", _FloatLoader)
    adapters.register_loader("float8", _FloatLoader)
    adapters.register_loader("bytea", _HexLoader)


class RowReader(_LazyConnection):
    """Reads rows for ``audit`` on its own connection; ``queries`` counts what it ran."""

    row_factory = staticmethod(dict_row)

    def __init__(self, dsn: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS):
        super().__init__(dsn)
        self.statement_timeout_ms = statement_timeout_ms
        self.queries = 0

    def connection(self) -> psycopg.Connection[Any]:
        fresh = self.conn is None or self.conn.closed
        try:
            conn = super().connection()
            if fresh:
                conn.execute(
                    sql.SQL("SET statement_timeout = {}").format(
                        sql.Literal(self.statement_timeout_ms)
                    )
                )
        except psycopg.Error as exc:
            self.close()
            raise source_error("audit: cannot connect to PostgreSQL", exc, self.dsn) from None
        return conn

    def _run(
        self,
        what: str,
        query: sql.SQL | sql.Composed | str,
        params: Any = None,
        *,
        stream: bool = True,
        tuples: bool = False,
    ) -> list[Any]:
        """``query``'s rows (dicts, or ``tuples``); ``stream``: values as the stream gives
        them, otherwise as psycopg loads them (as the daemon's own value queries do)."""
        self.queries += 1
        try:
            conn = self.connection()
            cursor = conn.cursor(row_factory=tuple_row) if tuples else conn.cursor()
            if stream:
                stream_adapters(cursor.adapters)
            return cursor.execute(query, params).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise source_error(f"audit: {what}", exc, self.dsn) from None

    def sample(self, schema: str, table: str, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` random rows of the table (all of it when smaller)."""
        name = sql.Identifier(schema, table)
        (estimate,) = self._run(
            f"cannot size {schema}.{table}",
            "SELECT coalesce(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples"
            " ELSE pg_relation_size(c.oid) / 100 END), 0)::float8 AS rows,"
            " coalesce(sum(greatest(c.relpages, 1)), 1)::float8 AS pages"
            " FROM pg_class c,"
            " (SELECT format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass AS rel) t"
            " WHERE c.oid = t.rel"
            " OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = t.rel)",
            {"schema": schema, "table": table},
        )
        rows, pages = float(estimate["rows"]), float(estimate["pages"])
        if rows < SMALL_TABLE:
            query = sql.SQL("SELECT * FROM {} ORDER BY random() LIMIT {}").format(
                name, sql.Literal(n)
            )
            return [dict(row) for row in self._run(f"cannot sample {schema}.{table}", query)]
        # SYSTEM picks whole pages: ask for 3x the rows and at least MIN_PAGES pages, and
        # for 4x more when chance gave too few.
        percent = 100.0 * max(3.0 * n / rows, MIN_PAGES / pages)
        found: list[dict[str, Any]] = []
        for _ in range(SAMPLE_TRIES):
            query = sql.SQL("SELECT * FROM {} TABLESAMPLE SYSTEM ({}) LIMIT {}").format(
                name, sql.Literal(min(100.0, percent)), sql.Literal(n)
            )
            found = [dict(row) for row in self._run(f"cannot sample {schema}.{table}", query)]
            if len(found) >= n or percent >= 100.0:
                break
            percent *= 4
        return found

    def lookup(self, schema: str, table: str, match: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows (at most 2: more means ``match`` is ambiguous) whose columns equal
        ``match`` now."""
        condition = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
            for column in match
        )
        query = sql.SQL("SELECT * FROM {} WHERE {} LIMIT 2").format(
            sql.Identifier(schema, table), condition
        )
        return [dict(row) for row in self._run(f"cannot read {schema}.{table}", query, match)]

    def position(self) -> int:
        """How far the rows this connection reads are: the WAL position (a replica: what
        it has replayed)."""
        ((lsn,),) = self._run(
            "cannot read the WAL position",
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
            " ELSE pg_current_wal_lsn() END)::text",
            stream=False,
            tuples=True,
        )
        return lsn_to_int(lsn)

    def confirmed(self, slot: str) -> int | None:
        """The replication slot's confirmed position: what the daemon has applied."""
        rows = self._run(
            "cannot read the slot",
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
            stream=False,
            tuples=True,
        )
        return lsn_to_int(rows[0][0]) if rows and rows[0][0] is not None else None

    def value(self, query: str, row: Mapping[str, Any]) -> bytes | None:
        """What a ``value: {query}`` refresh writes for ``row`` (``ValueQueries.value``)."""
        from invalidator.core.rules import json_default

        result = self._run("value query failed", query, dict(row), stream=False)
        if not result:
            return None
        try:
            return json.dumps(result[0], default=json_default).encode()
        except TypeError as exc:
            raise SourceError(f"audit: value query result: {exc}") from None
