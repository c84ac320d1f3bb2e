"""The cost of TLS to memcached: backlog drain and commit -> key gone at 5,000 tps, with
plaintext nodes and with TLS-only nodes (``memcached -Z``, the pool's ``tls``), in one run.

Runs ``bench/throughput.py`` and ``bench/latency.py`` (each starts its own PostgreSQL and
memcached through tests/services.py) once without and once with ``--tls``, alternating
which goes first per round, and prints the figures side by side with TLS / plaintext
ratios. Figures only, never assertions.
Usage: python bench/tls.py [--rounds 1] [--txns 100] [--txn-rows 1000] [--rate 5000]
       [--samples 300] [--load-seconds 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_num, load, print_table, write_json

HERE = Path(__file__).resolve().parent


def run(script: str, args: list[str], tls: bool, out: Path) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / script), *args, "--json", str(out)]
    if tls:
        argv.append("--tls")
    label = f"{script} {'TLS' if tls else 'plaintext'}"
    print(f"-- {label}: {' '.join(argv[1:])}", flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds (alternating order)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--txns", type=int, default=100)
    parser.add_argument("--txn-rows", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=5_000, help="pgbench -R for the latency")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--load-seconds", type=int, default=10)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    drain_args = ["--rows", str(args.rows), "--txns", str(args.txns)]
    drain_args += ["--txn-rows", str(args.txn_rows)]
    latency_args = ["--rates", str(args.rate), "--samples", str(args.samples)]
    latency_args += ["--load-seconds", str(args.load_seconds), "--no-reference"]
    latency_args += ["--lag-rate", str(args.rate), "--lag-seconds", str(args.load_seconds)]

    figures: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    with tempfile.TemporaryDirectory(prefix="pgci-bench-tls-") as tmp:
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for tls in order:
                d = run("throughput.py", drain_args, tls, Path(tmp) / f"drain-{r}-{tls}.json")
                med = d["median"]
                for key in ("daemon_changes_per_s", "ratio", "cpu_s_per_million_streaming"):
                    figures[tls].setdefault(key, []).append(med[key])
                figures[tls].setdefault("memcached_errors", []).append(med["memcached_errors"])
            for tls in order:
                lat = run("latency.py", latency_args, tls, Path(tmp) / f"lat-{r}-{tls}.json")
                phase = lat["phases"][0]
                for key, value in (
                    ("idle_p50_ms", lat["idle"]["p50_ms"]),
                    ("idle_p99_ms", lat["idle"]["p99_ms"]),
                    ("load_p50_ms", phase["p50_ms"]),
                    ("load_p99_ms", phase["p99_ms"]),
                    ("load_daemon_cpu_percent", phase["daemon_cpu_percent"]),
                ):
                    figures[tls].setdefault(key, []).append(value)

    def med(tls: bool, key: str) -> float:
        return statistics.median(figures[tls][key])

    rows = []
    for key, label, digits in (
        ("daemon_changes_per_s", "drain: daemon changes/s", 0),
        ("ratio", "drain: pg_recvlogical seconds / daemon seconds", 2),
        ("cpu_s_per_million_streaming", "drain: daemon CPU s per 1M changes (streaming)", 2),
        ("memcached_errors", "drain: memcached errors", 0),
        ("idle_p50_ms", "latency idle: commit -> key gone p50 ms", 2),
        ("idle_p99_ms", "latency idle: p99 ms", 2),
        ("load_p50_ms", f"latency at -R {args.rate:,}: p50 ms", 2),
        ("load_p99_ms", f"latency at -R {args.rate:,}: p99 ms", 2),
        ("load_daemon_cpu_percent", f"daemon CPU % of a core at -R {args.rate:,}", 0),
    ):
        plain, tls = med(False, key), med(True, key)
        ratio = fmt_num(tls / plain, 2) if plain else "-"
        rows.append([label, fmt_num(plain, digits), fmt_num(tls, digits), ratio])
    print()
    print_table(["figure (median of rounds)", "plaintext", "TLS", "TLS / plaintext"], rows)
    print()
    print(
        f"{args.rounds} round(s), order alternating; drain: {args.txns * args.txn_rows:,} "
        f"changes in {args.txns} transactions (bench/throughput.py); latency: "
        f"{args.samples} probe samples idle and under pgbench -R {args.rate:,} "
        "(bench/latency.py --no-reference); TLS: memcached -Z, TLS 1.3, verified certificate."
    )
    print(f"load average at the end (1/5/15 min): {load()}")
    write_json(args.json, {"plaintext": figures[False], "tls": figures[True]})


if __name__ == "__main__":
    main()
