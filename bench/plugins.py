"""wal2json against pgoutput, on one WAL in one run: drain by pg_recvlogical and by the
daemon with each plugin, and the walsender's CPU per 1M changes for each.

The table and backlog are bench/throughput.py's (``bench(id, email, v)``, REPLICA
IDENTITY FULL, ``--txns`` transactions of ``--txn-rows`` single-row UPDATEs), written once
while four slots already exist and nobody reads: then each round drains the same WAL with

* ``pg_recvlogical`` + wal2json (the daemon's options, ``-f /dev/null``),
* ``pg_recvlogical`` + pgoutput (``proto_version=1``, ``publication_names=bench_pub``),
* the daemon, ``source.kind: wal2json``, and
* the daemon, ``source.kind: pgoutput`` (publication ``bench_pub``: the daemon keeps it),

each timed from process start to the end (pg_recvlogical: its exit at ``--endpos``; the
daemon: the slot confirmed at the end, every delete acknowledged). The walsender serving
each one is found through ``pg_replication_slots.active_pid`` and its CPU read from
``/proc/<pid>/stat`` (utime + stime): for the daemon once the end is confirmed (the
walsender is still there), for pg_recvlogical at its last sample before it exits
(sampled every 20 ms: at most that much CPU is missed). Rounds rotate the order
(``--repeat``). With ``--latency RATE``, bench/latency.py then runs once per plugin
(``--kind``, pgbench single-row UPDATEs at that rate, no pg_recvlogical reference): commit
-> key gone, p50 and p99. Figures only, never assertions.
Usage: python bench/plugins.py [--rows 200000] [--txns 200] [--txn-rows 1000] [--repeat 1]
       [--latency 5000] [--samples 300] [--load-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, fmt_int, fmt_num, load, machine_lines, print_table, write_json
from throughput import RECV_OPTIONS, generate_backlog, run_daemon, run_recvlogical, setup_table

from invalidator.core.changes import lsn_to_int

PUBLICATION = "bench_pub"
PGOUTPUT_OPTIONS = ["proto_version=1", f"publication_names={PUBLICATION}"]
TICKS = os.sysconf("SC_CLK_TCK")
WAYS = ["recv-wal2json", "recv-pgoutput", "daemon-wal2json", "daemon-pgoutput"]


def process_cpu(pid: int) -> float | None:
    """utime + stime of a process in seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


class WalsenderCpu(threading.Thread):
    """Follows the walsender of one slot: its pid and its CPU, every ``interval`` s."""

    def __init__(self, bench: Bench, slot: str, interval: float = 0.02):
        super().__init__(name=f"walsender-{slot}", daemon=True)
        self.bench = bench
        self.slot = slot
        self.interval = interval
        self.pid: int | None = None
        self.cpu = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        with self.bench.connect() as conn:
            while not self.halt.is_set():
                if self.pid is None:
                    row = conn.execute(
                        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                        [self.slot],
                    ).fetchone()
                    self.pid = row[0] if row is not None else None
                if self.pid is not None:
                    cpu = process_cpu(self.pid)
                    if cpu is None:
                        return  # it exited: the last sample stands
                    self.cpu = cpu
                time.sleep(self.interval)

    def finish(self) -> float:
        """Stop sampling; the walsender's CPU seconds (one last read if it still runs)."""
        self.halt.set()
        self.join(timeout=5)
        if self.pid is not None:
            cpu = process_cpu(self.pid)
            if cpu is not None:
                self.cpu = cpu
        return self.cpu


def drain(bench: Bench, way: str, slot: str, end_lsn: str, timeout: float) -> dict[str, Any]:
    sampler = WalsenderCpu(bench, slot)
    if way.startswith("recv"):
        options = RECV_OPTIONS if way.endswith("wal2json") else PGOUTPUT_OPTIONS
        seconds = run_recvlogical(bench, slot, end_lsn, options, on_start=lambda _: sampler.start())
        return {
            "seconds": seconds,
            "ready_s": 0.0,
            "walsender_cpu": sampler.finish(),
            "daemon_cpu": None,
        }
    source = {"kind": "pgoutput", "publication": PUBLICATION} if way.endswith("pgoutput") else {}
    sampler.start()
    result = run_daemon(bench, slot, lsn_to_int(end_lsn), timeout, source, sampler.finish)
    return {
        "seconds": result["seconds"],
        "ready_s": result["ready"],
        "walsender_cpu": result["extra"],
        "daemon_cpu": result["cpu"] - result["cpu_ready"],
        "deletes": sum(result["deletes"].values()),
        "unbuildable": result["unbuildable"],
        "errors": result["errors"],
    }


