"""Memory over a soak: the daemon's VmRSS while pgbench drives steady single-row UPDATEs.

The daemon (rule ``user:{id}``) streams while pgbench runs ``-c 4 -j 2 -R --rate`` single-row
UPDATEs on ``users`` for ``--seconds``. Every ``--interval`` seconds: the daemon's VmRSS and
VmHWM (/proc/<pid>/status), its CPU seconds, the server's slot lag
(pg_current_wal_lsn() - confirmed_flush_lsn) and the daemon's
invalidator_replication_lag_bytes. Reported: RSS start/end/max and the least-squares slope in
MB/min, over the whole soak and after ``--warmup-seconds``. Figures only, never assertions.
Usage: python bench/soak.py [--seconds 600] [--rate 5000] [--interval 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Bench,
    Pgbench,
    busy_percent,
    cpu_times,
    fmt_int,
    fmt_num,
    load,
    machine_lines,
    print_table,
    slot_lag,
    wait_confirmed,
    write_json,
)

from invalidator.core.changes import lsn_to_int
from tests.stats import slope

SLOT = "soak"
RULES = [{"table": "users", "keys": ["user:{id}"]}]
ROWS = 100_000
PGBENCH_SCRIPT = f"\\set id random(1, {ROWS})\nUPDATE users SET v = v + 1 WHERE id = :id;\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the soak")
    parser.add_argument("--rate", type=int, default=5000, help="pgbench -R")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="samples before this are left out of the steady slope (default: min(60, soak/5))",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    warmup = args.warmup_seconds
    if warmup is None:
        warmup = min(60.0, args.seconds / 5)

    with Bench() as bench:
        cluster = bench.cluster
        machine = machine_lines(cluster)
        for text in machine:
            print(text)
        cluster.execute("CREATE TABLE users (id int PRIMARY KEY, name text, v int)")
        cluster.execute(
            "INSERT INTO users SELECT g, 'name-' || g, 0 FROM generate_series(1, %s) g", [ROWS]
        )
        cluster.execute("VACUUM ANALYZE users")
        script = bench.workdir / "update.sql"
        script.write_text(PGBENCH_SCRIPT)

        daemon = bench.daemon(SLOT, RULES)
        daemon.start()
        ready = daemon.wait_ready()
        print(f"daemon ready (/readyz=200) {ready:.2f}s after process start")
        print(
            f"soak: pgbench -R {args.rate:,} for {args.seconds:.0f}s, a sample every"
            f" {args.interval:g}s; slope after {warmup:.0f}s of warm-up"
        )

        # (t, VmRSS kB, VmHWM kB, CPU s, slot lag B, daemon lag B)
        samples: list[tuple[float, int, int, float, float, float]] = []
        pgbench = Pgbench(bench, script, args.rate, args.seconds + 1)
        with bench.connect() as watch:
            pgbench.start()
            start = time.perf_counter()
            machine_before = cpu_times()
            tick = 0
            while True:
                at = time.perf_counter() - start
                mem = daemon.memory_kb()
                _, lag = slot_lag(watch, SLOT)
                samples.append(
                    (
                        at,
                        mem["VmRSS"],
                        mem["VmHWM"],
                        daemon.cpu_seconds(),
                        float("nan") if lag is None else float(lag),
                        daemon.metric("invalidator_replication_lag_bytes"),
                    )
                )
                daemon.check_alive()
                tick += 1
                if tick * args.interval > args.seconds + 1e-6:
                    break
                if tick % max(1, round(60 / args.interval)) == 0:
                    print(
                        f"  {at:6.0f}s  VmRSS {mem['VmRSS'] / 1024:7.1f} MB"
                        f"  slot lag {fmt_int(samples[-1][4])} B",
                        flush=True,
                    )
                time.sleep(max(0.0, start + tick * args.interval - time.perf_counter()))
            machine_busy = busy_percent(machine_before, cpu_times())
            stats = pgbench.wait()
            ended = time.perf_counter()
            end_lsn = lsn_to_int(cluster.current_wal_lsn())
            done = wait_confirmed(watch, SLOT, end_lsn, timeout=120, daemon=daemon)
        deletes = daemon.metric("invalidator_operations_total", op="delete")
        errors = daemon.metric("invalidator_memcached_errors_total")
        code = daemon.stop()

        rss = [(s[0], s[1] / 1024) for s in samples]
        steady = [p for p in rss if p[0] >= warmup]
        cpu_span = samples[-1][3] - samples[0][3]
        time_span = samples[-1][0] - samples[0][0]
        lags = [(s[0], s[4]) for s in samples]
        figures: dict[str, Any] = {
            "machine": machine,
            "rate": args.rate,
            "seconds": args.seconds,
            "interval_s": args.interval,
            "warmup_s": warmup,
            "ready_s": ready,
            "pgbench": stats,
            "rss_start_mb": rss[0][1],
            "rss_end_mb": rss[-1][1],
            "rss_max_mb": max(v for _, v in rss),
            "rss_min_mb": min(v for _, v in rss),
            "hwm_end_mb": samples[-1][2] / 1024,
            "slope_mb_per_min": slope(rss) * 60,
            "steady_slope_mb_per_min": slope(steady) * 60,
            "steady_start_mb": steady[0][1] if steady else float("nan"),
            "cpu_percent": 100 * cpu_span / time_span if time_span else float("nan"),
            "machine_busy_percent": machine_busy,
            "slot_lag_first": lags[0][1],
            "slot_lag_last": lags[-1][1],
            "slot_lag_max": max(v for _, v in lags),
            "slot_lag_slope": slope(lags),
            "catch_up_s": done - ended,
            "deletes": deletes,
            "memcached_errors": errors,
            "exit_code": code,
            "samples": [[round(s[0], 2), s[1], s[2], round(s[3], 3), s[4], s[5]] for s in samples],
        }

        print()
        print_table(
            ["figure", "value"],
            [
                ["pgbench tps (achieved)", fmt_int(stats.get("tps", float("nan")))],
                ["RSS samples", f"{len(samples)} (every {args.interval:g} s)"],
                ["VmRSS at start MB", fmt_num(figures["rss_start_mb"], 1)],
                ["VmRSS at end MB", fmt_num(figures["rss_end_mb"], 1)],
                ["VmRSS max MB", fmt_num(figures["rss_max_mb"], 1)],
                ["VmHWM at end MB", fmt_num(figures["hwm_end_mb"], 1)],
                ["RSS slope, whole soak MB/min", fmt_num(figures["slope_mb_per_min"], 3)],
                [
                    f"RSS slope after {warmup:.0f}s MB/min",
                    fmt_num(figures["steady_slope_mb_per_min"], 3),
                ],
                ["daemon CPU % of one core", fmt_num(figures["cpu_percent"], 1)],
                ["machine busy % (all cores)", fmt_num(machine_busy, 1)],
                [
                    "slot lag first/last/max B",
                    f"{fmt_int(lags[0][1])} / {fmt_int(lags[-1][1])}"
                    f" / {fmt_int(figures['slot_lag_max'])}",
                ],
                ["slot lag slope B/s", fmt_int(figures["slot_lag_slope"])],
                ["catch-up after pgbench s", fmt_num(figures["catch_up_s"], 2)],
                ["deletes acknowledged", fmt_int(deletes)],
                ["memcached errors", fmt_int(errors)],
                ["daemon exit code after SIGTERM", str(code)],
            ],
        )
        daemon.report_stderr()
        print(f"load average at the end (1/5/15 min): {load()}")
        write_json(args.json, figures)


if __name__ == "__main__":
    main()
