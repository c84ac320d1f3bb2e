"""The change model: what the decoders produce and the rules consume.

Plain frozen data, no driver imports. A stream is a sequence of ``Event``s:
``Begin``, then the transaction's ``Change``s and transactional ``Message``s,
then ``Commit``; non-transactional ``Message``s may appear between transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ChangeKind = Literal["insert", "update", "delete", "truncate"]
Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Begin:
    """A transaction starts."""

    xid: int | None = None
    lsn: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """A transaction committed; ``nextlsn`` is the position to confirm once its work is done."""

    xid: int | None = None
    lsn: str | None = None
    nextlsn: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One row change (or one truncated table).

    ``new`` is the row after the change (INSERT, UPDATE), ``old`` the row before it as far
    as the replica identity carries it (UPDATE, DELETE). Columns absent from a row are
    unknown, never assumed NULL.
    """

    kind: ChangeKind
    schema: str
    table: str
    new: Row | None = None
    old: Row | None = None
    lsn: str | None = None

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class Message:
    """A logical decoding message (``pg_logical_emit_message``)."""

    transactional: bool
    prefix: str
    content: str
    lsn: str | None = None


Event = Begin | Commit | Change | Message


def lsn_to_int(lsn: str) -> int:
    """``'16/B374D848'`` → 64-bit integer position."""
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value: int) -> str:
    """64-bit integer position → ``'16/B374D848'``."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