def latency(kind: str, args: argparse.Namespace) -> dict[str, float]:
    """bench/latency.py at ``--latency`` tps with the daemon on ``kind``: p50/p99 ms."""
    rate = str(args.latency)
    with tempfile.TemporaryDirectory(prefix="pgci-bench-plugins-") as tmp:
        out = Path(tmp) / "latency.json"
        argv = [sys.executable, str(Path(__file__).with_name("latency.py")), "--kind", kind]
        argv += ["--rates", rate, "--lag-rate", rate, "--no-reference"]
        argv += ["--samples", str(args.samples), "--load-seconds", str(args.load_seconds)]
        argv += ["--lag-seconds", str(args.load_seconds), "--json", str(out)]
        print(f"-- latency.py --kind {kind} at -R {rate}", flush=True)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"latency.py --kind {kind} failed with exit code {proc.returncode}")
        phase = json.loads(out.read_text())["phases"][0]
    return {"p50_ms": phase["p50_ms"], "p99_ms": phase["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the table")
    parser.add_argument("--txns", type=int, default=200, help="backlog transactions")
    parser.add_argument("--txn-rows", type=int, default=1_000, help="rows per transaction")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (rotating order)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per daemon drain")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--latency", type=int, metavar="RATE", help="also latency at RATE tps")
    parser.add_argument("--samples", type=int, default=300, help="latency probe samples")
    parser.add_argument("--load-seconds", type=int, default=10, help="latency load window")
    args = parser.parse_args()

    with Bench() as bench:
        machine = machine_lines(bench.cluster)
        for text in machine:
            print(text)
        setup_table(bench, args.rows)
        # The publication before the slots: each change is decoded with the catalogue of
        # its time. The daemon finds it in step with its rules (REPLICA IDENTITY FULL: no
        # column list) and leaves it alone.
        bench.cluster.execute(
            f"CREATE PUBLICATION {PUBLICATION} FOR TABLE bench WITH"
            " (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)"
        )
        slots: list[dict[str, str]] = []
        for r in range(args.repeat):
            names = {way: f"{way.replace('-', '_')}_{r}" for way in WAYS}
            for way, slot in names.items():
                plugin = "pgoutput" if way.endswith("pgoutput") else "wal2json"
                bench.cluster.execute(
                    "SELECT pg_create_logical_replication_slot(%s, %s)", [slot, plugin]
                )
            slots.append(names)
        changes = generate_backlog(bench, args.rows, args.txns, args.txn_rows)
        end_lsn = bench.cluster.current_wal_lsn()
        print(
            f"backlog: {changes:,} changes in {args.txns:,} transactions of {args.txn_rows:,}"
            f" rows (REPLICA IDENTITY FULL), up to {end_lsn}"
        )
        print("pg_recvlogical wal2json: -o " + " -o ".join(RECV_OPTIONS))
        print("pg_recvlogical pgoutput: -o " + " -o ".join(PGOUTPUT_OPTIONS))
        print("daemon: rules bench -> bench:{id}, bench_email:{email}; 3 memcached nodes\n")

        rounds: list[dict[str, dict[str, Any]]] = []
        for r, names in enumerate(slots):
            order = WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]
            result = {way: drain(bench, way, names[way], end_lsn, args.timeout) for way in order}
            print(f"round {r + 1} ({' then '.join(order)}) done", flush=True)
            rounds.append(result)

    def med(way: str, key: str) -> float:
        return statistics.median(r[way][key] for r in rounds)

    rate = {way: changes / med(way, "seconds") for way in WAYS}
    cpu = {way: med(way, "walsender_cpu") / changes * 1e6 for way in WAYS}
    rows = [
        [
            way,
            fmt_num(med(way, "seconds"), 3),
            fmt_num(med(way, "ready_s"), 3) if way[0] == "d" else "-",
            fmt_int(rate[way]),
            fmt_num(cpu[way], 2),
        ]
        + ([fmt_num(med(way, "daemon_cpu") / changes * 1e6, 2)] if way[0] == "d" else ["-"])
        for way in WAYS
    ]
    print()
    print_table(
        [
            "drain (median of rounds)",
            "seconds",
            "of which start-up to /readyz",
            "changes/s",
            "walsender CPU s / 1M changes",
            "daemon CPU s / 1M",
        ],
        rows,
    )
    ratios = {
        "daemon-pgoutput / recv-pgoutput": rate["daemon-pgoutput"] / rate["recv-pgoutput"],
        "daemon-wal2json / recv-wal2json": rate["daemon-wal2json"] / rate["recv-wal2json"],
        "daemon-pgoutput / daemon-wal2json": rate["daemon-pgoutput"] / rate["daemon-wal2json"],
        "recv-pgoutput / recv-wal2json": rate["recv-pgoutput"] / rate["recv-wal2json"],
        "walsender CPU wal2json / pgoutput (recv)": cpu["recv-wal2json"] / cpu["recv-pgoutput"],
        "daemon-pgoutput after /readyz / recv-pgoutput": med("recv-pgoutput", "seconds")
        / (med("daemon-pgoutput", "seconds") - med("daemon-pgoutput", "ready_s")),
    }
    print()
    print_table(["ratio (changes/s)", "value"], [[k, fmt_num(v, 2)] for k, v in ratios.items()])
    latencies = {}
    if args.latency:
        latencies = {kind: latency(kind, args) for kind in ("wal2json", "pgoutput")}
        print()
        print_table(
            [f"commit -> key gone at -R {args.latency:,}", "p50 ms", "p99 ms"],
            [
                [f"daemon-{k}", fmt_num(v["p50_ms"], 2), fmt_num(v["p99_ms"], 2)]
                for k, v in latencies.items()
            ],
        )
    print(f"\n{len(rounds)} round(s); load average at the end (1/5/15 min): {load()}")
    write_json(
        args.json,
        {
            "machine": machine,
            "changes": changes,
            "rounds": rounds,
            "changes_per_s": rate,
            "walsender_cpu_s_per_million": cpu,
            "ratios": ratios,
            "latency_rate": args.latency,
            "latency": latencies,
        },
    )


if __name__ == "__main__":
    main()
