"""Cache operations: what the rules plan and the sink applies.

Plain frozen data shared by the rules engine, placement and the sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OpName = Literal["delete", "refresh", "bump", "flush"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One thing to do to one key of one pool.

    ``refresh`` carries ``value`` (bytes as the app stores them) and ``ttl`` (seconds,
    0 = no expiry); ``bump`` increments a generation counter at ``key``; ``flush`` empties
    every node of the pool (a truncate, whose keys cannot be listed).
    """

    op: OpName
    key: str
    pool: str
    table: str
    lsn: str | None = None
    value: bytes | None = None
    ttl: int | None = None
    rule: int = 0


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A key a rule wanted but could not build or could not send; counted and logged."""

    rule: int
    table: str
    template: str
    reason: str
    lsn: str | None = None
    kind: str = "unbuildable"  # absent | null | invalid | truncate: groups log lines


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules' verdict on one change."""

    operations: tuple[Operation, ...]
    skipped: tuple[SkippedKey, ...] = ()


EMPTY_PLAN = Plan(())
