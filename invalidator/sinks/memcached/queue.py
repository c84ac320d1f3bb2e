"""What a node owes: its entries queued and in flight, and how work is dropped.

An entry is one operation for one node (or a batch of deletes from the C hot path) and
the transactions waiting on it. Work is dropped only where nothing can be left stale:
the node restarted after the transaction committed (its data is gone), the node left
every pool, or the queue of an unreachable node overflowed — then one ``flush_all``
replaces it, and the oldest dropped transaction stays open until the flush is
acknowledged (a barrier), so the confirmed position cannot pass lost work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn
from invalidator.sinks.memcached.protocol import (
    FLUSH_REQUEST,
    BumpStep,
    delete_request,
    request_for,
)

MAX_QUEUE = 100_000
FLUSH_OP = Operation("delete", "", "", "")  # marker op of the flush_all entry


@dataclass(slots=True, eq=False)
class Entry:
    """One operation for one node and the transactions waiting on it."""

    op: Operation
    request: bytes
    txns: list[Txn] = field(default_factory=list)
    step: BumpStep = "incr"  # a bump's protocol step (see protocol.bump_next)
    outcome: str = ""  # when finished: ok | not_found | not_stored | created | dropped
    count: int = 1  # requests in ``request``: > 1 only for a batch of deletes
    batch: bool = False  # ``request`` is ``count`` deletes (the C hot path's output)
    remaining: int = 0  # a batch in flight: replies still to come
    deleted: int = 0  # a batch: replies that were DELETED (the rest NOT_FOUND)


def _settle(entry: Entry) -> None:
    for txn in entry.txns:
        txn.outstanding -= 1


class NodeQueue:
    """The entries of one node; ``NodeChannel`` adds the connection that drains them."""

    node: str
    max_queue: int
    on_event: Callable[[str, str, int, str], None]

    def __init__(self) -> None:
        self.queue: deque[Entry] = deque()
        self.inflight: deque[Entry] = deque()
        self.unsent_deletes: dict[str, Entry] = {}
        self.flush: Entry | None = None
        self.ops = 0  # requests queued or in flight (a batch counts each of its deletes)

    @property
    def unreachable(self) -> bool:
        """The node failed and has not answered since (the channel knows): only then does
        a queue over ``max_queue`` become one flush_all. A node still connecting for the
        first time is not unreachable."""
        raise NotImplementedError

    def submit(self, op: Operation, txn: Txn | None) -> None:
        """Queue ``op`` for ``txn`` (None: a re-delete that no transaction waits for).

        A delete of a key already queued and unsent is shared: it will run after this
        commit too, so one delete serves both."""
        if txn is not None:
            txn.outstanding += 1
        if op.op == "delete":
            entry = self.unsent_deletes.get(op.key)
            if entry is not None:
                if txn is not None:
                    entry.txns.append(txn)
                return
            entry = Entry(op, delete_request(op.key.encode()), [txn] if txn else [])
            self.unsent_deletes[op.key] = entry
        else:
            entry = Entry(op, request_for(op), [txn] if txn else [])
        self._enqueue(entry)

    def submit_batch(self, op: Operation, requests: bytes, count: int, txn: Txn) -> None:
        """``count`` pipelined deletes (``delete <key>\\r\\n`` each) as one entry for ``txn``.

        ``op`` names the pool (its key is empty). The batch is settled when all ``count``
        replies are in; after a connection failure it is resent whole (deletes are
        idempotent)."""
        txn.outstanding += 1
        self._enqueue(Entry(op, requests, [txn], count=count, batch=True))

    def _enqueue(self, entry: Entry) -> None:
        self.queue.append(entry)
        self.ops += entry.count
        if self.ops > self.max_queue and self.unreachable:
            self._overflow()

    def drop_all(self) -> int:
        """The node left the pool: settle everything queued or in flight for it."""
        entries = list(self.inflight) + list(self.queue)
        self.inflight.clear()
        self.queue.clear()
        self.unsent_deletes.clear()
        self.flush = None
        self.ops = 0
        for entry in entries:
            entry.outcome = "dropped"
            _settle(entry)
        return sum(entry.count for entry in entries)

    @property
    def pending(self) -> int:
        """Requests queued or in flight."""
        return self.ops

    def _recount(self) -> None:
        self.ops = sum(e.count for e in self.queue) + sum(e.count for e in self.inflight)

    def _overflow(self) -> None:
        # Replace the unreachable node's queue by one flush_all; keep the oldest dropped
        # transaction open until the flush is acknowledged (see the module docstring).
        dropped = [e for e in self.queue if e is not self.flush]
        if not dropped:
            return
        # The oldest transaction with dropped work (re-deletes carry none) holds the line.
        barrier = next((e.txns[0] for e in dropped if e.txns), None)
        for entry in dropped:
            _settle(entry)
        self.queue.clear()
        self.unsent_deletes.clear()
        if self.flush is None:
            if barrier is not None:
                barrier.outstanding += 1
            self.flush = Entry(FLUSH_OP, FLUSH_REQUEST, [barrier] if barrier else [])
        self.queue.append(self.flush)
        self._recount()
        operations = sum(e.count for e in dropped)
        self.on_event(
            self.node,
            "overflow_flush",
            operations,
            f"queue over {self.max_queue} while unreachable: "
            f"{operations} operations replaced by flush_all on return",
        )

    def _drop_before(self, started: float) -> None:
        """Drop queued work of transactions that committed before the node (re)started:
        its data is gone, so nothing they changed can be stale there. Work of later (or
        still streaming) transactions is kept and sent."""
        kept: deque[Entry] = deque()
        dropped = 0
        for entry in self.queue:
            moot = entry is not self.flush and all(
                txn.commit_time is not None and txn.commit_time < started for txn in entry.txns
            )
            if moot:
                entry.outcome = "dropped"
                _settle(entry)
                dropped += entry.count
                if self.unsent_deletes.get(entry.op.key) is entry:
                    del self.unsent_deletes[entry.op.key]
            else:
                kept.append(entry)
        self.queue = kept
        self._recount()
        if dropped:
            self.on_event(
                self.node,
                "restart_dropped",
                dropped,
                f"{dropped} operations of transactions committed before the restart dropped",
            )
