"""Commit -> key gone, measured from outside the daemon, idle and under pgbench load.

Each sample is what a cache-aside app sees: its pymemcache ``HashClient`` sets
``user:{id}``; a psycopg connection commits ``UPDATE users SET name = ... WHERE id = ...``
(autocommit: the commit has returned when ``execute`` returns); then the node that owns the
key is polled with ``pymemcache.client.base.Client(server, no_delay=True)`` (replies awaited,
TCP_NODELAY) until ``get`` returns None. The figure is commit-returned -> first ``get`` that
misses; its resolution is one memcached round trip up to 1 ms, then 2% (polls back off so
that a slow sample does not take a core away from the daemon; at most 2 ms apart).

Phases: ``--samples`` idle samples, then for each ``--rates`` value pgbench runs
single-row UPDATEs (``-c 4 -j 2 -R rate``) on ids 1..100,000 while the probe samples ids
above that range, spread over the load (``--load-seconds``; ``--lag-seconds`` for the
``--lag-rate`` phase). During every phase the server's slot lag
(pg_current_wal_lsn() - confirmed_flush_lsn) and the daemon's
invalidator_replication_lag_bytes are sampled every second.

Reference (unless ``--no-reference``): after each daemon phase the daemon is stopped and the
same load runs again while ``pg_recvlogical`` streams a second slot (same wal2json options)
to a pipe that this script reads, timestamping each chunk: the sample is commit returned ->
the changed row's line received. The daemon then restarts on its slot and catches up.
Figures only, never assertions.
With ``--tls`` the memcached nodes speak TLS only (``-Z``), the daemon's pool has ``tls`` and the
probe's clients use the test CA. ``--kind pgoutput`` runs the daemon on the pgoutput source
(the reference stays pg_recvlogical with wal2json).
Usage: python bench/latency.py [--samples 500] [--rates 5000,10000,20000] [--load-seconds 20]
       [--tls] [--kind wal2json|pgoutput]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import (
    Bench,
    BenchError,
    DaemonProcess,
    ForeignCpu,
    LagSampler,
    Pgbench,
    busy_percent,
    cpu_times,
    fmt_int,
    fmt_num,
    lag_summary,
    load,
    machine_lines,
    print_table,
    slot_lag,
    wait_confirmed,
    write_json,
)
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from invalidator.core.changes import lsn_to_int
from tests.services import clean_env
from tests.stats import latency_stats

SLOT = "latency"
REF_SLOT = "latency_ref"
RULES = [{"table": "users", "keys": ["user:{id}"]}]
RECV_OPTIONS = [  # the daemon's wal2json options (invalidator/sources/postgres.py)
    "format-version=2",
    "include-timestamp=1",
    "include-types=1",
    "include-lsn=1",
    "add-tables=public.users",
]
PGBENCH_ROWS = 100_000  # pgbench updates ids 1..this; the probe uses ids above
PROBE_ROWS = 2_000
PGBENCH_SCRIPT = f"\\set id random(1, {PGBENCH_ROWS})\nUPDATE users SET v = v + 1 WHERE id = :id;\n"
PROBE_TIMEOUT = 10.0
POLL_BACKOFF = 0.02  # past 1 ms the probe sleeps 2% of the elapsed time between polls
POLL_BACKOFF_MAX = 0.002


class Probe:
    """The cache-aside app (HashClient) plus one waiting, TCP_NODELAY client per node."""

    def __init__(
        self,
        servers: list[str],
        conn: psycopg.Connection[Any],
        poll_interval: float,
        tls_context: Any = None,
    ):
        self.app = HashClient(
            servers, no_delay=True, default_noreply=False, tls_context=tls_context
        )
        self.direct: dict[str, Client] = {}
        for server in servers:
            host, port = server.rsplit(":", 1)
            self.direct[server] = Client(
                (host, int(port)), no_delay=True, default_noreply=False, tls_context=tls_context
            )
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
            now = time.perf_counter()
            if now > deadline:
                return None
            # Back to back for the first millisecond; then a pause of 2% of the time so
            # far (at most 2 ms): the probe must not eat the CPU the daemon needs when
            # the latency is long, on a machine with two cores.
            elapsed = now - committed
            pause = min(POLL_BACKOFF_MAX, elapsed * POLL_BACKOFF) if elapsed > 0.001 else 0.0
            pause = max(pause, self.poll_interval)
            if pause:
                time.sleep(pause)
        return time.perf_counter() - committed

    def close(self) -> None:
        self.app.close()
        for client in self.direct.values():
            client.close()


class RecvReference:
    """``pg_recvlogical -f -`` on its own slot; a thread reads the pipe and timestamps a marker.

    ``sample`` commits an UPDATE whose new ``name`` is a unique marker and returns the
    seconds from commit returned until the chunk holding ``"<marker>"`` was read.
    """

    def __init__(self, bench: Bench, conn: psycopg.Connection[Any]):
        self.bench = bench
        self.conn = conn
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: threading.Thread | None = None
        self.want: bytes | None = None
        self.hit_at = 0.0
        self.hit = threading.Event()
        self.bytes_read = 0
        self.counter = 0
        self.stderr_path = bench.workdir / "pg_recvlogical.stderr"

    def start(self) -> None:
        cluster = self.bench.cluster
        cluster.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", [REF_SLOT])
        argv = [cluster.bin("pg_recvlogical"), "-d", cluster.dsn(), "--slot", REF_SLOT, "--start"]
        for option in RECV_OPTIONS:
            argv += ["-o", option]
        argv += ["--no-loop", "-f", "-"]
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
        self.bench.defer(self.stop)
        self.reader = threading.Thread(target=self._read, name="recv-reader", daemon=True)
        self.reader.start()
        deadline = time.perf_counter() + 10
        while not cluster.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [REF_SLOT]
        )[0][0]:
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise BenchError(
                    "pg_recvlogical did not start: " + self.stderr_path.read_text()[-500:]
                )
            time.sleep(0.02)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        tail = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            now = time.perf_counter()
            if not chunk:
                return
            self.bytes_read += len(chunk)
            want = self.want
            if want is not None and want in tail + chunk:
                self.want = None
                self.hit_at = now
                self.hit.set()
            tail = chunk[-64:]

    def sample(self, row_id: int) -> float | None:
        self.counter += 1
        marker = f"ref-{self.counter}"
        self.hit.clear()
        self.want = f'"{marker}"'.encode()
        self.conn.execute("UPDATE users SET name = %s WHERE id = %s", [marker, row_id])
        committed = time.perf_counter()
        if not self.hit.wait(PROBE_TIMEOUT):
            self.want = None
            return None
        return self.hit_at - committed

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        self.bench.cluster.drop_replication_slot(REF_SLOT)


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


def run_phase(
    sample: Callable[[int], float | None],
    ids: list[int],
    samples: int,
    spacing: float,
    deadline: float = float("inf"),
) -> tuple[list[float], int]:
    """Up to ``samples`` samples, one every ``spacing`` s, none started after ``deadline``."""
    latencies: list[float] = []
    timeouts = 0
    next_at = time.perf_counter()
    for i in range(samples):
        now = time.perf_counter()
        if next_at > now:
            time.sleep(next_at - now)
        if time.perf_counter() > deadline:
            break
        next_at += spacing
        result = sample(ids[i % len(ids)])
        if result is None:
            timeouts += 1
        else:
            latencies.append(result)
    return latencies, timeouts


class Run:
    """The state shared by the phases: services, the daemon (restarted), probe, watch."""

    def __init__(self, bench: Bench, args: argparse.Namespace, script: Path):
        self.bench = bench
        self.args = args
        self.script = script
        self.daemon: DaemonProcess | None = None
        self.daemons: list[DaemonProcess] = []
        self.probe_ids = list(range(PGBENCH_ROWS + 1, PGBENCH_ROWS + PROBE_ROWS + 1))
        self.conn = bench.connect()
        self.watch = bench.connect()
        bench.defer(self.conn.close)
        bench.defer(self.watch.close)
        tls = bench.tls.client_context() if bench.tls is not None else None
        self.probe = Probe(bench.pool.servers, self.conn, args.poll_us / 1000000.0, tls)
        bench.defer(self.probe.close)
        self.ready_times: list[float] = []
        self.others = ForeignCpu()  # other suites on the same cores, per phase
        self.others.start()
        bench.defer(self.others.stop)

    def start_daemon(self, create_slot: bool) -> float:
        source = {"kind": self.args.kind} if self.args.kind != "wal2json" else None
        daemon = self.bench.daemon(SLOT, RULES, create_slot=create_slot, source=source)
        daemon.stderr_path = self.bench.workdir / f"daemon-{SLOT}-{len(self.daemons) + 1}.stderr"
        self.daemons.append(daemon)
        self.daemon = daemon
        daemon.start()
        ready = daemon.wait_ready()
        self.ready_times.append(ready)
        return ready

    @property
    def current(self) -> DaemonProcess:
        if self.daemon is None:
            raise BenchError("daemon not started")
        return self.daemon

    def idle(self) -> dict[str, Any]:
        run_phase(self.probe.sample, self.probe_ids[-20:], 20, 0.0)  # warm up
        before = histogram(self.current)
        latencies, timeouts = run_phase(
            self.probe.sample, self.probe_ids, self.args.samples, self.args.gap_ms / 1000.0
        )
        after = histogram(self.current)
        _, lag = slot_lag(self.watch, SLOT)
        return {
            "rate": 0,
            **latency_stats(latencies, timeouts),
            "lag_daemon_end": self.current.metric("invalidator_replication_lag_bytes"),
            "lag_slot_end": lag,
            "daemon_c2a_ms": c2a(before, after),
        }

    def daemon_phase(self, rate: int) -> dict[str, Any]:
        args = self.args
        window = args.lag_seconds if rate == args.lag_rate else args.load_seconds
        warmup = min(2.0, window / 5)
        pgbench = Pgbench(self.bench, self.script, rate, warmup + window + 2, name=f"d{rate}")
        pgbench.start()
        time.sleep(warmup)
        lag = LagSampler(self.bench.connect, SLOT, self.current, window)
        before = histogram(self.current)
        lag.start()
        began = time.perf_counter()
        cpu_before = self.current.cpu_seconds()
        machine_before = cpu_times()
        self.others.take()
        latencies, timeouts = run_phase(
            self.probe.sample,
            self.probe_ids,
            args.samples,
            window / max(1, args.samples),
            deadline=began + window,
        )
        cpu_percent = (
            100 * (self.current.cpu_seconds() - cpu_before) / (time.perf_counter() - began)
        )
        machine_busy = busy_percent(machine_before, cpu_times())
        others = self.others.take_summary(time.perf_counter() - began)
        lag_daemon = self.current.metric("invalidator_replication_lag_bytes")
        _, lag_slot = slot_lag(self.watch, SLOT)
        lag.join(timeout=window + 10)
        lag.stop()
        stats = pgbench.wait()
        ended = time.perf_counter()
        end_lsn = lsn_to_int(self.bench.cluster.current_wal_lsn())
        done = wait_confirmed(self.watch, SLOT, end_lsn, timeout=120, daemon=self.current)
        after = histogram(self.current)
        return {
            "rate": rate,
            "pgbench": stats,
            **latency_stats(latencies, timeouts),
            "window_s": window,
            "lag_daemon_end": lag_daemon,
            "lag_slot_end": lag_slot,
            "catch_up_s": done - ended,
            "daemon_c2a_ms": c2a(before, after),
            "daemon_cpu_percent": cpu_percent,
            "machine_busy_percent": machine_busy,
            "others": others,
            "lag": lag_summary(lag.samples),
            "lag_error": lag.error,
        }

    def reference_phase(self, rate: int) -> dict[str, Any]:
        """Daemon stopped; pg_recvlogical's commit -> change received at the same load."""
        args = self.args
        self.current.stop()
        window = args.load_seconds
        warmup = min(2.0, window / 5)
        ref = RecvReference(self.bench, self.conn)
        ref.start()
        try:
            run_phase(ref.sample, self.probe_ids[-20:], 20, 0.0)  # warm up
            pgbench = Pgbench(self.bench, self.script, rate, warmup + window + 2, name=f"r{rate}")
            pgbench.start()
            time.sleep(warmup)
            began = time.perf_counter()
            machine_before = cpu_times()
            self.others.take()
            latencies, timeouts = run_phase(
                ref.sample,
                self.probe_ids,
                args.samples,
                window / max(1, args.samples),
                deadline=began + window,
            )
            machine_busy = busy_percent(machine_before, cpu_times())
            others = self.others.take_summary(time.perf_counter() - began)
            stats = pgbench.wait()
        finally:
            ref.stop()
        # The daemon resumes on its slot: time to /readyz and to catch up the backlog.
        backlog_end = lsn_to_int(self.bench.cluster.current_wal_lsn())
        ready = self.start_daemon(create_slot=False)
        done = wait_confirmed(self.watch, SLOT, backlog_end, timeout=300, daemon=self.current)
        return {
            "rate": rate,
            "pgbench": stats,
            **latency_stats(latencies, timeouts),
            "window_s": window,
            "bytes_read": ref.bytes_read,
            "machine_busy_percent": machine_busy,
            "others": others,
            "restart_ready_s": ready,
            "restart_catch_up_s": done - self.current.started_at,
        }


