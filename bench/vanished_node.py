"""A node whose name stops resolving (a StatefulSet pod being rescheduled) must hold up
only its own keys: commit -> key gone for the *other* nodes' keys, side by side.

Two runs on one machine, same load (pgbench single-row UPDATEs at ``--rate`` over ids
1..100,000) and the same probe (latency.py's: the app sets ``user:{id}``, commits an UPDATE,
polls the owning node until the key is gone), on ids whose owner is one of the three
healthy nodes:

- ``4 nodes``: the pool lists four real memcached nodes;
- ``1 unresolvable``: the fourth is ``memcached-3.memcached.invalid:11211``, a name that
  never resolves (RFC 2606). Its operations queue (then overflow into one flush_all on
  return); the resolver retries off the loop.

Figures only. Usage: python bench/vanished_node.py [--rate 2000] [--samples 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _common import Bench, Pgbench, fmt_num, print_table, write_json
from latency import PGBENCH_ROWS, PGBENCH_SCRIPT, RULES, Probe

from invalidator.core.placement import Rendezvous
from tests.stats import latency_stats

VANISHED = "memcached-3.memcached.invalid:11211"


def run(bench: Bench, name: str, servers: list[str], args: argparse.Namespace) -> dict[str, Any]:
    slot = name.replace(" ", "_")
    daemon = bench.daemon(slot, RULES, servers=servers)
    daemon.start()
    daemon.wait_ready()
    healthy = servers[:3]
    placement = Rendezvous(servers)
    ids = [
        i
        for i in range(PGBENCH_ROWS + 1, PGBENCH_ROWS + 20_000)
        if placement.owner(f"user:{i}") in healthy
    ][: args.samples]
    script = bench.workdir / "pgbench.sql"
    script.write_text(PGBENCH_SCRIPT)
    load = Pgbench(bench, script, args.rate, args.samples * 0.02 + 10, name=slot).start()
    time.sleep(2)
    samples: list[float] = []
    timeouts = 0
    with psycopg.connect(bench.cluster.dsn(), autocommit=True) as conn:
        probe = Probe(healthy, conn, 0.0)
        try:
            for row_id in ids:
                took = probe.sample(row_id)
                if took is None:
                    timeouts += 1
                else:
                    samples.append(took)
                time.sleep(0.02)
        finally:
            probe.close()
    load.kill()
    queued = daemon.metric("invalidator_pending_operations", node=VANISHED)
    errors = daemon.metric("invalidator_memcached_errors_total", node=VANISHED)
    daemon.stop()
    bench.cluster.drop_replication_slot(slot)
    return {
        "mode": name,
        "latency": latency_stats(samples, timeouts),
        "vanished_pending": queued,
        "vanished_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="pgbench UPDATEs per second")
    parser.add_argument("--samples", type=int, default=300, help="probe samples per run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    results = []
    with Bench(memcached_nodes=4) as bench:
        bench.cluster.execute("CREATE TABLE users (id int PRIMARY KEY, name text, v int)")
        bench.cluster.execute(
            f"INSERT INTO users SELECT g, 'n', 0 FROM generate_series(1, {PGBENCH_ROWS + 20_000}) g"
        )
        real = list(bench.pool.servers)
        results.append(run(bench, "4 nodes", real, args))
        results.append(run(bench, "1 unresolvable", [*real[:3], VANISHED], args))
    print(f"\npgbench {args.rate} UPDATEs/s; probe keys owned by the 3 healthy nodes\n")
    rows = []
    base = results[0]["latency"]
    for r in results:
        lat = r["latency"]
        rows.append(
            [
                r["mode"],
                fmt_num(lat["p50_ms"]),
                fmt_num(lat["p99_ms"]),
                f"{lat['p99_ms'] / base['p99_ms']:.2f}x",
                str(lat["timeouts"]),
                fmt_num(r["vanished_pending"], 0),
            ]
        )
    print_table(
        ["pool", "p50 ms", "p99 ms", "p99 vs 4 nodes", "timeouts", "queued for the 4th"], rows
    )
    write_json(args.json, {"rate": args.rate, "runs": results})


if __name__ == "__main__":
    main()
