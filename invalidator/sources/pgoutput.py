"""Decoding pgoutput, PostgreSQL's built-in logical replication protocol (pure, no driver).

Layouts (big-endian; the "Logical Replication Message Formats" chapter of the PostgreSQL
docs), protocol versions 1 and 2 without ``streaming`` (the daemon never requests it, so
v2 is byte for byte v1): ``B`` final_lsn int64, commit time int64 (µs since 2000), xid
int32 · ``C`` flags int8, commit_lsn, end_lsn, commit time · ``R`` relid int32, namespace
and name (C strings; ``""`` is ``pg_catalog``), replica identity int8, ncols int16, then per
column flags int8 (1: part of the identity), name, type oid int32, typmod int32 · ``Y``
type oid, namespace, name · ``I`` relid, ``N`` TupleData · ``U`` relid, optional ``K``
(identity) or ``O`` (whole old row) TupleData, ``N`` TupleData · ``D`` relid, ``K`` or ``O``
· ``T`` nrels int32, options int8, relids · ``O`` origin lsn, name · ``M`` flags int8 (1:
transactional), lsn, prefix, length int32, content. TupleData: ncols int16, then per
column ``n`` (NULL), ``u`` (unchanged TOAST: the value is not sent), ``t`` int32 + text.

Values become exactly what the wal2json path yields for the same row (``wal2json.py``
over wal2json's ``pg_decode_write_value``), so templates render the same keys: int2/4/8
and oid → ``int``; float4/8 and numeric are JSON numbers there (an integer literal →
``int``, else ``float``, numeric ``Decimal``; NaN and ±Infinity → ``None``); bool ``t`` →
``True``; bytea → hex without ``\\x``; every other type its text form, as a string. An
unchanged TOAST value is absent from the row, as wal2json leaves it out. A ``K`` tuple
carries only the identity columns (the others arrive as NULL and are dropped); an UPDATE
without old tuple (the identity did not change) gets the identity columns from the new
row, as wal2json's ``identity`` does.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from invalidator.core.changes import (
    Begin,
    Change,
    Commit,
    Event,
    Message,
    int_to_lsn,
    lsn_to_int,
)
from invalidator.errors import DecodeError

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_I32 = struct.Struct("!I")
_I16 = struct.Struct("!H")
_REL_HEAD = struct.Struct("!I")
_COLUMN_TAIL = struct.Struct("!Ii")
_TRUNCATE = struct.Struct("!IB")
_MESSAGE = struct.Struct("!BQ")

# Type OIDs wal2json prints as bare JSON (or true/false, or hex): pg_type.dat.
BOOL, BYTEA, INT8, INT2, INT4, OID = 16, 17, 20, 21, 23, 26
FLOAT4, FLOAT8, NUMERIC = 700, 701, 1700
_INTEGER_TYPES = frozenset({INT8, INT2, INT4, OID})
_FLOAT_TYPES = frozenset({FLOAT4, FLOAT8})
_INTEGER_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)")
_SPECIAL = ("nan", "infinity", "-infinity")

IDENTITY_FLAG = 1
_STREAM_MESSAGES = frozenset(b"SEcA")  # stream start/stop/commit/abort: never requested


@dataclass(frozen=True, slots=True)
class Relation:
    """A ``R`` message: the columns the stream will send for this table (in order)."""

    oid: int
    schema: str
    table: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    identity: tuple[str, ...]  # the columns flagged as replica identity


def text_value(text: str, type_oid: int) -> Any:
    """One 't' value, as the wal2json path turns the same column into a Python value."""
    if type_oid in _INTEGER_TYPES:
        return int(text)
    if type_oid == BOOL:
        return text == "t"
    if type_oid in _FLOAT_TYPES or type_oid == NUMERIC:
        if text.lower().startswith(_SPECIAL):
            return None  # wal2json prints NaN and ±Infinity as null
        if _INTEGER_LITERAL.fullmatch(text):
            return int(text)  # a JSON number without fraction or exponent
        return float(text) if type_oid != NUMERIC else Decimal(text)
    if type_oid == BYTEA:
        return text[2:]  # wal2json drops the "\x"
    return text


def commit_time(pg_micros: int) -> float:
    """A pgoutput timestamp (µs since 2000-01-01 UTC) as Unix seconds."""
    return pg_micros / 1_000_000 + 946_684_800


def timestamp_text(pg_micros: int) -> str:
    """The timestamp as a UTC session prints a timestamptz (``2024-01-02 03:04:05.1+00``)."""
    moment = PG_EPOCH + timedelta(microseconds=pg_micros)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "+00"


class _Reader:
    """A cursor over one message; every read checks the bounds."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 1):
        self.data = data
        self.pos = pos

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        pos = self.pos
        if pos + layout.size > len(self.data):
            raise DecodeError("message is truncated")
        self.pos = pos + layout.size
        return layout.unpack_from(self.data, pos)

    def byte(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise DecodeError("message is truncated")
        self.pos = pos + 1
        return self.data[pos]

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError("unterminated string")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        return _utf8(raw)

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > len(self.data):
            raise DecodeError("message is truncated")
        self.pos = pos + n
        return self.data[pos : pos + n]


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("text is not UTF-8") from None


class PgOutputDecoder:
    """One replication session's decoder: the relations announced so far and the open
    transaction's xid. ``decode`` turns one XLogData payload into events (none for
    ``R``/``Y``/``O``, one per table for ``T``)."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.relation_messages: dict[int, bytes] = {}  # the last R message of each relation
        self.xid: int | None = None
        self.in_transaction = False
        self.commit_end = 0  # end LSN of the last commit (what to confirm once it is done)
        self.commit_time: float | None = None

    def decode(self, payload: bytes, lsn: int | None = None) -> list[Event]:
        """One pgoutput message (``lsn``: its XLogData position, for the changes)."""
        if not payload:
            raise DecodeError("empty pgoutput message")
        kind = payload[0]
        where = int_to_lsn(lsn) if lsn is not None else None
        reader = _Reader(payload)
        if kind == 0x49:  # I
            relation = self._relation(reader)
            if reader.byte() != 0x4E:
                raise DecodeError("INSERT without a new tuple")
            new = self._tuple(reader, relation)
            self._end(reader)
            return [Change("insert", relation.schema, relation.table, new, None, where)]
        if kind == 0x55:  # U
            relation = self._relation(reader)
            marker = reader.byte()
            old: dict[str, Any] | None = None
            if marker in (0x4B, 0x4F):  # K, O
                old = self._tuple(reader, relation, identity_only=marker == 0x4B)
                marker = reader.byte()
            if marker != 0x4E:
                raise DecodeError("UPDATE without a new tuple")
            new = self._tuple(reader, relation)
            self._end(reader)
            if old is None and relation.identity:
                # The identity did not change: wal2json takes it from the new row.
                old = {c: new[c] for c in relation.identity if c in new}
            return [Change("update", relation.schema, relation.table, new, old, where)]
        if kind == 0x44:  # D
            relation = self._relation(reader)
            marker = reader.byte()
            if marker not in (0x4B, 0x4F):
                raise DecodeError("DELETE without an old tuple")
            old = self._tuple(reader, relation, identity_only=marker == 0x4B)
            self._end(reader)
            return [Change("delete", relation.schema, relation.table, None, old, where)]
        if kind == 0x42:  # B
            final_lsn, when, xid = reader.unpack(_BEGIN)
            self._end(reader)
            self.xid = xid
            self.in_transaction = True
            return [Begin(xid, int_to_lsn(final_lsn), timestamp_text(when))]
        if kind == 0x43:  # C
            _, commit_lsn, end_lsn, when = reader.unpack(_COMMIT)
            self._end(reader)
            xid, self.xid = self.xid, None
            self.in_transaction = False
            self.commit_end = end_lsn
            self.commit_time = commit_time(when)
            return [Commit(xid, int_to_lsn(commit_lsn), int_to_lsn(end_lsn), timestamp_text(when))]
        if kind == 0x52:  # R
            oid = self._read_relation(reader)
            self.relation_messages[oid] = bytes(payload)
            return []
        if kind == 0x59:  # Y
            reader.unpack(_I32)
            reader.cstring()
            reader.cstring()
            self._end(reader)
            return []
        if kind == 0x4F:  # O
            reader.take(8)
            reader.cstring()
            self._end(reader)
            return []
        if kind == 0x54:  # T
            count, _ = reader.unpack(_TRUNCATE)
            tables = [self._relation(reader) for _ in range(count)]
            self._end(reader)
            return [Change("truncate", r.schema, r.table, lsn=where) for r in tables]
        if kind == 0x4D:  # M
            flags, _ = reader.unpack(_MESSAGE)
            prefix = reader.cstring()
            (length,) = reader.unpack(_I32)
            content = reader.take(length).decode("utf-8", "replace")
            self._end(reader)
            return [Message(bool(flags & 1), prefix, content, where)]
        if kind in _STREAM_MESSAGES:
            raise DecodeError(
                f"streamed transaction message {chr(kind)!r}: streaming was not requested"
            )
        raise DecodeError(f"unknown pgoutput message type {chr(kind)!r}")

    def _read_relation(self, reader: _Reader) -> int:
        (oid,) = reader.unpack(_REL_HEAD)
        schema = reader.cstring() or "pg_catalog"
        table = reader.cstring()
        identity = chr(reader.byte())
        (ncols,) = reader.unpack(_I16)
        columns: list[str] = []
        types: list[int] = []
        key: list[str] = []
        for _ in range(ncols):
            flags = reader.byte()
            name = reader.cstring()
            type_oid, _ = reader.unpack(_COLUMN_TAIL)
            columns.append(name)
            types.append(type_oid)
            if flags & IDENTITY_FLAG:
                key.append(name)
        self._end(reader)
        # A relation announced again (altered, or its cache entry invalidated) replaces
        # the one before: later tuples follow the new column list.
        self.relations[oid] = Relation(
            oid, schema, table, identity, tuple(columns), tuple(types), tuple(key)
        )
        return int(oid)

    def _relation(self, reader: _Reader) -> Relation:
        (oid,) = reader.unpack(_REL_HEAD)
        relation = self.relations.get(oid)
        if relation is None:
            raise DecodeError(f"change of relation {oid} before its Relation message")
        return relation

    def _tuple(
        self, reader: _Reader, relation: Relation, identity_only: bool = False
    ) -> dict[str, Any]:
        (ncols,) = reader.unpack(_I16)
        columns = relation.columns
        if ncols != len(columns):
            raise DecodeError(
                f"tuple of {relation.schema}.{relation.table} has {ncols} columns, "
                f"its Relation message {len(columns)}"
            )
        types = relation.type_oids
        keep = relation.identity if identity_only else None
        row: dict[str, Any] = {}
        data = reader.data
        for i in range(ncols):
            kind = reader.byte()
            if kind == 0x74:  # t
                (length,) = reader.unpack(_I32)
                pos = reader.pos
                end = pos + length
                if end > len(data):
                    raise DecodeError("message is truncated")
                reader.pos = end
                if keep is not None and columns[i] not in keep:
                    continue
                try:
                    text = data[pos:end].decode("utf-8")
                    row[columns[i]] = text_value(text, types[i])
                except (UnicodeDecodeError, ValueError, ArithmeticError):
                    raise DecodeError(
                        f"bad value of {relation.table}.{columns[i]} (type oid {types[i]})"
                    ) from None
            elif kind == 0x6E:  # n
                if keep is None or columns[i] in keep:
                    row[columns[i]] = None
            elif kind == 0x75:  # u: unchanged TOAST, not sent: absent, as in wal2json
                continue
            elif kind == 0x62:  # b
                raise DecodeError("binary tuple data: binary mode was not requested")
            else:
                raise DecodeError(f"unknown tuple data kind {kind!r}")
        return row

    @staticmethod
    def _end(reader: _Reader) -> None:
        if reader.pos != len(reader.data):
            raise DecodeError("trailing bytes after the message")


# The capture format (README, `invalidator replay --help`): one message per line, its LSN
# and its bytes in hex, separated by one space; `#` lines are comments. It is what
#   psql -At -F ' ' -c "SELECT lsn, encode(data, 'hex') FROM
#     pg_logical_slot_peek_binary_changes('SLOT', NULL, NULL,
#     'proto_version', '1', 'publication_names', 'PUB')"
# prints (pg_recvlogical's raw binary output has no framing).
CAPTURE_LINE = re.compile(r"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}) ([0-9A-Fa-f]*)")


def is_capture_line(line: str) -> bool:
    """Whether the first line of a file says it is a pgoutput capture (not wal2json)."""
    text = line.strip()
    return text.startswith("#") or CAPTURE_LINE.fullmatch(text) is not None


def read_capture(lines: Iterable[str], source: str) -> Iterator[Event]:
    """Decode a pgoutput capture; errors are DecodeErrors located at ``source:line``."""
    decoder = PgOutputDecoder()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = CAPTURE_LINE.fullmatch(line)
        try:
            if match is None:
                raise DecodeError("not '<LSN> <hex bytes>' (a pgoutput capture line)")
            try:
                payload = bytes.fromhex(match[2])
            except ValueError:
                raise DecodeError("odd number of hex digits") from None
            yield from decoder.decode(payload, lsn_to_int(match[1]))
        except DecodeError as exc:
            raise exc.at(source, number) from None
