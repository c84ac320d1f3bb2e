"""A ``value: {query}`` refresh, read again a moment later and rewritten if it changed.

The walsender can send a commit before the committing session has made it visible to
other sessions' snapshots. A refresh query run at once can then read the row as it was
*before* the change and write that, to stay until the TTL (``invalidator audit`` found 1-3
such copies in 20,000 refreshes under load). So each query refresh is run again
``RECHECK_AFTER`` later (or the rule's ``redelete_after``) and written again when its
value differs from what was written: the stale window closes within tens of milliseconds.
The same second look closes the cache-aside race for query refreshes (a reader storing
the row it read before the commit, after the refresh). A re-check no transaction waits for
(it never holds the confirmed position); a failing query deletes the key instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from invalidator.core.operations import Operation
from invalidator.core.redelete import RedeleteScheduler
from invalidator.errors import SourceError

RECHECK_AFTER = 0.05  # seconds; well past the commit-to-visible gap, short for a stale value

Target = tuple[str, str, int]  # (pool, key, rule)


class Values(Protocol):
    def value(self, query: str, row: dict[str, Any]) -> bytes | None: ...


@dataclass(slots=True)
class _Pending:
    query: str
    row: dict[str, Any]
    written: bytes | None  # the value the first refresh wrote
    op: Operation


class RefreshRechecks:
    """Pending re-checks of query refreshes, one per (pool, key, rule)."""

    def __init__(self, values: Values | None, log: Any, capacity: int = 100_000):
        self.values = values
        self.log = log
        self._scheduler: RedeleteScheduler[Target] = RedeleteScheduler(capacity)
        self._rows: dict[Target, dict[str, Any]] = {}  # the change's row, until the op is sent
        self._pending: dict[Target, _Pending] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def remember(self, op: Operation, row: dict[str, Any]) -> None:
        """The row ``op``'s value query ran with (called when the value is filled)."""
        self._rows[(op.pool, op.key, op.rule)] = row

    def sent(self, op: Operation, query: str, due: float) -> list[Operation]:
        """``op`` (a query refresh) went to its nodes: look again at ``due``. Returns
        re-checks released early (capacity), to send now."""
        target = (op.pool, op.key, op.rule)
        row = self._rows.pop(target, None)
        if row is None:
            return []  # already scheduled by another owner node's copy of the same op
        self._pending[target] = _Pending(query, row, op.value, op)
        return [o for t in self._scheduler.schedule(target, due) if (o := self._run(t))]

    def due(self, now: float) -> list[Operation]:
        """The operations the re-checks that are due ask for (rewrites, or deletes)."""
        return [o for t in self._scheduler.pop_due(now) if (o := self._run(t))]

    def next_due(self) -> float | None:
        return self._scheduler.next_due()

    def _run(self, target: Target) -> Operation | None:
        pending = self._pending.pop(target, None)
        if pending is None or self.values is None:
            return None
        op = pending.op
        try:
            value = self.values.value(pending.query, pending.row)
        except SourceError as exc:
            self.log.warning(
                "refresh re-check failed; deleting", rule=op.rule, table=op.table, error=str(exc)
            )
            value = None
        if value is None:
            return replace(op, op="delete", value=None, ttl=None, table="recheck")
        if value == pending.written:
            return None
        return replace(op, value=value, table="recheck")


def recheck_delay(redelete: float | None) -> float:
    """How long after a query refresh it is read again."""
    return redelete if redelete else RECHECK_AFTER
