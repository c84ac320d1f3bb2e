"""What the daemon tells the world: health for /readyz, metrics, and node log lines.

Counts on the hot path go into plain ``Counter``s and reach Prometheus every
``PUBLISH_INTERVAL`` (a labelled ``inc`` per operation would cost more than the operation).
A failing node's log lines are limited to one per second, with how many were not logged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from invalidator.core.changes import int_to_lsn
from invalidator.runtime.metrics import Metrics

PUBLISH_INTERVAL = 0.25
NODE_LOG_EVERY = 1.0


@dataclass(slots=True)
class Health:
    """What /healthz and /readyz report; written by the loop, read by the HTTP thread."""

    streaming: bool = False
    last_loop: float = field(default_factory=time.monotonic)
    last_error: str = ""
    confirmed_lsn: str = ""
    # Failed pre-flight checks the daemon started with (``run --lenient``), for /readyz.
    problems: tuple[str, ...] = ()


class Telemetry:
    """Health, metric tallies and rate-limited node logging of one daemon."""

    def __init__(
        self,
        metrics: Metrics,
        log: Any,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.metrics = metrics
        self.log = log
        self.health = health or Health()
        self.clock = clock
        self.op_results: Counter[tuple[str, str, str]] = Counter()  # (pool, op, result)
        self.changes: Counter[tuple[str, str]] = Counter()  # (table, kind)
        self._node_logged: dict[str, tuple[float, int]] = {}
        self._last_publish = 0.0

    # -- state ----------------------------------------------------------------------------

    def streaming(self) -> None:
        self.health.streaming = True
        self.health.last_error = ""
        self.metrics.up.set(1)

    def not_streaming(self, reason: str = "") -> None:
        self.health.streaming = False
        if reason:
            self.health.last_error = reason
        self.metrics.up.set(0)

    def observe_commit_latency(self, commit_times: Iterable[float]) -> None:
        observe = self.metrics.commit_to_ack.observe
        now = time.time()
        for stamp in commit_times:
            observe(max(0.0, now - stamp))

    # -- memcached nodes ------------------------------------------------------------------

    def node_error(self, node: str, reason: str) -> None:
        """Every error is counted; its log line at most once a second per node."""
        self.metrics.memcached_errors.labels(node).inc()
        now = self.clock()
        last, suppressed = self._node_logged.get(node, (-1.0, 0))
        if now - last < NODE_LOG_EVERY:
            self._node_logged[node] = (last, suppressed + 1)
            return
        self._node_logged[node] = (now, 0)
        self.log.warning(
            "memcached node error", node=node, reason=reason, suppressed=suppressed or None
        )

    def node_event(self, node: str, event: str, count: int, message: str) -> None:
        """A rare node event (restart, overflow, drop: warning; back: info): always logged."""
        if event == "back":
            self._node_logged.pop(node, None)
            self.log.info("memcached node back", node=node, detail=message)
            return
        if count:
            self.op_results[("*", event, "dropped")] += count
        self.log.warning(
            "memcached node " + event.replace("_", " "),
            node=node,
            operations=count or None,
            detail=message,
        )

    # -- publishing -----------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now - self._last_publish >= PUBLISH_INTERVAL

    def publish(self, confirmed: int, wal_end: int, pending: dict[str, int]) -> None:
        """Move the tallies into Prometheus and set the gauges."""
        self._last_publish = self.clock()
        metrics = self.metrics
        if confirmed:
            metrics.confirmed_lsn.set(confirmed)
            self.health.confirmed_lsn = int_to_lsn(confirmed)
        if wal_end:
            metrics.replication_lag.set(max(0, wal_end - confirmed))
        for node, count in pending.items():
            metrics.pending.labels(node).set(count)
        for (pool, op, result), count in self.op_results.items():
            metrics.operations.labels(pool, op, result).inc(count)
        self.op_results.clear()
        for (table, kind), count in self.changes.items():
            metrics.changes.labels(table, kind).inc(count)
        self.changes.clear()
