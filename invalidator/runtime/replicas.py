"""Replica-aware delivery: a pool's operations wait until its read replicas replayed them.

``ReplicaGate`` owns one ``ReplicaPoller`` per replica (threads of their own, never the
loop's), the pure ``ReplicaHolds`` bookkeeping, and a wake-up pipe the loop selects on,
so a held operation leaves within a poll interval of the replica's replay. It publishes
``replica_lag_seconds{replica}`` and ``replica_wait_seconds``, and logs a replica that
cannot be reached or makes operations wait past ``replica_wait_max``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from invalidator.config.pools import PoolConfig
from invalidator.core.holds import Hold, Released, ReplicaHolds
from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn
from invalidator.runtime.telemetry import Telemetry
from invalidator.sources.replicas import ReplicaPoller

LOG_EVERY = 10.0  # a replica's repeated warning, at most this often


@dataclass(frozen=True, slots=True)
class PoolReplicas:
    """A pool's replicas (DSNs) and how long its operations may wait for them."""

    dsns: tuple[str, ...]
    wait_max: float


class ReplicaGate:
    """Holds the operations of pools with replicas until every replica replayed them."""

    def __init__(
        self,
        pools: Mapping[str, PoolReplicas],
        telemetry: Telemetry,
        clock: Callable[[], float] = time.monotonic,
        poller: Callable[[str, Callable[[], None]], ReplicaPoller] | None = None,
        primary_dsn: str | None = None,
    ):
        if poller is None:

            def poller(dsn: str, wake: Callable[[], None]) -> ReplicaPoller:
                return ReplicaPoller(dsn, wake, primary_dsn=primary_dsn)

        self.telemetry = telemetry
        self.clock = clock
        self.holds = ReplicaHolds({name: pool.wait_max for name, pool in pools.items()})
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        by_dsn: dict[str, ReplicaPoller] = {}
        self._pool_pollers: dict[str, tuple[ReplicaPoller, ...]] = {}
        for name, pool in pools.items():
            self._pool_pollers[name] = tuple(
                by_dsn.setdefault(dsn, poller(dsn, self._wake)) for dsn in pool.dsns
            )
        self.pollers = tuple(by_dsn.values())
        self._late_logged: dict[str, float] = {}
        self._error_logged: dict[str, str | None] = {}

    @property
    def pools(self) -> frozenset[str]:
        return self.holds.pools

    def start(self) -> None:
        for poller in self.pollers:
            poller.start()

    def close(self) -> None:
        for poller in self.pollers:
            poller.stop()
        for fd in (self._read, self._write):
            os.close(fd)

    # -- the loop's side ------------------------------------------------------------------

    def fileno(self) -> int:
        """Readable when a replica's position moved (the loop selects on it)."""
        return self._read

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is already pending
            os.write(self._write, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

    def split(self, operations: Sequence[Operation]) -> tuple[list[Operation], list[Operation]]:
        """(sent now, held): operations on pools with replicas are held."""
        pools = self.holds.pools
        now: list[Operation] = []
        held: list[Operation] = []
        for op in operations:
            (held if op.pool in pools and op.op != "flush" else now).append(op)
        return now, held

    def hold(self, operations: Sequence[Operation], txn: Txn) -> None:
        self.holds.hold(operations, txn, self.clock())
        for pool in {op.pool for op in operations}:
            for poller in self._pool_pollers[pool]:
                if not poller.active:
                    poller.active = True
                    poller.wake()

    def release(self, now: float) -> Released:
        """What may go now; the caller sends it (``Pipeline.tick``)."""
        replayed = {pool: self._replayed(pollers) for pool, pollers in self._pool_pollers.items()}
        released = self.holds.release(replayed, now)
        wall = time.time()
        observe = self.telemetry.metrics.replica_wait.observe
        for hold in released.on_time:
            if hold.txn.txn_time is not None:
                observe(max(0.0, wall - hold.txn.txn_time))
        for hold in released.late:
            self._log_late(hold, now)
        watched = {pool for pool in self._pool_pollers if self.holds.watching(pool)}
        for poller in self.pollers:
            poller.active = any(
                poller in self._pool_pollers[pool] for pool in watched
            )  # poll fast while anything of its pools waits for it
        return released

    @staticmethod
    def _replayed(pollers: Sequence[ReplicaPoller]) -> int | None:
        positions = [p.replayed for p in pollers]
        if any(p is None for p in positions):
            return None
        return min(p for p in positions if p is not None)

    def next_due(self) -> float | None:
        return self.holds.next_due(self.clock())

    def _log_late(self, hold: Hold, now: float) -> None:
        if now - self._late_logged.get(hold.pool, -LOG_EVERY) < LOG_EVERY:
            return
        self._late_logged[hold.pool] = now
        behind = [
            p.label
            for p in self._pool_pollers[hold.pool]
            if p.replayed is None or p.replayed < hold.txn.txn_end_lsn
        ]
        self.telemetry.log.warning(
            "replica behind: applying now, and again once it has replayed",
            pool=hold.pool,
            replicas=behind,
            waited=round(now - hold.since, 1),
            replica_wait_max=self.holds.wait_max[hold.pool],
        )

    # -- telemetry ------------------------------------------------------------------------

    def publish(self, now: float) -> None:
        """Set ``replica_lag_seconds`` and log replicas that stopped or resumed answering."""
        wall = time.time()
        gauge = self.telemetry.metrics.replica_lag
        for poller in self.pollers:
            lag = 0.0
            if poller.error is not None:
                # Never answered (unreachable, or another cluster's server): since start.
                lag = now - (poller.last_ok or poller.started)
            for pool, pollers in self._pool_pollers.items():
                if poller not in pollers:
                    continue
                oldest = self._oldest_unreplayed(pool, poller)
                if oldest is not None:
                    lag = max(lag, wall - oldest)
            gauge.labels(poller.label).set(lag)
            self._log_error(poller)

    def _oldest_unreplayed(self, pool: str, poller: ReplicaPoller) -> float | None:
        hold = self.holds.oldest(pool)
        if hold is None or not hold.txn.txn_end_lsn or hold.txn.txn_time is None:
            return None
        if poller.replayed is not None and poller.replayed >= hold.txn.txn_end_lsn:
            return None
        return hold.txn.txn_time

    def _log_error(self, poller: ReplicaPoller) -> None:
        error = poller.error
        previous = self._error_logged.get(poller.label)
        if error == previous:
            return
        self._error_logged[poller.label] = error
        if error is not None:
            self.telemetry.log.warning("replica unreachable", replica=poller.label, error=error)
        else:
            self.telemetry.log.info("replica reachable again", replica=poller.label)


def gate_for(
    pools: Mapping[str, PoolConfig], telemetry: Telemetry, primary_dsn: str | None = None
) -> ReplicaGate | None:
    """A gate for the pools that list ``replicas`` (None when none does); each replica is
    checked to be a standby of ``primary_dsn``'s cluster."""
    wanted = {
        name: PoolReplicas(
            tuple(dsn.get_secret_value() for dsn in pool.replicas), pool.replica_wait_max
        )
        for name, pool in pools.items()
        if pool.replicas
    }
    return ReplicaGate(wanted, telemetry, primary_dsn=primary_dsn) if wanted else None
