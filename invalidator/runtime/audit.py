"""The staleness audit: sample rows, read their keys from the owning nodes, judge each copy.

One ``Auditor`` serves ``invalidator audit`` (once) and the probe inside ``run``
(``AuditProbe``: a thread of its own, with its own database connection and blocking
memcached connections, so it never holds up the replication loop). Rows are read from
the database the pool's apps read (its first ``replicas`` DSN, else the primary) with a
statement timeout, at most ``rate`` rows a second. A copy that looks stale is read again,
row and key, after ``recheck_delay`` and once the daemon has applied every change the
re-read row can reflect (its confirmed position, waited for at most ``SETTLE_MAX``): a
write racing the probe, or an invalidation still in flight, is not counted as stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from invalidator.config import NO_DSN, Config
from invalidator.core.audit import (
    RecentRows,
    RuleTally,
    Verdict,
    audited_rules,
    expected_json,
    judge,
    row_keys,
)
from invalidator.core.changes import Row
from invalidator.core.placement import Placement, parse_server
from invalidator.core.rules import CompiledRule
from invalidator.core.templates import Template
from invalidator.errors import NodeError, SourceError
from invalidator.runtime.metrics import Metrics
from invalidator.sinks.memcached.client import NodeConnection
from invalidator.sinks.memcached.connector import PLAIN, Connector
from invalidator.sinks.memcached.protocol import Item
from invalidator.sources.rows import RowReader

DEFAULT_RATE = 200.0  # rows/s
RECHECK_DELAY = 0.5  # seconds before a stale-looking copy is read again
CHUNK = 50  # rows whose keys are read in one round trip per node
NODE_TIMEOUT = 2.0
SETTLE_MAX = 5.0  # longest wait for the daemon to apply what the re-read saw
SETTLE_POLL = 0.05
RECHECK_ROUNDS = 3  # re-checks of a key rewritten while it was being re-checked


def apps_dsn(config: Config, pool: str) -> str:
    """The database ``pool``'s apps read on a miss: its first replica, else the primary."""
    replicas = config.pools[pool].replicas
    if replicas:
        return replicas[0].get_secret_value()
    if config.source.dsn is None:
        raise SourceError(NO_DSN)
    return config.source.dsn.get_secret_value()


class Pacer:
    """At most ``rate`` items a second: ``wait(n)`` sleeps until ``n`` more are allowed."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ):
        self.interval = 1.0 / rate
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0

    def wait(self, n: int = 1) -> None:
        now = self.clock()
        if self._next > now:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + n * self.interval


@dataclass(slots=True)
class _Copy:
    """One (key, node) read whose first verdict was stale: read again later."""

    key: str
    node: str
    template: Template
    row: Row
    cas: int  # the write that looked stale: only its persisting counts


class NodeReads:
    """Blocking reads from memcached nodes by name, one connection per node, made on first
    use with the pool's connector (TLS where the pool says so)."""

    def __init__(self, connectors: Mapping[str, Connector], timeout: float = NODE_TIMEOUT):
        self.connectors = connectors
        self.timeout = timeout
        self.connections: dict[str, NodeConnection] = {}

    def gets_many(self, pool: str, node: str, keys: Sequence[str]) -> dict[str, Item]:
        conn = self.connections.get(node)
        if conn is None:
            connector = self.connectors.get(pool, PLAIN)
            conn = NodeConnection(node, parse_server(node), self.timeout, connector)
            self.connections[node] = conn
        return conn.gets_many(keys)

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()


