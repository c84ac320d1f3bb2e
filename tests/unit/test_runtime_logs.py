"""What the daemon's log says: each operation at debug (rate-limited), a node's return at
info, and never a field without a value."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr
from types import SimpleNamespace

from invalidator.config import Config, parse_config
from invalidator.config.build import compile_rules
from invalidator.config.env import EnvOverrides
from invalidator.core.operations import Operation
from invalidator.core.routing import Routed
from invalidator.runtime.logs import configure, get_logger
from invalidator.runtime.pipeline import TRACE_PER_SECOND, Pipeline
from tests.fakes import A, B, C, Harness, RecordingLog, ids_on, updated, wait_until


def _debug_config() -> Config:
    return parse_config(
        {
            "pools": {"default": {"servers": [A, B, C]}},
            "rules": [{"table": "users", "keys": ["user:{id}"]}],
            "log": {"level": "debug"},
        },
        "test",
        EnvOverrides(),
    )


def test_at_debug_each_operation_is_logged_with_key_node_rule_and_lsn(harness: Harness) -> None:
    """log.level debug: one line per operation, naming where its key went and why."""
    daemon = harness.start(_debug_config())
    user = ids_on(A)[0]
    change = updated(user)
    harness.source.commit([change])
    wait_until(lambda: daemon.log.events("operation"), "the operation's debug line")
    (line,) = daemon.log.events("operation")
    assert line == {
        "op": "delete",
        "key": f"user:{user}",
        "node": A,
        "pool": "default",
        "rule": 0,
        "table": "public.users",
        "change": "update",
        "lsn": line["lsn"],
    }


def test_operation_lines_are_limited_per_second_with_a_count_of_the_rest() -> None:
    """More operations in a second than the limit: the limit's worth is logged, and the
    next second's first line counts those left out."""
    log = RecordingLog()
    now = [100.0]
    pipeline = Pipeline(
        compile_rules(_debug_config()),
        nodes=None,  # type: ignore[arg-type]
        telemetry=SimpleNamespace(log=log),  # type: ignore[arg-type]
        skips=None,  # type: ignore[arg-type]
        clock=lambda: now[0],
        trace=True,
    )
    change = updated(1)
    routed = [
        Routed(Operation("delete", f"user:{i}", "default", "public.users"), A) for i in range(250)
    ]
    pipeline._trace(routed, change)
    assert len(log.events("operation")) == TRACE_PER_SECOND
    now[0] += 1.0
    pipeline._trace(routed[:1], change)
    assert log.events("operation lines left out") == [
        {"count": 250 - TRACE_PER_SECOND, "limit": f"{TRACE_PER_SECOND} lines/s"}
    ]
    assert len(log.events("operation")) == TRACE_PER_SECOND + 1


def test_a_node_that_answers_again_is_logged_back_at_info(harness: Harness) -> None:
    """After failures, the first answer logs `memcached node back` once, at info."""
    source, nodes = harness.source, harness.memcached
    nodes[A].fail()
    daemon = harness.start(_debug_config())
    source.commit([updated(ids_on(A)[0])])
    wait_until(lambda: nodes[A].refused >= 2, "two refused connection attempts")
    nodes[A].start()
    wait_until(lambda: daemon.log.events("memcached node back"), "the node's return")
    back = [(level, f) for level, e, f in daemon.log.records if e == "memcached node back"]
    assert [(level, f["node"]) for level, f in back] == [("info", A)]
    assert back[0][1]["detail"].startswith("answering again after ")


def test_fields_without_a_value_are_left_out_of_log_lines() -> None:
    """`suppressed=None` and the like never reach the output."""
    out = io.StringIO()
    with redirect_stderr(out):
        configure("json", "info")
        get_logger().info("replay done", changes=3, applied=None, node_errors=None)
    record = json.loads(out.getvalue())
    assert {k: record[k] for k in record if k not in ("timestamp", "level")} == {
        "event": "replay done",
        "changes": 3,
    }
