"""Which WAL position may be confirmed: the at-least-once bookkeeping, as plain data.

Transactions are registered in commit order. Each carries a count of operations not yet
acknowledged by memcached; a transaction is done when its commit has been seen and its
count is zero. The confirmable position is the ``nextlsn`` of the newest transaction such
that it and every older one are done — never further, whatever order replies arrive in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Txn:
    """One transaction's bookkeeping; operations hold a reference to it."""

    outstanding: int = 0
    committed: bool = False
    end_lsn: int = 0
    commit_time: float | None = None  # commit timestamp (Unix seconds), for latency
    # A unit of several transactions (the C hot path's): each one's commit time
    commit_times: tuple[float, ...] = ()
    # The end LSN and commit time of the transaction this unit's work belongs to, once its
    # commit is seen (a row's unit is closed at 0 before its transaction commits): what
    # replica holds wait for. 0 / None until then.
    txn_end_lsn: int = 0
    txn_time: float | None = None

    @property
    def done(self) -> bool:
        return self.committed and self.outstanding == 0


class AckTracker:
    """Open transactions in commit order and the highest position safe to confirm."""

    def __init__(self, confirmed: int = 0):
        self.confirmed = confirmed
        self._open: deque[Txn] = deque()
        # Units closed at position 0 since the last commit: their transaction's commit is
        # the next one (or later: never earlier).
        self._unplaced: list[Txn] = []

    def begin(self) -> Txn:
        txn = Txn()
        self._open.append(txn)
        return txn

    def commit(self, txn: Txn, end_lsn: int, commit_time: float | None) -> None:
        """Close ``txn`` at ``end_lsn`` (0: a unit inside a transaction, confirmable only
        with the commit that follows it)."""
        txn.committed = True
        txn.end_lsn = end_lsn
        txn.commit_time = commit_time
        if not end_lsn:
            self._unplaced.append(txn)
            return
        txn.txn_end_lsn = end_lsn
        txn.txn_time = commit_time
        if self._unplaced:
            for unit in self._unplaced:
                unit.txn_end_lsn = end_lsn
                unit.txn_time = commit_time
            self._unplaced.clear()

    @property
    def pending(self) -> int:
        """Transactions seen but not yet confirmable."""
        return len(self._open)

    def advance(self) -> list[Txn]:
        """Pop every leading done transaction; returns them (oldest first)."""
        finished: list[Txn] = []
        queue = self._open
        while queue and queue[0].done:
            txn = queue.popleft()
            if txn.end_lsn > self.confirmed:
                self.confirmed = txn.end_lsn
            finished.append(txn)
        return finished

    def idle_advance(self, wal_end: int) -> bool:
        """With nothing open, the server's WAL end may be confirmed (quiet tables must not
        pin WAL). Returns whether the position moved."""
        if self._open or wal_end <= self.confirmed:
            return False
        self.confirmed = wal_end
        return True


def commit_times(finished: list[Txn]) -> list[float]:
    """The commit times of finished transactions (a unit's each), for the latency metric."""
    times: list[float] = []
    for done in finished:
        if done.commit_times:
            times.extend(done.commit_times)
        elif done.commit_time is not None:
            times.append(done.commit_time)
    return times
