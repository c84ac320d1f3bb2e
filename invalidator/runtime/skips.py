"""Reporting keys the rules could not build: every one counted, logged without flooding."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from invalidator.core.operations import SkippedKey
from invalidator.runtime.metrics import Metrics


class SkipReporter:
    """Counts each skipped key in ``unbuildable_keys_total{table,rule}`` and logs it.

    With ``every`` set (the daemon), a rule's template logs one line per kind of problem
    at most that often, so a table updated thousands of times a second under the wrong
    replica identity stays readable; ``replay`` logs every key.
    """

    def __init__(
        self,
        metrics: Metrics,
        log: Any,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.metrics = metrics
        self.log = log
        self.every = every
        self.clock = clock
        self._last: dict[tuple[int, str, str], float] = {}

    def report(self, skipped: SkippedKey) -> None:
        self.metrics.unbuildable.labels(skipped.table, str(skipped.rule)).inc()
        extra: dict[str, Any] = {}
        if self.every is not None:
            group = (skipped.rule, skipped.template, skipped.kind)
            now = self.clock()
            last = self._last.get(group)
            if last is not None and now - last < self.every:
                return
            self._last[group] = now
            extra["note"] = f"logged at most every {self.every:g}s per rule, template and kind"
        self.log.warning(
            "key not built",
            rule=skipped.rule,
            table=skipped.table,
            template=skipped.template,
            reason=skipped.reason,
            lsn=skipped.lsn,
            **extra,
        )