def c2a(before: dict[float, float], after: dict[float, float]) -> list[float]:
    return [bucket_quantile(before, after, 0.5) * 1000, bucket_quantile(before, after, 0.99) * 1000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500, help="probe samples per phase")
    parser.add_argument(
        "--rates", default="5000,10000,20000", help="pgbench -R rates, comma-separated"
    )
    parser.add_argument("--load-seconds", type=int, default=20, help="sampling window per rate")
    parser.add_argument("--lag-rate", type=int, default=20000, help="the rate whose lag is watched")
    parser.add_argument("--lag-seconds", type=int, default=60, help="sampling window at --lag-rate")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the pg_recvlogical phases"
    )
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between idle samples")
    parser.add_argument(
        "--poll-us",
        type=float,
        default=0.0,
        help="minimum sleep between polls (0: back to back for 1 ms)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--tls", action="store_true", help="memcached -Z nodes, pool tls (the probe too)"
    )
    parser.add_argument(
        "--kind",
        choices=["wal2json", "pgoutput"],
        default="wal2json",
        help="the daemon's source.kind (pgoutput: it creates its publication at start)",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    with Bench(tls=args.tls) as bench:
        cluster = bench.cluster
        machine = machine_lines(cluster)
        for text in machine:
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

        run = Run(bench, args, script)
        ready = run.start_daemon(create_slot=True)
        print(f"daemon ready (/readyz=200) {ready:.2f}s after process start")
        print()

        idle = run.idle()
        phases: list[dict[str, Any]] = []
        references: list[dict[str, Any]] = []
        for rate in rates:
            print(f"[{time.strftime('%H:%M:%S')}] daemon under pgbench -R {rate:,}", flush=True)
            phases.append(run.daemon_phase(rate))
            if not args.no_reference:
                print(
                    f"[{time.strftime('%H:%M:%S')}] pg_recvlogical under pgbench -R {rate:,}",
                    flush=True,
                )
                references.append(run.reference_phase(rate))
        print()

        rows = [phase_row("idle", idle)]
        by_rate = {ref["rate"]: ref for ref in references}
        for phase in phases:
            rows.append(phase_row(f"daemon, -R {phase['rate']:,}", phase))
            if phase["rate"] in by_rate:
                ref = by_rate[phase["rate"]]
                rows.append(phase_row(f"pg_recvlogical, -R {ref['rate']:,}", ref))
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
            "daemon rows: commit returned -> key gone, seen by the probe. pg_recvlogical rows:"
            " commit returned -> the row's line read from pg_recvlogical's stdout (the daemon"
            " stopped meanwhile). lag at end: the daemon's invalidator_replication_lag_bytes"
            " read after the phase's last sample (pgbench still running); slot lag:"
            " pg_current_wal_lsn() - confirmed_flush_lsn at the same moment; catch-up:"
            " pgbench exit -> slot confirmed the WAL end at that moment. daemon c2a: the"
            " daemon's own commit_to_ack_seconds histogram over the phase (bucket upper bounds;"
            " commit timestamps have PostgreSQL's clock)."
        )
        print()
        print_table(
            [
                "lag sampled every 1 s",
                "seconds",
                "first B",
                "last B",
                "max B",
                "slope B/s",
                "WAL B/s",
            ],
            [row for phase in phases for row in lag_rows(phase)],
        )
        for phase in phases:
            print(
                f"daemon CPU during the -R {phase['rate']:,} window:"
                f" {phase['daemon_cpu_percent']:.0f}% of one core; the machine was"
                f" {phase['machine_busy_percent']:.0f}% busy (all {nproc} cores);"
                f" {others_text(phase['others'])}"
            )
        for ref in references:
            print(
                f"pg_recvlogical phase at -R {ref['rate']:,}: the machine was"
                f" {ref['machine_busy_percent']:.0f}% busy (all {nproc} cores);"
                f" {others_text(ref['others'])}"
            )
        for ref in references:
            print(
                f"after pg_recvlogical at {ref['rate']:,}: daemon restarted, /readyz in"
                f" {ref['restart_ready_s']:.2f}s, caught up {ref['restart_catch_up_s']:.2f}s"
                " after process start"
            )
        code = run.current.stop()
        print(f"daemon exit code after SIGTERM: {code}")
        for daemon in run.daemons:
            daemon.report_stderr()
        print(f"load average at the end (1/5/15 min): {load()}")
        write_json(
            args.json,
            {
                "machine": machine,
                "nproc": nproc,
                "ready_s": run.ready_times,
                "idle": idle,
                "phases": phases,
                "reference": references,
                "exit_code": code,
                "load_end": load(),
            },
        )


