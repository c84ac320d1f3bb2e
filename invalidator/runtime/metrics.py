"""The Prometheus metrics of SPEC (prefix ``invalidator_``), in a registry of their own."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# SPEC names exactly these series; the *_created twins would only add noise.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# A replica wait is bounded by replica_wait_max (default 30 s).
REPLICA_BUCKETS = (*LATENCY_BUCKETS, 30.0, 60.0)


class Metrics:
    """All metrics of one process; tests make their own instance."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "invalidator_"
        self.changes = Counter(
            p + "changes", "Row changes seen, by table and operation", ["table", "op"], registry=r
        )
        self.operations = Counter(
            p + "operations",
            "Cache operations applied, by result",
            ["pool", "op", "result"],
            registry=r,
        )
        self.commit_to_ack = Histogram(
            p + "commit_to_ack_seconds",
            "Commit timestamp to memcached acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replication_lag = Gauge(
            p + "replication_lag_bytes", "Server WAL end minus confirmed position", registry=r
        )
        self.confirmed_lsn = Gauge(
            p + "confirmed_lsn", "Last position confirmed to PostgreSQL (as a number)", registry=r
        )
        self.pending = Gauge(
            p + "pending_operations", "Operations sent but not acknowledged", ["node"], registry=r
        )
        self.memcached_errors = Counter(
            p + "memcached_errors", "memcached failures by node", ["node"], registry=r
        )
        self.unbuildable = Counter(
            p + "unbuildable_keys",
            "Keys a rule could not build or send, by table and rule",
            ["table", "rule"],
            registry=r,
        )
        self.up = Gauge(p + "up", "1 while the daemon is streaming", registry=r)
        self.gaps = Counter(
            p + "gaps",
            "Times continuity was lost (changes may have been missed), by reason",
            ["reason"],
            registry=r,
        )
        self.replica_lag = Gauge(
            p + "replica_lag_seconds",
            "How long the oldest commit a read replica has not replayed has waited (0: caught"
            " up); while it cannot be reached, how long since it last answered",
            ["replica"],
            registry=r,
        )
        self.replica_wait = Histogram(
            p + "replica_wait_seconds",
            "Commit timestamp to every replica of the pool having replayed it",
            buckets=REPLICA_BUCKETS,
            registry=r,
        )
        self.audit_checked = Counter(
            p + "audit_checked",
            "Cached copies the staleness probe compared with their row, by pool and rule",
            ["pool", "rule"],
            registry=r,
        )
        self.audit_stale = Counter(
            p + "audit_stale",
            "Cached copies the staleness probe found stale (still, when re-read), by pool and rule",
            ["pool", "rule"],
            registry=r,
        )
