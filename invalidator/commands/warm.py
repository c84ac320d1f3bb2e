"""``invalidator warm``: pre-populate keys from the ``warm:`` queries (the CronJob's job).

Rows are streamed with a server-side cursor and written in pipelined batches per node,
serialised exactly like ``action: refresh`` values (``json.dumps`` of the columns in
order), so apps read them back as if they had cached them themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from invalidator.config import NO_DSN, Config, WarmConfig
from invalidator.config.build import node_addresses, static_router
from invalidator.core.operations import Operation
from invalidator.core.rules import json_value
from invalidator.core.templates import Unbuildable, compile_template, key_problem
from invalidator.errors import SourceError
from invalidator.sinks.memcached.client import MemcachedSink
from invalidator.sinks.memcached.tls import node_connectors
from invalidator.sources.postgres import CONNECT_TIMEOUT, SESSION_OPTIONS, source_error

BATCH = 2_000
PROGRESS_EVERY = 5.0


@dataclass(slots=True)
class WarmResult:
    name: str
    rows: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0


def warm(
    config: Config, *, progress: Callable[[str], None], clock: Callable[[], float] = time.monotonic
) -> list[WarmResult]:
    """Run every ``warm:`` entry; returns what each did."""
    if config.source.dsn is None:
        raise SourceError(NO_DSN)
    sink = MemcachedSink(
        static_router(config), node_addresses(config), connectors=node_connectors(config)
    )
    results = []
    try:
        with psycopg.connect(
            config.source.dsn.get_secret_value(),
            connect_timeout=CONNECT_TIMEOUT,
            options=SESSION_OPTIONS,
        ) as conn:
            for i, entry in enumerate(config.warm):
                results.append(
                    _warm_one(conn, sink, entry, entry.name or f"warm[{i}]", progress, clock)
                )
    except psycopg.Error as exc:
        raise source_error("warm query failed", exc, config.source.dsn.get_secret_value()) from None
    finally:
        sink.close()
    return results


def _warm_one(
    conn: psycopg.Connection[Any],
    sink: MemcachedSink,
    entry: WarmConfig,
    name: str,
    progress: Callable[[str], None],
    clock: Callable[[], float],
) -> WarmResult:
    template = compile_template(entry.key)
    columns = entry.value.json_columns or ()
    result = WarmResult(name)
    started = last = clock()
    with conn.cursor(name=f"invalidator_warm_{id(entry)}", row_factory=dict_row) as cursor:
        cursor.execute(entry.query)
        while True:
            rows = cursor.fetchmany(BATCH)
            if not rows:
                break
            batch = []
            for row in rows:
                result.rows += 1
                key = template.render(row)
                if isinstance(key, Unbuildable) or key_problem(key) is not None:
                    result.skipped += 1
                    continue
                missing = [c for c in columns if c not in row]
                if missing:
                    raise SourceError(
                        f"{name}: value.json column {missing[0]!r} is not in the query's result"
                    )
                value = json_value(columns, row)
                batch.append(
                    Operation("refresh", key, entry.pool, name, None, value, entry.ttl or 0)
                )
            applied, failures = sink.apply(batch)
            written = sum(1 for a in applied if a.outcome == "ok")
            result.written += written
            result.failed += len(batch) - written
            for failure in failures:
                progress(f"{name}: {failure}")
            now = clock()
            if now - last >= PROGRESS_EVERY:
                last = now
                progress(
                    f"{name}: {result.rows:,} rows, {result.written:,} keys written, "
                    f"{result.rows / (now - started):,.0f} rows/s"
                )
    result.seconds = clock() - started
    return result