def others_text(others: dict[str, Any]) -> str:
    top = ", ".join(f"{name} {cpu:.1f}" for name, cpu in others["top"] if cpu >= 0.05)
    return (
        f"other processes {others['other_cores']:.2f} cores"
        + (f" ({top} CPU-s)" if top else "")
        + f", PostgreSQL clusters running: {others['postmasters']}"
    )


def lag_rows(phase: dict[str, Any]) -> list[list[str]]:
    lag = phase["lag"]
    rows = []
    for which, label in (("slot", "server slot lag"), ("daemon", "daemon lag metric")):
        figures = lag[which]
        rows.append(
            [
                f"-R {phase['rate']:,}: {label}",
                fmt_num(lag["seconds"], 0),
                fmt_int(figures["first"]),
                fmt_int(figures["last"]),
                fmt_int(figures["max"]),
                fmt_int(figures["slope"]),
                fmt_int(lag["wal_bytes_per_s"]),
            ]
        )
    return rows


def phase_row(name: str, phase: dict[str, Any]) -> list[str]:
    stats = phase.get("pgbench", {})
    tps = fmt_int(stats["tps"]) if "tps" in stats else "-"
    if stats.get("failed"):
        tps += f" ({stats['failed']:.0f} failed)"
    c2a_ms = phase.get("daemon_c2a_ms")
    return [
        name,
        tps,
        fmt_int(phase["samples"]),
        fmt_int(phase["timeouts"]),
        fmt_num(phase["p50_ms"], 2),
        fmt_num(phase["p90_ms"], 2),
        fmt_num(phase["p99_ms"], 2),
        fmt_num(phase["max_ms"], 2),
        fmt_int(phase["lag_daemon_end"]) if "lag_daemon_end" in phase else "-",
        fmt_int(phase["lag_slot_end"]) if phase.get("lag_slot_end") is not None else "-",
        fmt_num(phase["catch_up_s"], 2) if "catch_up_s" in phase else "-",
        f"{c2a_ms[0]:g}/{c2a_ms[1]:g}" if c2a_ms else "-",
    ]


if __name__ == "__main__":
    main()
