"""Backlog drain with each client's placement: ketama pools beside the rendezvous pool.

The same committed backlog as bench/throughput.py (``bench(id, email, v)``, ``--txns``
transactions of ``--txn-rows`` single-row UPDATEs, two keys per change, 3 memcached nodes)
is drained by one daemon per pool setting, each from its own slot, in one run; rounds
rotate which goes first (``--repeat``). The figure is each pool's drain rate over the
rendezvous (pymemcache) pool's: the C hot path places a ketama continuum by hashing the
key and looking it up in the continuum Python built (target: within 10%). Before timing,
the script checks that the C hot path takes the table for every pool (else the ratio
would compare Python with C). Figures only, never assertions.

Usage: python bench/placement_drain.py [--rows 200000] [--txns 200] [--txn-rows 1000]
       [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, BenchError, fmt_int, fmt_num, machine_lines, print_table, write_json
from throughput import RULES, generate_backlog, run_daemon, setup_table

from invalidator.config import parse_config
from invalidator.config.build import compile_rules, static_router
from invalidator.core.changes import lsn_to_int
from invalidator.hotpath import HotPath

TARGET = 0.90  # a ketama pool drains at >= 90% of the rendezvous pool's rate
# (label, extra pool settings): the reference first.
POOLS: list[tuple[str, dict[str, Any]]] = [
    ("pymemcache (rendezvous)", {"client": "pymemcache"}),
    (
        "spymemcached ketama",
        {"client": "spymemcached", "behaviors": {"locator": "consistent", "hash": "ketama"}},
    ),
    ("pylibmc ketama", {"client": "pylibmc", "behaviors": {"ketama": True}}),
]


def taken_by_c(servers: list[str], pool: dict[str, Any]) -> bool:
    """The C hot path takes the bench table for a pool with these settings."""
    config = parse_config(
        {"pools": {"default": {"servers": servers, **pool}}, "rules": RULES}, "bench"
    )
    hot = HotPath(compile_rules(config), static_router(config).placements)
    return hot.tables == ["public.bench"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--txns", type=int, default=200)
    parser.add_argument("--txn-rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    with Bench() as bench:
        for text in machine_lines(bench.cluster):
            print(text)
        servers = list(bench.pool.servers)
        for label, pool in POOLS:
            if not taken_by_c(servers, pool):
                raise BenchError(f"{label}: the C hot path does not take the table")
        setup_table(bench, args.rows)
        slots = [[f"drain_{r}_{p}" for p in range(len(POOLS))] for r in range(args.repeat)]
        for names in slots:
            for slot in names:
                bench.cluster.execute(
                    "SELECT pg_create_logical_replication_slot(%s, 'wal2json')", [slot]
                )
        changes = generate_backlog(bench, args.rows, args.txns, args.txn_rows)
        end = lsn_to_int(bench.cluster.current_wal_lsn())
        print(
            f"backlog: {changes:,} changes in {args.txns:,} transactions, 2 keys each; "
            f"pools over {len(servers)} memcached nodes, each taken by the C hot path"
        )
        rates: dict[str, list[float]] = {label: [] for label, _ in POOLS}
        streaming: dict[str, list[float]] = {label: [] for label, _ in POOLS}
        cpu: dict[str, list[float]] = {label: [] for label, _ in POOLS}
        for r, names in enumerate(slots):
            order = [(r + i) % len(POOLS) for i in range(len(POOLS))]
            for p in order:
                label, pool = POOLS[p]
                started = time.perf_counter()
                result = run_daemon(bench, names[p], end, args.timeout, pool=pool)
                if result["errors"] or result["unbuildable"]:
                    raise BenchError(f"{label}: memcached errors or unbuildable keys")
                rates[label].append(changes / result["seconds"])
                streaming[label].append(changes / (result["seconds"] - result["ready"]))
                cpu[label].append(result["cpu"] / changes * 1e6)
                print(
                    f"round {r + 1} {label}: {result['seconds']:.2f} s "
                    f"({time.perf_counter() - started:.1f} s with stop)"
                )
        reference = POOLS[0][0]
        base = statistics.median(rates[reference])
        base_streaming = statistics.median(streaming[reference])
        rows = []
        figures = []
        for label, _ in POOLS:
            median = statistics.median(rates[label])
            ratio = median / base
            after_ready = statistics.median(streaming[label]) / base_streaming
            rows.append(
                [
                    label,
                    *(fmt_int(v) for v in rates[label]),
                    fmt_int(median),
                    fmt_num(statistics.median(cpu[label]), 2),
                    fmt_num(ratio, 3),
                    fmt_num(after_ready, 3),
                    "-" if label == reference else ("yes" if ratio >= TARGET else "NO"),
                ]
            )
            figures.append(
                {
                    "pool": label,
                    "changes_per_s": rates[label],
                    "median_changes_per_s": median,
                    "median_changes_per_s_after_ready": statistics.median(streaming[label]),
                    "cpu_s_per_million": statistics.median(cpu[label]),
                    "ratio_to_rendezvous": ratio,
                    "ratio_to_rendezvous_after_ready": after_ready,
                }
            )
        print()
        print_table(
            [
                "pool",
                *(f"round {i + 1} changes/s" for i in range(args.repeat)),
                "median",
                "CPU s / 1M",
                "ratio to rendezvous",
                "same, after /readyz",
                f">= {TARGET:g}",
            ],
            rows,
        )
        print(
            "changes/s from daemon process start until its slot's confirmed_flush_lsn reached"
            " the end (every delete acknowledged); 'after /readyz' leaves start-up out"
        )
        write_json(
            args.json,
            {"changes": changes, "target_ratio": TARGET, "pools": figures},
        )


if __name__ == "__main__":
    main()
