"""Second deletes that close the cache-aside race, scheduled without unbounded memory.

A reader that fetched the old row just before a commit can store it just after the
daemon's delete; the stale value would live until its TTL. ``redelete_after`` deletes
the key again once such a reader must have finished. The first delete is never delayed,
and the second never holds the confirmed position (the first one already did its job).
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

Target = tuple[str, str, str]  # (pool, node, key)
T = TypeVar("T", bound=tuple[object, ...])


class RedeleteScheduler(Generic[T]):
    """Due times per target (a re-delete's (pool, node, key); a refresh re-check's too); a
    target scheduled again only moves its due time later.

    At ``capacity`` the earliest pending target is released early rather than dropped.
    """

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._due: dict[T, float] = {}
        self._heap: list[tuple[float, T]] = []

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, target: T, due: float) -> list[T]:
        """Schedule ``target`` at ``due``; returns targets to send now (capacity overflow)."""
        previous = self._due.get(target)
        if previous is not None and previous >= due:
            return []
        self._due[target] = due
        heapq.heappush(self._heap, (due, target))
        released: list[T] = []
        while len(self._due) > self.capacity:
            released.extend(self._pop(float("inf"), 1))
        return released

    def pop_due(self, now: float) -> list[T]:
        """Every target whose time has come."""
        return self._pop(now, len(self._heap))

    def next_due(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # superseded by a later due time
        return self._heap[0][0] if self._heap else None

    def _pop(self, now: float, limit: int) -> list[T]:
        out: list[T] = []
        heap = self._heap
        while heap and len(out) < limit and heap[0][0] <= now:
            due, target = heapq.heappop(heap)
            if self._due.get(target) == due:
                del self._due[target]
                out.append(target)
        return out
