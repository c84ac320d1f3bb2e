"""Memory and correctness for one huge transaction, with the daemon already streaming.

``UPDATE big SET v = v + 1`` over ``--rows`` rows (default 1,000,000; REPLICA IDENTITY
DEFAULT, rule ``big:{id}``) commits as one transaction. The daemon's VmRSS is sampled every
100 ms from before the UPDATE until its slot's ``confirmed_flush_lsn`` passes the commit;
the daemon promises never to hold such a transaction in memory. Before the UPDATE,
``--sample`` random ``big:{id}`` keys are set through pymemcache's HashClient; afterwards
every one of them must be gone. Figures only, never assertions on timings.
Usage: python bench/big_transaction.py [--rows 1000000] [--sample 10000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Bench,
    RssSampler,
    fmt_breakdown,
    fmt_int,
    fmt_num,
    load,
    machine_lines,
    print_table,
    slot_confirmed,
    wait_confirmed,
    write_json,
)
from pymemcache.client.hash import HashClient

from invalidator.core.changes import int_to_lsn, lsn_to_int

SLOT = "big_txn"
RULES = [{"table": "big", "keys": ["big:{id}"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=10_000, help="keys set and checked")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    with Bench() as bench:
        cluster = bench.cluster
        machine = machine_lines(cluster)
        for text in machine:
            print(text)
        t0 = time.perf_counter()
        cluster.execute("CREATE TABLE big (id int PRIMARY KEY, v int)")
        cluster.execute("INSERT INTO big SELECT g, 0 FROM generate_series(1, %s) g", [args.rows])
        cluster.execute("VACUUM ANALYZE big")
        cluster.execute("CHECKPOINT")
        print(f"table big: {args.rows:,} rows loaded in {time.perf_counter() - t0:.1f}s")

        daemon = bench.daemon(SLOT, RULES)
        daemon.start()
        ready = daemon.wait_ready()
        print(f"daemon ready (/readyz=200) {ready:.2f}s after process start")

        app = HashClient(bench.pool.servers, no_delay=True, default_noreply=False)
        bench.defer(app.close)
        ids = random.Random(42).sample(range(1, args.rows + 1), min(args.sample, args.rows))
        keys = [f"big:{i}" for i in ids]
        for start in range(0, len(keys), 1000):
            app.set_many({k: b"cached" for k in keys[start : start + 1000]}, noreply=False)
        present_before = len(app.get_many(keys))

        time.sleep(0.5)  # settle: baseline after start-up
        sampler = RssSampler(daemon)
        sampler.start()
        time.sleep(0.5)
        baseline_kb = daemon.memory_kb()["VmRSS"]
        cpu_before = daemon.cpu_seconds()

        with bench.connect() as conn:
            update_start = time.perf_counter()
            cur = conn.execute("UPDATE big SET v = v + 1")
            committed = time.perf_counter()
            updated = cur.rowcount
            end_lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert end_lsn is not None
            end = lsn_to_int(end_lsn[0])
            done = wait_confirmed(conn, SLOT, end, timeout=args.timeout, daemon=daemon)
            confirmed = slot_confirmed(conn, SLOT)
        sampler.stop()
        cpu = daemon.cpu_seconds() - cpu_before
        mem = daemon.memory_kb()
        time.sleep(0.3)  # the counters are published with each status update
        deletes = daemon.breakdown("invalidator_operations_total", "result", op="delete")
        seen = daemon.metric("invalidator_changes_total")
        errors = daemon.metric("invalidator_memcached_errors_total")
        left = len(app.get_many(keys))
        time.sleep(2.0)
        rss_later = daemon.memory_kb()["VmRSS"]
        code = daemon.stop()

        samples = sampler.samples
        peak_rss = max((s[1] for s in samples), default=0)
        print()
        print_table(
            ["figure", "value"],
            [
                ["rows updated in one transaction", fmt_int(updated)],
                ["UPDATE statement (incl. commit) s", fmt_num(committed - update_start, 2)],
                ["commit -> slot confirmed past the commit s", fmt_num(done - committed, 2)],
                ["  changes/s over that time", fmt_int(updated / (done - committed))],
                ["baseline RSS before the UPDATE MB", fmt_num(baseline_kb / 1024, 1)],
                ["peak RSS (VmHWM, whole process life) MB", fmt_num(mem["VmHWM"] / 1024, 1)],
                ["peak sampled VmRSS MB", fmt_num(peak_rss / 1024, 1)],
                ["RSS when confirmed MB", fmt_num(mem["VmRSS"] / 1024, 1)],
                ["RSS 2 s later MB", fmt_num(rss_later / 1024, 1)],
                ["RSS samples (every 100 ms)", fmt_int(len(samples))],
                ["daemon CPU s for the transaction", fmt_num(cpu, 2)],
                ["changes counted by the daemon", fmt_int(seen)],
                ["deletes acknowledged (operations_total)", fmt_int(sum(deletes.values()))],
                ["  by result", fmt_breakdown(deletes)],
                ["memcached errors", fmt_int(errors)],
                ["sample keys set / present before UPDATE", f"{len(keys):,} / {present_before:,}"],
                ["sample keys left after (should be 0)", fmt_int(left)],
                ["daemon exit code after SIGTERM", str(code)],
            ],
        )
        write_json(
            args.json,
            {
                "machine": machine,
                "rows": updated,
                "ready_s": ready,
                "update_s": committed - update_start,
                "drain_s": done - committed,
                "changes_per_s": updated / (done - committed),
                "baseline_rss_mb": baseline_kb / 1024,
                "peak_hwm_mb": mem["VmHWM"] / 1024,
                "peak_sampled_rss_mb": peak_rss / 1024,
                "rss_confirmed_mb": mem["VmRSS"] / 1024,
                "rss_later_mb": rss_later / 1024,
                "cpu_s": cpu,
                "changes_seen": seen,
                "deletes": deletes,
                "memcached_errors": errors,
                "keys_sampled": len(keys),
                "keys_present_before": present_before,
                "keys_left": left,
                "exit_code": code,
            },
        )
        where = int_to_lsn(confirmed) if confirmed is not None else "none"
        print(f"end of the transaction: {end_lsn[0]}; slot confirmed {where}")
        print()
        print_timeline(samples, update_start, committed, done)
        print()
        daemon.report_stderr()
        print(f"load average at the end (1/5/15 min): {load()}")


def print_timeline(
    samples: list[tuple[float, int, int]], update_start: float, committed: float, done: float
) -> None:
    """About a dozen RSS samples spread over the run, with the phase they fall in."""
    if not samples:
        return
    step = max(1, len(samples) // 12)
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    rows = []
    for at, rss, hwm in picked:
        if at < update_start:
            phase = "before UPDATE"
        elif at < committed:
            phase = "UPDATE running"
        elif at < done:
            phase = "committed, draining"
        else:
            phase = "confirmed"
        rows.append(
            [f"{at - update_start:+.1f}", phase, fmt_num(rss / 1024, 1), fmt_num(hwm / 1024, 1)]
        )
    print_table(["t (s from UPDATE start)", "phase", "VmRSS MB", "VmHWM MB"], rows)


if __name__ == "__main__":
    main()
