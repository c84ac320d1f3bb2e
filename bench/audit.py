"""The staleness probe's cost: its own CPU and database queries per second, beside the daemon's.

One run, two phases of the same length under the same write load (pgbench UPDATEs of a
100,000-row ``users`` table whose rows are all cached as the app caches them):
  1. the daemon alone;
  2. the daemon plus the probe (``runtime.audit.AuditProbe``, the code ``audit:`` runs
     inside ``run``), here in this process so that its thread's own CPU
     (``time.thread_time``) and its queries are counted exactly; it audits two rules
     (``value.json`` and ``value.query``) back to back, bound by the default
     ``--rate`` (200 rows/s), the most the probe ever reads whatever ``every``/``sample``.
The default ``audit: {every: 10s, sample: 100}`` reads 100 rows per rule every 10 s: a
small fraction of phase 2's rows/s; its cost scales with rows/s. Figures only.
Usage: python bench/audit.py [--seconds 20] [--tps 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Bench,
    Pgbench,
    fmt_num,
    load,
    lsn_to_int,
    machine_lines,
    print_table,
    wait_confirmed,
    write_json,
)
from pymemcache.client.hash import HashClient

from invalidator.config import parse_config
from invalidator.config.build import compile_rules, static_router
from invalidator.runtime.audit import DEFAULT_RATE, Auditor, AuditProbe, NodeReads
from invalidator.runtime.metrics import Metrics
from invalidator.sources.rows import RowReader

ROWS = 100_000
SLOT = "audit_bench"
RULES: list[dict[str, Any]] = [
    {"table": "users", "keys": ["user:{id}"], "value": {"json": ["id", "email", "name"]}},
    {
        "table": "users",
        "keys": ["user_q:{id}"],
        "action": "refresh",
        "value": {"query": "SELECT id, email, name FROM users WHERE id = %(id)s"},
    },
]
UPDATE_SQL = (
    "\\set id random(1, {rows})\nUPDATE users SET name = md5(random()::text) WHERE id = :id;\n"
)


class _Log:
    def warning(self, *args: Any, **kwargs: Any) -> None:
        pass

    error = warning


class ProbeThread(threading.Thread):
    """AuditProbe rounds back to back in a thread of its own, its CPU measured from inside."""

    def __init__(self, probe: AuditProbe):
        super().__init__(name="audit-probe", daemon=True)
        self.probe = probe
        self.cpu = 0.0
        self.wall = 0.0
        self.rows = 0
        self.cached = 0
        self.stale = 0
        self.examples: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        start, wall = time.thread_time(), time.perf_counter()
        while not self.done.is_set():
            for tally in self.probe.round():
                self.rows += tally.rows
                self.cached += tally.cached
                self.stale += tally.stale
                self.examples += [
                    f"rule {tally.rule} {e.key}@{e.node}: cached {e.cached} expected {e.expected}"
                    for e in tally.examples
                ]
        self.cpu = time.thread_time() - start
        self.wall = time.perf_counter() - wall


def cache_all(servers: list[str], db: Any) -> None:
    client = HashClient(servers, use_pooling=False, no_delay=True, default_noreply=False)
    try:
        batch: dict[str, str] = {}
        for i, email, name in db.execute("SELECT id, email, name FROM users ORDER BY id"):
            value = json.dumps({"id": i, "email": email, "name": name})
            batch[f"user:{i}"] = value
            batch[f"user_q:{i}"] = value
            if len(batch) >= 5_000:
                client.set_many(batch, expire=3600)
                batch.clear()
        client.set_many(batch, expire=3600)
    finally:
        client.close()


def phase(
    bench: Bench, seconds: float, tps: int, name: str, probe: ProbeThread | None
) -> dict[str, float]:
    daemon = bench.daemon(SLOT, RULES, create_slot=True)
    daemon.stderr_path = bench.workdir / f"daemon-{name}.stderr"
    daemon.start()
    daemon.wait_ready()
    script = bench.workdir / "update.sql"
    script.write_text(UPDATE_SQL.format(rows=ROWS))
    load_run = Pgbench(bench, script, tps, seconds, name=name).start()
    cpu0 = daemon.cpu_seconds()
    t0 = time.perf_counter()
    queries0 = probe.probe.auditor.queries if probe else 0
    if probe is not None:
        probe.start()
    figures = load_run.wait()
    elapsed = time.perf_counter() - t0
    daemon_cpu = daemon.cpu_seconds() - cpu0
    # How far behind the daemon was when the load stopped: the time it took to confirm it.
    with bench.connect() as conn:
        end = lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchall()[0][0])
        stopped = time.perf_counter()
        caught_up = wait_confirmed(conn, SLOT, end, timeout=300, daemon=daemon)
    result = {
        "seconds": elapsed,
        "tps": figures.get("tps", 0.0),
        "daemon_cpu_per_s": daemon_cpu / elapsed,
        "catch_up_s": caught_up - stopped,
    }
    if probe is not None:
        probe.done.set()
        probe.join(30)
        # Over the probe's own running time (it finishes its round after the load ends).
        result.update(
            probe_cpu_per_s=probe.cpu / probe.wall,
            probe_rows_per_s=probe.rows / probe.wall,
            probe_queries_per_s=(probe.probe.auditor.queries - queries0) / probe.wall,
            probe_cached_per_s=probe.cached / probe.wall,
            probe_stale=probe.stale,
        )
    daemon.stop()
    daemon.report_stderr(limit=3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--tps", type=int, default=1000, help="pgbench UPDATEs per second")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    with Bench() as bench:
        machine = machine_lines(bench.cluster)
        for text in machine:
            print(text)
        db = bench.cluster
        db.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text)")
        db.execute(
            f"INSERT INTO users SELECT g, 'u' || g || '@example.com', 'user ' || g"
            f" FROM generate_series(1, {ROWS}) g"
        )
        db.execute("ANALYZE users")
        cache_all(bench.pool.servers, db)

        alone = phase(bench, args.seconds, args.tps, "alone", None)

        config = parse_config(
            {
                "source": {"dsn": db.dsn()},
                "pools": {"default": {"servers": bench.pool.servers}},
                "rules": RULES,
                "audit": {"every": "0.001s", "sample": 200, "rate": DEFAULT_RATE},
            },
            "bench",
        )
        placements = static_router(config).placements
        slot = RowReader(db.dsn())  # the daemon's applied position, as `run` knows it
        auditor = Auditor(
            config,
            lambda: placements,
            NodeReads({}),
            rate=DEFAULT_RATE,
            confirmed=lambda: slot.confirmed(SLOT),
        )
        probe = ProbeThread(AuditProbe(auditor, compile_rules(config).rules, Metrics(), _Log()))
        with_probe = phase(bench, args.seconds, args.tps, "probe", probe)
        auditor.close()
        slot.close()

        print()
        print_table(
            [
                "phase",
                "UPDATE tps",
                "daemon CPU s/s",
                "daemon catch-up s",
                "probe CPU s/s",
                "probe rows/s",
                "probe DB queries/s",
                "copies compared/s",
                "stale",
            ],
            [
                [
                    "daemon alone",
                    fmt_num(alone["tps"], 0),
                    fmt_num(alone["daemon_cpu_per_s"], 3),
                    fmt_num(alone["catch_up_s"], 2),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                ],
                [
                    "daemon + probe at --rate 200",
                    fmt_num(with_probe["tps"], 0),
                    fmt_num(with_probe["daemon_cpu_per_s"], 3),
                    fmt_num(with_probe["catch_up_s"], 2),
                    fmt_num(with_probe["probe_cpu_per_s"], 3),
                    fmt_num(with_probe["probe_rows_per_s"], 0),
                    fmt_num(with_probe["probe_queries_per_s"], 0),
                    fmt_num(with_probe["probe_cached_per_s"], 0),
                    str(with_probe["probe_stale"]),
                ],
            ],
        )
        for text in probe.examples:
            print("stale: " + text)
        ratio = with_probe["probe_cpu_per_s"] / max(alone["daemon_cpu_per_s"], 1e-9)
        print(
            f"probe CPU / daemon CPU (alone, same load) = {ratio:.2f}; the default"
            f" audit: {{every: 10s, sample: 100}} reads 10 rows/s per rule, i.e."
            f" {10 * len(RULES) / max(with_probe['probe_rows_per_s'], 1e-9):.2f}x these rows/s."
            f" Load average at the end (1/5/15 min): {load()}"
        )
        write_json(args.json, {"machine": machine, "alone": alone, "with_probe": with_probe})


if __name__ == "__main__":
    main()
