"""``invalidator replay``: captured changes in, planned (or applied) cache operations out.

A file is wal2json output (format-version 2 lines or version 1 documents) or a pgoutput
capture (``<LSN> <hex>`` per message, see ``sources/pgoutput.py``), told apart by its
first line. Never touches PostgreSQL: a rules file and a capture are all it needs.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from invalidator.config import Config
from invalidator.config.build import compile_rules, node_addresses, static_router
from invalidator.core.changes import Change, Event
from invalidator.core.operations import Operation
from invalidator.core.rules import plan
from invalidator.errors import ConfigError
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.skips import SkipReporter
from invalidator.sinks.memcached.client import MemcachedSink
from invalidator.sinks.memcached.tls import node_connectors
from invalidator.sources.pgoutput import is_capture_line, read_capture
from invalidator.sources.wal2json import read_stream

APPLY_BATCH = 10_000


@dataclass(slots=True)
class ReplaySummary:
    changes: int = 0
    operations: int = 0
    skipped: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    node_errors: list[str] = field(default_factory=list)


def operation_record(op: Operation, node: str | None) -> dict[str, Any]:
    """The JSON object SPEC prints for one planned operation."""
    record: dict[str, Any] = {
        "op": op.op,
        "key": op.key,
        "pool": op.pool,
        "node": node,
        "table": op.table,
        "lsn": op.lsn,
    }
    if op.op == "refresh":
        # null for a `value: {query}` refresh: replay never connects to run it.
        record["value"] = op.value.decode("utf-8", "replace") if op.value is not None else None
        record["ttl"] = op.ttl
    return record


def read_events(lines: Iterable[str], source: str) -> Iterator[Event]:
    """The events of one file, wal2json or pgoutput capture as its first line says."""
    lines = iter(lines)
    blank = 0
    for first in lines:
        if first.strip():
            break
        blank += 1
    else:
        return
    # The blank lines go back in front, so errors keep their line numbers.
    whole = itertools.chain([""] * blank, [first], lines)
    if is_capture_line(first):
        yield from read_capture(whole, source)
    else:
        yield from read_stream(whole, source)


@contextmanager
def _open(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
        return
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        yield handle


def replay(
    config: Config,
    paths: Sequence[str],
    *,
    apply: bool,
    out: IO[str],
    log: Any,
    metrics: Metrics | None = None,
) -> ReplaySummary:
    """Decode ``paths`` in order, print each planned operation, optionally apply them."""
    metrics = metrics or Metrics()
    rules = compile_rules(config)
    router = static_router(config)
    for rule in rules.rules:
        if rule.pool not in router.placements:
            raise ConfigError(
                f"pool {rule.pool!r} uses 'discover': replay needs 'servers' "
                "(or INVALIDATOR_MEMCACHED_SERVERS)"
            )
    skips = SkipReporter(metrics, log)
    sink = (
        MemcachedSink(router, node_addresses(config), connectors=node_connectors(config))
        if apply
        else None
    )
    summary = ReplaySummary()
    pending: list[Operation] = []

    def flush() -> None:
        if sink is None or not pending:
            return
        applied, failures = sink.apply(pending)
        pending.clear()
        for item in applied:
            summary.applied[item.outcome] = summary.applied.get(item.outcome, 0) + 1
            metrics.operations.labels(item.operation.pool, item.operation.op, item.outcome).inc()
        for failure in failures:
            metrics.memcached_errors.labels(failure.node).inc()
            summary.node_errors.append(str(failure))
            log.error("memcached node failed", node=failure.node, reason=failure.reason)

    write = out.write
    try:
        for path in paths:
            with _open(path) as handle:
                for event in read_events(handle, "<stdin>" if path == "-" else path):
                    if not isinstance(event, Change):
                        continue
                    summary.changes += 1
                    metrics.changes.labels(event.qualified_table, event.kind).inc()
                    result = plan(event, rules)
                    for skipped in result.skipped:
                        summary.skipped += 1
                        skips.report(skipped)
                    for routed in router.route(result.operations):
                        summary.operations += 1
                        write(
                            orjson.dumps(operation_record(routed.operation, routed.node)).decode()
                            + "\n"
                        )
                    if sink is not None:
                        pending.extend(result.operations)
                        if len(pending) >= APPLY_BATCH:
                            flush()
        flush()
    finally:
        if sink is not None:
            sink.close()
    return summary
