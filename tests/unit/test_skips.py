"""Skipped keys: every one counted, logged without flooding the daemon's log."""

from __future__ import annotations

from structlog.testing import capture_logs

from invalidator.core.operations import SkippedKey
from invalidator.runtime.logs import get_logger
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.skips import SkipReporter


def skip(reason: str, kind: str = "invalid") -> SkippedKey:
    return SkippedKey(0, "public.users", "user_by_email:{email}", reason, None, kind)


def counted(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "invalidator_unbuildable_keys_total", {"table": "public.users", "rule": "0"}
    )
    return value or 0.0


def test_every_skip_is_counted_but_logged_once_per_period_and_kind() -> None:
    """Thousands of invalid keys with different values: all counted, one log line."""
    metrics, now = Metrics(), [100.0]
    reporter = SkipReporter(metrics, get_logger(), every=60.0, clock=lambda: now[0])
    with capture_logs() as logs:
        for i in range(1000):
            reporter.report(skip(f"key contains whitespace: 'user_by_email:a {i}'"))
        reporter.report(skip("column email is null in the new row", "null"))
        now[0] += 61
        reporter.report(skip("key contains whitespace: 'user_by_email:b c'"))
    assert counted(metrics) == 1002
    assert [entry["reason"] for entry in logs] == [
        "key contains whitespace: 'user_by_email:a 0'",
        "column email is null in the new row",
        "key contains whitespace: 'user_by_email:b c'",
    ]


def test_without_a_period_every_skip_is_logged() -> None:
    """replay logs each key with rule, table, template and reason."""
    reporter = SkipReporter(Metrics(), get_logger())
    with capture_logs() as logs:
        reporter.report(skip("a"))
        reporter.report(skip("b"))
    assert [(e["rule"], e["table"], e["template"], e["reason"]) for e in logs] == [
        (0, "public.users", "user_by_email:{email}", "a"),
        (0, "public.users", "user_by_email:{email}", "b"),
    ]
