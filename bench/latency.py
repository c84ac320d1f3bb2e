"""Commit -> key gone, measured from outside the daemon, idle and under pgbench load.

Each sample is what a cache-aside app sees: its pymemcache ``HashClient`` sets
``user:{id}``; a psycopg connection commits ``UPDATE users SET name = ... WHERE id = ...``
(autocommit: the commit has returned when ``execute`` returns); then the node that owns the
key is polled with ``pymemcache.client.base.Client(server, no_delay=True)`` (replies awaited,
TCP_NODELAY) until ``get`` returns None. The figure is commit-returned -> first ``get`` that
misses; its resolution is one memcached round trip.

Phases: ``--samples`` idle samples, then for each ``--rates`` value pgbench runs
single-row UPDATEs (``-c 4 -j 2 -R rate -T --load-seconds``) on ids 1..100,000 while the
probe samples ids above that range, spread over the load. Figures only, never assertions.
Usage: python bench/latency.py [--samples 500] [--rates 1000,5000] [--load-seconds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import (
    Bench,
    BenchError,
    DaemonProcess,
    client_env,
    fmt_int,
    fmt_num,
    load,
    lsn_to_int,
    machine_lines,
    percentile,
    print_table,
    wait_confirmed,
)
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

SLOT = "latency"
RULES = [{"table": "users", "keys": ["user:{id}"]}]
PGBENCH_ROWS = 100_000  # pgbench updates ids 1..this; the probe uses ids above
PROBE_ROWS = 2_000
PGBENCH_SCRIPT = f"\\set id random(1, {PGBENCH_ROWS})\nUPDATE users SET v = v + 1 WHERE id = :id;\n"
PROBE_TIMEOUT = 10.0


class Probe:
    """The cache-aside app (HashClient) plus one waiting, TCP_NODELAY client per node."""

    def __init__(self, servers: list[str], conn: psycopg.Connection[Any], poll_interval: float):
        self.app = HashClient(servers, no_delay=True, default_noreply=False)
        self.direct: dict[str, Client] = {}
        for server in servers:
            host, port = server.rsplit(":", 1)
            self.direct[server] = Client((host, int(port)), no_delay=True, default_noreply=False)
        self.conn = conn
        self.poll_interval = poll_interval
        self.counter = 0

    def sample(self, row_id: int) -> float | None:
        """Seconds from commit returned to the key gone; None after PROBE_TIMEOUT."""
        key = f"user:{row_id}"
        self.counter += 1
        if not self.app.set(key, b"cached", noreply=False):
            raise BenchError(f"HashClient could not set {key}")
        node = self.app.hasher.get_node(key)
        client = self.direct[node]
        self.conn.execute(
            "UPDATE users SET name = %s WHERE id = %s", [f"name-{self.counter}", row_id]
        )
        committed = time.perf_counter()
        deadline = committed + PROBE_TIMEOUT
        while client.get(key) is not None:
            if time.perf_counter() > deadline:
                return None
            if self.poll_interval:
                time.sleep(self.poll_interval)
        return time.perf_counter() - committed

    def close(self) -> None:
        self.app.close()
        for client in self.direct.values():
            client.close()


def histogram(daemon: DaemonProcess) -> dict[float, float]:
    """The daemon's commit_to_ack_seconds buckets: upper bound -> cumulative count."""
    buckets: dict[float, float] = {}
    for name, labels, value in daemon.metrics():
        if name == "invalidator_commit_to_ack_seconds_bucket":
            buckets[float(labels["le"])] = value
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding quantile q of the observations between two reads."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= q * total:
            return bound
    return float("inf")


def parse_pgbench(text: str) -> dict[str, str]:
    found = {}
    for name, pattern in (
        ("tps", r"^tps = ([\d.]+)"),
        ("processed", r"number of transactions actually processed: (\d+)"),
        ("latency", r"latency average = ([\d.]+) ms"),
        ("schedule_lag", r"rate limit schedule lag: avg ([\d.]+)"),
        ("failed", r"number of failed transactions: (\d+)"),
    ):
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            found[name] = match.group(1)
    return found


def run_phase(
    probe: Probe,
    ids: list[int],
    samples: int,
    spacing: float,
) -> tuple[list[float], int]:
    """``samples`` probe samples, one every ``spacing`` seconds (at least back to back)."""
    latencies: list[float] = []
    timeouts = 0
    next_at = time.perf_counter()
    for i in range(samples):
        now = time.perf_counter()
        if next_at > now:
            time.sleep(next_at - now)
        next_at += spacing
        result = probe.sample(ids[i % len(ids)])
        if result is None:
            timeouts += 1
        else:
            latencies.append(result)
    return latencies, timeouts


