"""Small statistics for measured samples, shared by tests, bench/ and scripts/demo.py."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["latency_stats", "percentile", "slope"]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values`` (need not be sorted);
    nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x for (x, y) points; nan with fewer than 2 distinct x."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def latency_stats(latencies: Sequence[float], timeouts: int = 0) -> dict[str, float | int]:
    """p50/p90/p99/max in ms of seconds-valued samples; a timeout counts as +inf."""
    values = list(latencies) + [float("inf")] * timeouts
    return {
        "samples": len(values),
        "timeouts": timeouts,
        "p50_ms": percentile(values, 50) * 1000,
        "p90_ms": percentile(values, 90) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": max(values, default=float("nan")) * 1000,
    }
