"""The daemon's one path from a change to queued cache work: rules → values → nodes.

``on_change`` is what every source calls for a change the C hot path did not take:
``plan()`` (the specification), a refresh rule's value query, the pools' placements, the
node channels, and the re-delete that closes the cache-aside race. ``settled`` counts what
memcached answered. Sources own the transactions (``Txn``) the work is accounted to.

With ``trace`` (``log.level: debug``) every operation is logged (key, node, rule, table,
LSN), at most ``TRACE_PER_SECOND`` lines a second with a count of those left out; the C
hot path is then not used, so that every key goes through ``plan()`` and is seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from invalidator.core.audit import RecentRows
from invalidator.core.changes import Change
from invalidator.core.operations import Operation, SkippedKey
from invalidator.core.placement import Placement
from invalidator.core.redelete import RedeleteScheduler
from invalidator.core.routing import Routed
from invalidator.core.rules import RuleSet, TableName, gap_operations, plan
from invalidator.core.tracker import Txn
from invalidator.errors import SourceError
from invalidator.runtime.rechecks import RefreshRechecks, recheck_delay
from invalidator.runtime.replicas import ReplicaGate
from invalidator.runtime.skips import SkipReporter
from invalidator.runtime.telemetry import Telemetry
from invalidator.sinks.memcached.channel import FLUSH_OP, Entry
from invalidator.sinks.memcached.nodeset import NodeSet

TRACE_PER_SECOND = 100


class ValueSource(Protocol):
    """Runs a refresh rule's ``value: {query}`` for a row (the database edge)."""

    def value(self, query: str, row: dict[str, Any]) -> bytes | None: ...

    def close(self) -> None: ...