def slot_lag(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        [SLOT],
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="probe samples per phase")
    parser.add_argument("--rates", default="1000,5000", help="pgbench -R rates, comma-separated")
    parser.add_argument("--load-seconds", type=int, default=20, help="pgbench -T per rate")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between idle samples")
    parser.add_argument(
        "--poll-us", type=float, default=0.0, help="sleep between polls (0: back to back)"
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    with Bench() as bench:
        cluster = bench.cluster
        for text in machine_lines(cluster):
            print(text)
        nproc = len(os.sched_getaffinity(0))
        print(
            f"note: {nproc} cores shared by pgbench, PostgreSQL, 3 memcached, the daemon and the"
            " probe (which polls back to back): figures under load include CPU contention"
        )
        cluster.execute("CREATE TABLE users (id int PRIMARY KEY, name text, v int)")
        cluster.execute(
            "INSERT INTO users SELECT g, 'name-' || g, 0 FROM generate_series(1, %s) g",
            [PGBENCH_ROWS + PROBE_ROWS],
        )
        cluster.execute("VACUUM ANALYZE users")
        script = bench.workdir / "update.sql"
        script.write_text(PGBENCH_SCRIPT)

        daemon = bench.daemon(SLOT, RULES)
        daemon.start()
        ready = daemon.wait_ready()
        print(f"daemon ready (/readyz=200) {ready:.2f}s after process start")
        print()

        rows: list[list[str]] = []
        with bench.connect() as conn, bench.connect() as watch:
            probe = Probe(bench.pool.servers, conn, args.poll_us / 1e6)
            bench.defer(probe.close)
            probe_ids = list(range(PGBENCH_ROWS + 1, PGBENCH_ROWS + PROBE_ROWS + 1))
            run_phase(probe, probe_ids[-20:], 20, 0.0)  # warm connections and caches

            before = histogram(daemon)
            latencies, timeouts = run_phase(probe, probe_ids, args.samples, args.gap_ms / 1000.0)
            after = histogram(daemon)
            rows.append(
                phase_row(
                    "idle",
                    "-",
                    latencies,
                    timeouts,
                    daemon.metric("invalidator_replication_lag_bytes"),
                    slot_lag(watch),
                    "-",
                    (bucket_quantile(before, after, 0.5), bucket_quantile(before, after, 0.99)),
                )
            )

            for rate in rates:
                rows.append(load_phase(bench, daemon, probe, watch, script, rate, probe_ids, args))

        print_table(
            [
                "phase",
                "pgbench tps",
                "samples",
                "timeouts",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "lag at end B (daemon)",
                "slot lag B (server)",
                "catch-up s",
                "daemon c2a p50/p99 ms",
            ],
            rows,
        )
        print()
        print(
            "p50..max: commit returned -> key gone, seen by the probe. lag at end: the daemon's"
            " invalidator_replication_lag_bytes read after the phase's last sample (pgbench"
            " still running); slot lag: pg_current_wal_lsn() - confirmed_flush_lsn at the same"
            " moment; catch-up: pgbench exit -> slot confirmed the WAL end at that moment."
            " daemon c2a: the daemon's own commit_to_ack_seconds histogram over the phase"
            " (bucket upper bounds; commit timestamps have PostgreSQL's clock)."
        )
        code = daemon.stop()
        print(f"daemon exit code after SIGTERM: {code}")
        daemon.report_stderr()
        print(f"load average at the end (1/5/15 min): {load()}")


def load_phase(
    bench: Bench,
    daemon: DaemonProcess,
    probe: Probe,
    watch: psycopg.Connection[Any],
    script: Path,
    rate: int,
    probe_ids: list[int],
    args: argparse.Namespace,
) -> list[str]:
    cluster = bench.cluster
    argv = [cluster.bin("pgbench"), "-h", cluster.host, "-p", str(cluster.port), "-U", "postgres"]
    argv += ["-n", "-f", str(script), "-c", "4", "-j", "2", "-R", str(rate)]
    argv += ["-T", str(args.load_seconds), "postgres"]
    out_path = bench.workdir / f"pgbench-{rate}.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            argv, env=client_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, text=True
        )
        bench.defer(lambda: kill_if_running(proc))
        started = time.perf_counter()
        warmup = min(2.0, args.load_seconds / 5)
        window = max(0.0, args.load_seconds - warmup - 1.5)
        time.sleep(warmup)
        before = histogram(daemon)
        latencies, timeouts = run_phase(
            probe, probe_ids, args.samples, window / max(1, args.samples)
        )
        lag_daemon = daemon.metric("invalidator_replication_lag_bytes")
        lag_slot = slot_lag(watch)
        if time.perf_counter() - started > args.load_seconds:
            print(f"note: the {rate} tps phase's samples outlasted pgbench -T {args.load_seconds}")
        try:
            proc.wait(timeout=args.load_seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError(f"pgbench at {rate} tps did not finish") from None
    ended = time.perf_counter()
    end_lsn = lsn_to_int(cluster.current_wal_lsn())
    done = wait_confirmed(watch, SLOT, end_lsn, timeout=120, daemon=daemon)
    after = histogram(daemon)
    output = out_path.read_text()
    if proc.returncode != 0:
        raise BenchError(f"pgbench exited with {proc.returncode}:\n{output[-2000:]}")
    stats = parse_pgbench(output)
    tps = f"{float(stats['tps']):,.0f}" if "tps" in stats else "?"
    if stats.get("failed", "0") != "0":
        tps += f" ({stats['failed']} failed)"
    return phase_row(
        f"pgbench -R {rate:,}",
        tps,
        latencies,
        timeouts,
        lag_daemon,
        lag_slot,
        fmt_num(done - ended, 2),
        (bucket_quantile(before, after, 0.5), bucket_quantile(before, after, 0.99)),
    )


def kill_if_running(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()


def phase_row(
    name: str,
    tps: str,
    latencies: list[float],
    timeouts: int,
    lag_daemon: float,
    lag_slot: int,
    catch_up: str,
    c2a: tuple[float, float],
) -> list[str]:
    def ms(value: float) -> str:
        return fmt_num(value * 1000, 2)

    return [
        name,
        tps,
        fmt_int(len(latencies) + timeouts),
        fmt_int(timeouts),
        ms(percentile(latencies, 50)),
        ms(percentile(latencies, 90)),
        ms(percentile(latencies, 99)),
        ms(max(latencies, default=float("nan"))),
        fmt_int(lag_daemon),
        fmt_int(lag_slot),
        catch_up,
        f"{c2a[0] * 1000:g}/{c2a[1] * 1000:g}",
    ]


if __name__ == "__main__":
    main()
