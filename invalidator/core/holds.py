"""Operations held until a pool's read replicas have replayed their commit.

With ``pools.NAME.replicas``, a delete sent at commit time lets a reader miss, read the
*replica* (still before the commit) and re-cache the old row. So the pool's operations are
held, in commit order, until every replica has replayed the transaction's commit (its end
LSN, ``Txn.txn_end_lsn``), and only then sent. A replica down or far behind is bounded
by ``wait_max``: past it the operations go at once and are sent again (refreshes as
deletes) once the replicas have replayed the commit. Pure bookkeeping: the runtime polls
the replicas and hands the replayed positions in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn

# Re-applications remembered per pool for a replica that stays behind; past this many
# operations they are replaced by one flush of the pool once the replicas catch up.
REAPPLY_LIMIT = 100_000


@dataclass(slots=True, eq=False)
class Hold:
    """One transaction's held operations on one pool."""

    txn: Txn
    pool: str
    since: float  # when the first operation was held (monotonic)
    operations: list[Operation] = field(default_factory=list)


@dataclass(slots=True)
class Released:
    """What may go to the nodes now."""

    on_time: list[Hold] = field(default_factory=list)  # every replica has replayed it
    late: list[Hold] = field(default_factory=list)  # waited ``wait_max``: sent anyway
    reapply: list[Operation] = field(default_factory=list)  # late work, now replayed


def reapplication(operation: Operation) -> Operation:
    """How a late operation is sent again once replayed: a refresh becomes a delete (its
    value may be older than a later refresh of the same key by then); the rest as is."""
    if operation.op == "refresh":
        return replace(operation, op="delete", value=None, ttl=None)
    return operation


class ReplicaHolds:
    """Held operations per replica pool, oldest commit first."""

    def __init__(self, wait_max: Mapping[str, float], reapply_limit: int = REAPPLY_LIMIT):
        self.wait_max = dict(wait_max)
        self.reapply_limit = reapply_limit
        self._held: dict[str, deque[Hold]] = {pool: deque() for pool in wait_max}
        # (end LSN, operations) of late transactions, waiting for the replicas to replay.
        self._reapply: dict[str, deque[tuple[int, list[Operation]]]] = {
            pool: deque() for pool in wait_max
        }
        self._reapply_count: dict[str, int] = dict.fromkeys(wait_max, 0)
        # Pools whose re-applications overflowed: flush once replayed past this LSN.
        self._flush_after: dict[str, int] = {}

    @property
    def pools(self) -> frozenset[str]:
        return frozenset(self._held)

    def __bool__(self) -> bool:
        return any(self._held.values()) or any(self._reapply.values()) or bool(self._flush_after)

    def waiting(self, pool: str) -> int:
        """Transactions of ``pool`` held now."""
        return len(self._held[pool])

    def watching(self, pool: str) -> bool:
        """Something of ``pool`` waits for its replicas: held, or to be applied again."""
        return bool(self._held[pool] or self._reapply[pool]) or pool in self._flush_after

    def oldest(self, pool: str) -> Hold | None:
        held = self._held[pool]
        return held[0] if held else None

    def hold(self, operations: Iterable[Operation], txn: Txn, now: float) -> None:
        """Hold ``operations`` (all on replica pools) for ``txn``. The transaction counts
        one outstanding unit per hold, so it cannot be confirmed before release."""
        for op in operations:
            queue = self._held[op.pool]
            if not queue or queue[-1].txn is not txn:
                queue.append(Hold(txn, op.pool, now))
                txn.outstanding += 1
            queue[-1].operations.append(op)

    def drop_open(self) -> int:
        """The session ended: holds of transactions whose commit it never read are
        dropped (the server sends those transactions again to the next session, whose
        holds then take their place; left here they would block every later hold of
        their pool forever). Returns how many were dropped."""
        dropped = 0
        for pool, queue in self._held.items():
            kept = deque(hold for hold in queue if hold.txn.txn_end_lsn)
            dropped += len(queue) - len(kept)
            self._held[pool] = kept
        return dropped

    def release(self, replayed: Mapping[str, int | None], now: float) -> Released:
        """Everything that may go now, given each pool's replayed position (the lowest of
        its replicas'; None while one is unknown). Holds leave in commit order: a later
        transaction never overtakes an earlier one of the same pool. The caller sends
        each released hold's operations, then takes back its outstanding unit."""
        out = Released()
        for pool, queue in self._held.items():
            lsn = replayed.get(pool)
            wait_max = self.wait_max[pool]
            while queue:
                hold = queue[0]
                end = hold.txn.txn_end_lsn
                if not end:
                    break  # its transaction's commit is not read yet
                if lsn is not None and end <= lsn:
                    out.on_time.append(queue.popleft())
                elif now - hold.since >= wait_max:
                    out.late.append(queue.popleft())
                    self._remember(pool, end, hold.operations)
                else:
                    break
            if lsn is not None:
                self._due_reapply(pool, lsn, out.reapply)
        return out

    def _remember(self, pool: str, end_lsn: int, operations: list[Operation]) -> None:
        if pool in self._flush_after:
            self._flush_after[pool] = max(self._flush_after[pool], end_lsn)
            return
        self._reapply[pool].append((end_lsn, operations))
        self._reapply_count[pool] += len(operations)
        if self._reapply_count[pool] > self.reapply_limit:
            last = max(lsn for lsn, _ in self._reapply[pool])
            self._reapply[pool].clear()
            self._reapply_count[pool] = 0
            self._flush_after[pool] = last

    def _due_reapply(self, pool: str, lsn: int, out: list[Operation]) -> None:
        pending = self._reapply[pool]
        while pending and pending[0][0] <= lsn:
            _, operations = pending.popleft()
            self._reapply_count[pool] -= len(operations)
            out.extend(reapplication(op) for op in operations)
        flush_after = self._flush_after.get(pool)
        if flush_after is not None and flush_after <= lsn:
            del self._flush_after[pool]
            out.append(Operation("flush", "", pool, "replica:caught-up"))

    def next_due(self, now: float) -> float | None:
        """When the oldest committed hold times out (None: nothing waits on a timer)."""
        due: float | None = None
        for pool, queue in self._held.items():
            if queue and queue[0].txn.txn_end_lsn:
                at = queue[0].since + self.wait_max[pool]
                due = at if due is None else min(due, at)
        return due