class Auditor:
    """Audits rules: ``audit(rule, sample)`` samples, reads, judges and re-checks."""

    def __init__(
        self,
        config: Config,
        placements: Callable[[], Mapping[str, Placement]],
        nodes: NodeReads,
        *,
        rate: float = DEFAULT_RATE,
        recheck_delay: float = RECHECK_DELAY,
        readers: Callable[[str], RowReader] = RowReader,
        confirmed: Callable[[], int | None] | None = None,
        recent: RecentRows | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.placements = placements
        self.nodes = nodes
        self.pacer = Pacer(rate, clock, self._sleep)
        self.recheck_delay = recheck_delay
        self._new_reader = readers
        self.readers: dict[str, RowReader] = {}
        self.confirmed = confirmed  # the daemon's applied position (None: do not wait)
        self.recent = recent  # rows the stream changed lately (inside `run`)
        self.clock = clock
        self.stop = stop or threading.Event()

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    @property
    def queries(self) -> int:
        """Database queries run so far (all readers)."""
        return sum(reader.queries for reader in self.readers.values())

    def reader(self, pool: str) -> RowReader:
        dsn = apps_dsn(self.config, pool)
        reader = self.readers.get(dsn)
        if reader is None:
            reader = self.readers[dsn] = self._new_reader(dsn)
        return reader

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.nodes.close()

    def audit(self, rule: CompiledRule, sample: int) -> RuleTally:
        """Audit ``rule`` on up to ``sample`` rows; failures end up in ``tally.error``."""
        tally = RuleTally(rule.index, rule.pool, rule.qualified_table)
        try:
            self._audit(rule, sample, tally)
        except (SourceError, NodeError) as exc:
            tally.error = str(exc)
        return tally

    def _expected(self, rule: CompiledRule, row: Row) -> bytes | None:
        if rule.value_query is not None:
            return self.reader(rule.pool).value(rule.value_query, row)
        return expected_json(rule, row)

    def _audit(self, rule: CompiledRule, sample: int, tally: RuleTally) -> None:
        placement = self.placements().get(rule.pool)
        if placement is None:
            raise SourceError(f"pool {rule.pool!r} has no known nodes yet")
        reader = self.reader(rule.pool)
        rows = reader.sample(rule.schema, rule.table, sample)
        if self.recent is not None:
            # Rows the stream changed lately: read again (one paced query each), as they
            # are where an invalidation would be missing.
            for match in self.recent.take(rule.index, sample):
                self.pacer.wait(1)
                if self.stop.is_set():
                    return
                found = reader.lookup(rule.schema, rule.table, match)
                if len(found) == 1:
                    rows.append(found[0])
                    tally.recent += 1
        suspects: list[_Copy] = []
        for chunk in _chunks(rows, CHUNK):
            self.pacer.wait(len(chunk))
            if self.stop.is_set():
                return
            wanted: dict[str, list[str]] = {}
            judged: list[tuple[str, str, Template, Row, bytes | None]] = []
            for row in chunk:
                tally.rows += 1
                expected = self._expected(rule, row)
                for key, template in row_keys(rule, row):
                    for node in placement.owners(key):
                        wanted.setdefault(node, []).append(key)
                        judged.append((key, node, template, row, expected))
            cached: dict[str, dict[str, Item]] = {}
            for node, keys in wanted.items():
                try:
                    cached[node] = self.nodes.gets_many(rule.pool, node, keys)
                except NodeError as exc:  # the other nodes' copies are still judged
                    tally.error = tally.error or str(exc)
            for key, node, template, row, expected in judged:
                if node not in cached:
                    continue
                item = cached[node].get(key)
                verdict = judge(item.value if item is not None else None, expected)
                if verdict == "stale" and item is not None:
                    suspects.append(_Copy(key, node, template, row, item.cas))
                else:
                    tally.count(verdict)
        self._recheck_all(rule, suspects, tally)

    def _recheck_all(self, rule: CompiledRule, suspects: list[_Copy], tally: RuleTally) -> None:
        """Judge the stale-looking copies again, after the delay and the daemon's catch-up.
        Stale counts only when the very write that looked stale (its CAS) is still there:
        a key rewritten meanwhile is watched again (its new write), at most
        ``RECHECK_ROUNDS`` times, then left unjudged (``rewritten``)."""
        for _ in range(RECHECK_ROUNDS):
            if not suspects or self.stop.is_set():
                break
            self._sleep(self.recheck_delay)
            reader = self.reader(rule.pool)
            rows_now = [self._lookup(rule, copy) for copy in suspects]
            self._settle(reader.position())
            again: list[_Copy] = []
            for copy, rows in zip(suspects, rows_now, strict=True):
                verdict, item, expected = self._recheck(rule, copy, rows)
                if verdict == "stale" and item is not None and item.cas != copy.cas:
                    again.append(replace(copy, cas=item.cas))
                    continue
                tally.rechecked += 1
                tally.count(verdict)
                if verdict == "stale":
                    tally.example(copy.key, copy.node, item.value if item else None, expected)
            suspects = again
        for _ in suspects:
            tally.rechecked += 1
            tally.count("rewritten")

    def _lookup(self, rule: CompiledRule, copy: _Copy) -> list[dict[str, Any]]:
        match = {column: copy.row[column] for column in copy.template.columns}
        return self.reader(rule.pool).lookup(rule.schema, rule.table, match)

    def _settle(self, position: int) -> None:
        """Wait (at most ``SETTLE_MAX``) until the daemon has applied every change up to
        ``position``: a copy still stale then is not one whose invalidation is in flight."""
        if self.confirmed is None:
            return
        deadline = self.clock() + SETTLE_MAX
        while not self.stop.is_set():
            done = self.confirmed()
            if done is None or done >= position or self.clock() > deadline:
                return
            self._sleep(SETTLE_POLL)

    def _recheck(
        self, rule: CompiledRule, copy: _Copy, rows: list[dict[str, Any]]
    ) -> tuple[Verdict, Item | None, bytes | None]:
        """The copy read again against ``rows`` (the row read again): the verdict, with
        what it was made on. Still stale, the row is read once more: a write that landed
        between the re-read and the get (a refresh) explains it too."""
        if len(rows) > 1:
            return "absent", None, None  # the key's columns name several rows: no verdict
        item = self.nodes.gets_many(rule.pool, copy.node, [copy.key]).get(copy.key)
        cached = item.value if item is not None else None
        expected = self._expected(rule, rows[0]) if rows else None
        verdict = judge(cached, expected)
        if verdict == "stale":
            later = self._lookup(rule, copy)
            if len(later) <= 1:
                newer = self._expected(rule, later[0]) if later else None
                if judge(cached, newer) != "stale":
                    return judge(cached, newer), item, newer
        return verdict, item, expected


def _chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


class AuditProbe:
    """``audit: {every, sample}`` inside ``run``: a thread auditing every rule with a
    ``value`` every ``every`` seconds, counting into ``audit_checked_total`` (cached
    copies compared) and ``audit_stale_total`` (those still stale when re-read)."""

    def __init__(
        self,
        auditor: Auditor,
        rules: Sequence[CompiledRule],
        metrics: Metrics,
        log: Any,
        active: Callable[[], bool] = lambda: True,
    ):
        """``active``: whether to audit now (the daemon audits only while it streams, so
        a standby replica adds no load)."""
        assert auditor.config.audit is not None
        self.active = active
        self.auditor = auditor
        self.rules = audited_rules(rules)
        self.metrics = metrics
        self.log = log
        self.every = auditor.config.audit.every
        self.sample = auditor.config.audit.sample
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, name="audit-probe", daemon=True)

    def start(self) -> None:
        if self.rules:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.auditor.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.auditor.close()

    def round(self) -> list[RuleTally]:
        """One audit of every rule, counted."""
        tallies = [self.auditor.audit(rule, self.sample) for rule in self.rules]
        for tally in tallies:
            labels = (tally.pool, str(tally.rule))
            self.metrics.audit_checked.labels(*labels).inc(tally.cached)
            self.metrics.audit_stale.labels(*labels).inc(tally.stale)
            if tally.error is not None:
                self.log.warning(
                    "audit failed", rule=tally.rule, table=tally.table, error=tally.error
                )
            elif tally.stale:
                self.log.warning(
                    "audit found stale keys",
                    rule=tally.rule,
                    table=tally.table,
                    stale=tally.stale,
                    checked=tally.cached,
                    examples=[f"{e.key}@{e.node}" for e in tally.examples],
                )
        self.rounds += 1
        return tallies

    def _run(self) -> None:
        stop = self.auditor.stop
        while not stop.wait(self.every):
            if not self.active():
                continue
            try:
                self.round()
            except Exception as exc:  # the probe must never take the daemon down
                self.log.error("audit probe failed", error=f"{type(exc).__name__}: {exc}")