class Pipeline:
    """Rules, values and nodes of one daemon; sources feed it, the loop settles it."""

    def __init__(
        self,
        rules: RuleSet,
        nodes: NodeSet,
        telemetry: Telemetry,
        skips: SkipReporter,
        values: ValueSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        gate: ReplicaGate | None = None,
        trace: bool = False,
    ):
        self.rules = rules
        self.nodes = nodes
        self.telemetry = telemetry
        self.skips = skips
        self.values = values
        self.clock = clock
        self.log = telemetry.log
        self.redeletes: RedeleteScheduler[tuple[str, str, str]] = RedeleteScheduler()
        self.rechecks = RefreshRechecks(values, telemetry.log)
        # Pools with read replicas: their operations wait until the replicas replayed them.
        self.gate = gate
        # Rows changed lately, for the audit probe (``audit:`` in the config).
        self.recent: RecentRows | None = None
        # A partition not known at start: the source resolves it to its watched parent.
        self.resolve_partition: Callable[[TableName], None] | None = None
        self._rules_version = 0
        self.trace = trace
        self._trace_window = (-1.0, 0, 0)  # (second started, lines logged, lines left out)

    # -- what sources see (sources.base.Feed) ---------------------------------------------

    @property
    def pending(self) -> int:
        """Operations not yet acknowledged: queued on nodes, or held for replicas."""
        held = sum(self.gate.holds.waiting(p) for p in self.gate.pools) if self.gate else 0
        return self.nodes.pending + held

    @property
    def timers(self) -> bool:
        """Something waits on a timer: re-deletes, or operations held for replicas."""
        return (
            bool(self.redeletes)
            or bool(self.rechecks)
            or (self.gate is not None and bool(self.gate.holds))
        )

    @property
    def version(self) -> int:
        return self._rules_version + self.nodes.version

    def placements(self) -> Mapping[str, Placement]:
        """The pools the C hot path may take: none while tracing (every key is logged);
        never a pool with replicas (its work is held, and C sends straight to the nodes)."""
        if self.trace:
            return {}
        placements = self.nodes.router.placements
        if self.gate is None:
            return placements
        held = self.gate.pools
        return {
            name: _NotHot(placement) if name in held else placement
            for name, placement in placements.items()
        }

    def set_rules(self, rules: RuleSet) -> None:
        self.rules = rules
        self._rules_version += 1

    def add_partition(self, partition: TableName, parent: TableName) -> None:
        self.rules.aliases[partition] = parent
        self._rules_version += 1

    def submit_batch(self, node: str, op: Operation, requests: bytes, count: int, txn: Txn) -> None:
        self.nodes.submit_batch(node, op, requests, count, txn)

    def count_changes(self, table: str, kind: str, count: int) -> None:
        self.telemetry.changes[(table, kind)] += count

    def acknowledged(self, commit_times: Iterable[float]) -> None:
        self.telemetry.observe_commit_latency(commit_times)

    def gap(self, reason: str, detail: str) -> None:
        self.telemetry.metrics.gaps.labels(reason).inc()
        self.log.error(
            "continuity lost: changes may have been missed", reason=reason, detail=detail
        )

    def answer_gap(self, policy: str, reason: str, txn: Txn) -> int:
        operations = gap_operations(self.rules, list(self.nodes.router.placements), policy, reason)
        self.nodes.submit(operations, txn)
        self.log.warning(
            "answering the gap before streaming",
            reason=reason,
            on_gap=policy,
            operations=[f"{op.op} {op.pool}{' ' + op.key if op.key else ''}" for op in operations],
        )
        return len(operations)

    def streaming(self, **context: Any) -> None:
        self.telemetry.streaming()
        self.log.info("streaming", **context)

    def on_change(self, change: Change, txn: Txn) -> None:
        """Plan ``change`` and queue its operations for ``txn``."""
        self.telemetry.changes[(change.qualified_table, change.kind)] += 1
        rules = self.rules
        if self.resolve_partition is not None and not rules.rules_for(change.schema, change.table):
            self.resolve_partition((change.schema, change.table))
        result = plan(change, rules)
        if self.recent is not None:
            self.recent.note(change)
        for skipped in result.skipped:
            self.skips.report(skipped)
        operations = result.operations
        if not operations:
            return
        if any(op.op == "refresh" and op.value is None for op in operations):
            operations = tuple(self._query_value(op, change) for op in operations)
        gate = self.gate
        if gate is None:
            self._send(operations, txn, change.kind)
            return
        direct, held = gate.split(operations)
        if held:
            gate.hold(held, txn)
        if direct:
            self._send(direct, txn, change.kind)

    def _send(
        self, operations: Iterable[Operation], txn: Txn | None, kind: str = "-"
    ) -> list[Routed]:
        """Queue ``operations`` on their nodes now, and schedule their re-deletes."""
        routed = self.nodes.submit(operations, txn)
        if self.trace:
            self._trace(routed, kind)
        compiled = self.rules.rules
        now = 0.0
        for item in routed:
            op = item.operation
            rule = compiled[op.rule] if op.rule < len(compiled) else None
            if rule is None:
                continue
            if rule.redelete and op.op == "delete":
                now = now or self.clock()
                self._schedule_redelete((op.pool, item.node, op.key), now + rule.redelete, op.table)
            elif op.op == "refresh" and rule.value_query is not None and txn is not None:
                now = now or self.clock()
                early = self.rechecks.sent(op, rule.value_query, now + recheck_delay(rule.redelete))
                if early:
                    self._send_rechecks(early)
        return routed

    def _send_rechecks(self, operations: list[Operation]) -> None:
        """Re-checked refreshes whose value changed (or whose row is gone): no transaction
        waits for them."""
        self.nodes.submit(operations, None)
        for op in operations:
            self.telemetry.op_results[(op.pool, "recheck", "rewritten")] += 1

    def _trace(self, routed: Iterable[Routed], kind: str) -> None:
        """A debug line per operation, ``TRACE_PER_SECOND`` at most."""
        now = self.clock()
        start, logged, dropped = self._trace_window
        if now - start >= 1.0:
            if dropped:
                self.log.debug(
                    "operation lines left out",
                    count=dropped,
                    limit=f"{TRACE_PER_SECOND} lines/s",
                )
            start, logged, dropped = now, 0, 0
        for item in routed:
            op = item.operation
            if logged >= TRACE_PER_SECOND:
                dropped += 1
                continue
            logged += 1
            self.log.debug(
                "operation",
                op=op.op,
                key=op.key,
                node=item.node,
                pool=op.pool,
                rule=op.rule,
                table=op.table,
                change=kind,
                lsn=op.lsn,
            )
        self._trace_window = (start, logged, dropped)

    def _query_value(self, op: Operation, change: Change) -> Operation:
        """Fill a query refresh's value; no row (or a failing query) becomes a delete."""
        query = self.rules.rules[op.rule].value_query
        if op.op != "refresh" or op.value is not None or query is None:
            return op
        value = None
        if self.values is not None:
            try:
                value = self.values.value(query, dict(change.new or {}))
            except SourceError as exc:
                self.telemetry.log.warning(
                    "refresh query failed; deleting instead",
                    rule=op.rule,
                    table=op.table,
                    error=str(exc),
                )
        if value is None:
            return replace(op, op="delete", value=None, ttl=None)
        self.rechecks.remember(op, dict(change.new or {}))
        return replace(op, value=value)

    # -- re-deletes -----------------------------------------------------------------------

    def _schedule_redelete(self, target: tuple[str, str, str], due: float, table: str) -> None:
        for pool, node, key in self.redeletes.schedule(target, due):
            self._send_redelete(pool, node, key, table)

    def _send_redelete(self, pool: str, node: str, key: str, table: str = "redelete") -> None:
        if self.nodes.redelete(node, Operation("delete", key, pool, table)):
            self.telemetry.op_results[(pool, "redelete", "sent")] += 1

    def tick(self, now: float) -> float | None:
        """Send the re-deletes and held operations that are due; returns when the next
        timer is (or None)."""
        due: float | None = None
        if self.gate is not None and self.gate.holds:
            self._release(now)
            due = self.gate.next_due()
        if self.rechecks:
            rewrites = self.rechecks.due(now)
            if rewrites:
                self._send_rechecks(rewrites)
            next_recheck = self.rechecks.next_due()
            if next_recheck is not None and (due is None or next_recheck < due):
                due = next_recheck
        if not self.redeletes:
            return due
        for pool, node, key in self.redeletes.pop_due(now):
            self._send_redelete(pool, node, key)
        next_redelete = self.redeletes.next_due()
        if due is None or (next_redelete is not None and next_redelete < due):
            return next_redelete
        return due

    def session_ended(self) -> None:
        """A source session ended: held work of transactions it never finished reading
        goes (the next session reads them again)."""
        if self.gate is not None:
            dropped = self.gate.holds.drop_open()
            if dropped:
                self.log.info("held work of unfinished transactions dropped", holds=dropped)

    def _release(self, now: float) -> None:
        """Send what the replicas have replayed (or waited too long for)."""
        assert self.gate is not None
        released = self.gate.release(now)
        results = self.telemetry.op_results
        for hold in (*released.on_time, *released.late):
            self._send(hold.operations, hold.txn)
            hold.txn.outstanding -= 1  # the hold's own unit (ReplicaHolds.hold)
        for hold in released.late:
            results[(hold.pool, "replica_late", "sent")] += len(hold.operations)
        if released.reapply:
            self._send(released.reapply, None)
            for op in released.reapply:
                results[(op.pool, "reapply", "sent")] += 1

    # -- results --------------------------------------------------------------------------

    def settled(self, entries: list[Entry]) -> None:
        """Count what memcached answered."""
        results = self.telemetry.op_results
        for entry in entries:
            op = entry.op
            if entry.batch:
                results[(op.pool, "delete", "ok")] += entry.deleted
                if entry.count > entry.deleted:
                    results[(op.pool, "delete", "not_found")] += entry.count - entry.deleted
            elif op is FLUSH_OP:
                results[("*", "flush_all", entry.outcome)] += 1
            else:
                results[(op.pool, op.op, entry.outcome or "ok")] += 1

    def report(self, skipped: SkippedKey) -> None:
        self.skips.report(skipped)


class _NotHot:
    """A placement the C hot path must leave to ``plan()`` (its pool's work is held)."""

    hot_mode: str | None = None

    def __init__(self, placement: Placement):
        self._placement = placement
        self.nodes = placement.nodes

    def owners(self, key: str) -> tuple[str, ...]:
        return self._placement.owners(key)
