"""pgoutput protocol 1 messages built byte by byte from the documented layouts, for tests."""

from __future__ import annotations

import struct

U = b"u"  # an unchanged TOAST value in ``tupledata``


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def relation(
    oid: int,
    schema: str,
    table: str,
    columns: list[tuple[str, int, bool]],
    identity: str = "d",
) -> bytes:
    """An R message; ``columns`` are (name, type oid, part of the replica identity)."""
    out = b"R" + struct.pack("!I", oid) + cstr(schema) + cstr(table) + identity.encode()
    out += struct.pack("!H", len(columns))
    for name, type_oid, key in columns:
        out += bytes([1 if key else 0]) + cstr(name) + struct.pack("!Ii", type_oid, -1)
    return out


def tupledata(*values: str | bytes | None) -> bytes:
    """TupleData: 't' text for a str, 'n' for None, 'u' for ``U``."""
    out = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == U:
            out += b"u"
        else:
            assert isinstance(value, str)
            data = value.encode()
            out += b"t" + struct.pack("!I", len(data)) + data
    return out


def insert(oid: int, *values: str | bytes | None) -> bytes:
    return b"I" + struct.pack("!I", oid) + b"N" + tupledata(*values)


def update(
    oid: int,
    new: tuple[str | bytes | None, ...],
    old: tuple[str | bytes | None, ...] | None = None,
    marker: bytes = b"K",
) -> bytes:
    head = b"U" + struct.pack("!I", oid)
    if old is not None:
        head += marker + tupledata(*old)
    return head + b"N" + tupledata(*new)


def delete(oid: int, old: tuple[str | bytes | None, ...], marker: bytes = b"K") -> bytes:
    return b"D" + struct.pack("!I", oid) + marker + tupledata(*old)


def begin(final_lsn: int = 0x100, when: int = 5_000_000, xid: int = 7) -> bytes:
    return b"B" + struct.pack("!QqI", final_lsn, when, xid)


def commit(end_lsn: int = 0x200, when: int = 5_000_000, commit_lsn: int = 0x100) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, commit_lsn, end_lsn, when)
