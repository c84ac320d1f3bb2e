"""The PostgreSQL edge: the replication stream, the WAL position and refresh values (psycopg 3).

psycopg has no replication API; a connection opened with ``replication="database"``
accepts ``START_REPLICATION`` and is then left in COPY BOTH, which the libpq wrapper
(``conn.pgconn``) drives: ``consume_input``, ``get_copy_data(1)``, ``put_copy_data``,
``flush``. Every psycopg error leaves this module as ``SourceError`` with secrets redacted.
Slot administration and catalogue questions are in ``catalog``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from invalidator.core.changes import int_to_lsn, lsn_to_int
from invalidator.core.rules import TableName
from invalidator.errors import SourceError
from invalidator.redact import redact
from invalidator.sources.replication import standby_status

PLUGIN = "wal2json"
CONNECT_TIMEOUT = 10
# UTC so wal2json prints commit timestamps we can compare with our clock.
SESSION_OPTIONS = "-c TimeZone=UTC"


def server_of(dsn: str) -> str | None:
    """``host:port`` (comma-separated for several hosts) the DSN reaches, for messages;
    None when the DSN cannot be parsed. Only ``host``/``hostaddr`` and ``port`` are read:
    never the password or any other parameter."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return None
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return ",".join(f"{host}:{port}" for host, port in zip(hosts, ports, strict=False))


def source_error(what: str, exc: BaseException, dsn: str | None = None) -> SourceError:
    """A one-line, password-free error for a psycopg failure. With ``dsn``, the server is
    named as configured (``host:port``): libpq's own text names it only for some failures,
    and then by the address psycopg resolved, not the name the operator gave."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    server = server_of(dsn) if dsn is not None else None
    if server is not None:
        what = f"{what} ({server})"
    return SourceError(redact(f"{what}: {text}"))


def escape_table_name(name: str) -> str:
    """Escape a name for wal2json's add-tables list (space ' , . * and backslash)."""
    return "".join("\\" + ch if ch in " ',.*\\" else ch for ch in name)


def add_tables_option(tables: Iterable[TableName]) -> str:
    return ",".join(f"{escape_table_name(s)}.{escape_table_name(t)}" for s, t in sorted(tables))


def stream_options(tables: Iterable[TableName] | None) -> dict[str, str]:
    """wal2json options for the daemon: format 2 with commit timestamps and types."""
    options = {
        "format-version": "2",
        "include-timestamp": "1",
        "include-types": "1",
        "include-lsn": "1",
    }
    if tables is not None:
        options["add-tables"] = add_tables_option(tables)
    return options


class SlotBusyError(SourceError):
    """The slot is streamed by another process (another replica of the daemon)."""


class ReplicationStream:
    """One START_REPLICATION session on a slot."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        options: Mapping[str, str],
        on_notice: Callable[[str, str], None] | None = None,
    ):
        self.dsn = dsn
        self.slot = slot
        self.options = dict(options)
        self.on_notice = on_notice  # (severity, message): wal2json warns through notices
        self.conn: psycopg.Connection[Any] | None = None

    def open(self, start_lsn: int = 0) -> None:
        try:
            self.conn = psycopg.connect(
                self.dsn,
                replication="database",
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=SESSION_OPTIONS,
            )
        except psycopg.Error as exc:
            raise source_error("cannot open replication connection", exc, self.dsn) from None
        if self.on_notice is not None:
            handler = self.on_notice
            self.conn.add_notice_handler(
                lambda diag: handler(diag.severity or "", diag.message_primary or "")
            )
        opts = ", ".join(
            f"\"{name}\" '{value.replace(chr(39), chr(39) * 2)}'"
            for name, value in self.options.items()
        )
        command = f'START_REPLICATION SLOT "{self.slot}" LOGICAL {int_to_lsn(start_lsn)} ({opts})'
        try:
            self.conn.execute(command)
        except psycopg.Error as exc:
            self.close()
            error = source_error(f"cannot start replication on slot {self.slot}", exc, self.dsn)
            if "is active for PID" in str(exc):
                raise SlotBusyError(str(error)) from None
            raise error from None

    def fileno(self) -> int:
        assert self.conn is not None
        return self.conn.pgconn.socket

    def read_raw(self, limit: int = 10_000) -> list[Any]:
        """Every CopyData message already received (up to ``limit``) as a buffer (bytes or
        memoryview), unparsed, without blocking: the hot path parses them in C."""
        assert self.conn is not None
        pg = self.conn.pgconn
        messages: list[Any] = []
        append = messages.append
        try:
            pg.consume_input()
            refilled = True
            while len(messages) < limit:
                n, data = pg.get_copy_data(1)
                if n > 0:
                    append(data)
                    refilled = False
                    continue
                if n == 0:
                    # libpq reads the socket one buffer at a time: read it again until it
                    # has no complete message left, so a backlog comes in large batches.
                    if refilled:
                        break
                    pg.consume_input()
                    refilled = True
                    continue
                result = pg.get_result()
                detail = result.error_message.decode(errors="replace") if result is not None else ""
                server = server_of(self.dsn)
                where = f" ({server})" if server is not None else ""
                detail = " ".join(detail.split())
                raise SourceError(redact(f"replication stream ended{where}: {detail}"))
        except psycopg.Error as exc:
            raise source_error("replication connection failed", exc, self.dsn) from None
        return messages

    def send_status(self, flush: int, *, reply: bool = False) -> None:
        assert self.conn is not None
        pg = self.conn.pgconn
        try:
            pg.put_copy_data(standby_status(flush, reply=reply))
            pg.flush()
        except psycopg.Error as exc:
            raise source_error("cannot send status to PostgreSQL", exc, self.dsn) from None

    def close(self) -> None:
        if self.conn is not None:
            with suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


class _LazyConnection:
    """One autocommit connection, opened on first use and again after a failure."""

    row_factory: Any = None

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            kwargs: dict[str, Any] = {"row_factory": self.row_factory} if self.row_factory else {}
            self.conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=SESSION_OPTIONS,
                **kwargs,
            )
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            with suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


class WalPosition(_LazyConnection):
    """The server's current WAL position (for the lag metric: the replication stream's
    own walEnd fields are record positions)."""

    def current(self) -> int:
        try:
            row = self.connection().execute("SELECT pg_current_wal_lsn()::text").fetchone()
        except psycopg.Error as exc:
            self.close()
            raise source_error("cannot read the WAL position", exc, self.dsn) from None
        assert row is not None
        return lsn_to_int(row[0])


class ValueQueries(_LazyConnection):
    """Runs ``refresh`` rules' ``value: {query}`` on a read connection of its own."""

    row_factory = staticmethod(dict_row)

    def value(self, query: str, row: Mapping[str, Any]) -> bytes | None:
        """json.dumps of the query's first row (columns in order), or None for no row."""
        from invalidator.core.rules import json_default

        try:
            result = self.connection().execute(query, dict(row)).fetchone()
        except psycopg.Error as exc:
            self.close()
            raise source_error("refresh value query failed", exc, self.dsn) from None
        if result is None:
            return None
        return json.dumps(result, default=json_default).encode()
