"""Backlog drain: the daemon vs pg_recvlogical on the same committed WAL, in one run.

A table ``bench(id, email, v)`` (REPLICA IDENTITY FULL) gets ``--txns`` committed
transactions of ``--txn-rows`` single-row UPDATEs each while every slot already exists but
nobody reads. Then each round times

* ``pg_recvlogical`` (wal2json format-version 2, the daemon's options, ``-f /dev/null``)
  from process start until it exits at ``--endpos``, and
* the daemon (rules ``bench:{id}``, ``bench_email:{email}``; 3 memcached nodes) from process
  start until its slot's ``confirmed_flush_lsn`` reaches the same end position — i.e. every
  delete of every transaction acknowledged by memcached.

Rounds alternate which one goes first (``--repeat``). Figures only, never assertions.
With ``--tls`` the memcached nodes speak TLS only (``-Z``) and the daemon's pool has ``tls``.
Usage: python bench/throughput.py [--rows 200000] [--txns 200] [--txn-rows 1000] [--repeat 1]
       [--tls]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Bench,
    BenchError,
    fmt_breakdown,
    fmt_int,
    fmt_num,
    load,
    machine_lines,
    print_table,
    wait_confirmed,
    write_json,
)

from invalidator.core.changes import int_to_lsn, lsn_to_int
from tests.services import clean_env

RULES = [{"table": "bench", "keys": ["bench:{id}", "bench_email:{email}"]}]
RECV_OPTIONS = [
    "format-version=2",
    "include-timestamp=1",
    "include-types=1",
    "include-lsn=1",
    "add-tables=public.bench",
]


def setup_table(bench: Bench, rows: int) -> None:
    bench.cluster.execute(
        "CREATE TABLE bench (id int PRIMARY KEY, email text, v int);"
        " ALTER TABLE bench REPLICA IDENTITY FULL"
    )
    bench.cluster.execute(
        "INSERT INTO bench SELECT g, 'user' || g || '@example.com', 0"
        " FROM generate_series(1, %s) g",
        [rows],
    )
    bench.cluster.execute("VACUUM ANALYZE bench")
    bench.cluster.execute("CHECKPOINT")


def generate_backlog(bench: Bench, rows: int, txns: int, txn_rows: int) -> int:
    """``txns`` autocommit UPDATEs of ``txn_rows`` consecutive ids each; rows changed."""
    changed = 0
    with bench.connect() as conn:
        for i in range(txns):
            low = (i * txn_rows) % rows + 1
            high = min(rows, low + txn_rows - 1)
            cur = conn.execute("UPDATE bench SET v = v + 1 WHERE id BETWEEN %s AND %s", [low, high])
            changed += cur.rowcount
    return changed


def run_recvlogical(
    bench: Bench,
    slot: str,
    endpos: str,
    options: list[str] = RECV_OPTIONS,
    on_start: Any = None,
) -> float:
    """Seconds from start until pg_recvlogical exits at ``endpos`` (``-o`` each of
    ``options``); ``on_start(proc)`` runs while it streams (e.g. to sample its walsender)."""
    argv = [
        bench.cluster.bin("pg_recvlogical"),
        "-d",
        bench.cluster.dsn(),
        "--slot",
        slot,
        "--start",
    ]
    for option in options:
        argv += ["-o", option]
    argv += ["--endpos", endpos, "--no-loop", "-f", "/dev/null"]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if on_start is not None:
        on_start(proc)
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BenchError("pg_recvlogical did not reach --endpos within 600 s") from None
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"pg_recvlogical failed (exit {proc.returncode}): {stderr.strip()}")
    return elapsed


def run_daemon(
    bench: Bench,
    slot: str,
    end: int,
    timeout: float,
    source: dict[str, Any] | None = None,
    on_drained: Any = None,
    pool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Drain the backlog with the daemon (``source`` settings: default wal2json; ``pool``:
    more pool settings); ``on_drained()`` runs once the end is confirmed, before the daemon
    stops."""
    daemon = bench.daemon(slot, RULES, create_slot=False, source=source, pool=pool)
    state: dict[str, Any] = {"ready": None, "cpu_ready": None}

    def tick(now: float) -> None:
        if state["ready"] is None and daemon.ready():
            state["ready"] = time.perf_counter() - daemon.started_at
            state["cpu_ready"] = daemon.cpu_seconds()

    with bench.connect() as conn:
        daemon.start()
        done = wait_confirmed(conn, slot, end, timeout=timeout, daemon=daemon, tick=tick)
    elapsed = done - daemon.started_at
    cpu = daemon.cpu_seconds()
    extra = on_drained() if on_drained is not None else None
    if state["ready"] is None:  # drained before the first /readyz poll answered
        state["ready"] = daemon.wait_ready()
        state["cpu_ready"] = daemon.cpu_seconds()
    time.sleep(0.3)  # the counters are published with each status update
    deletes = daemon.breakdown("invalidator_operations_total", "result", op="delete")
    failures = daemon.metric("invalidator_memcached_errors_total")
    unbuildable = daemon.metric("invalidator_unbuildable_keys_total")
    seen = daemon.metric("invalidator_changes_total")
    rss_kb = daemon.memory_kb().get("VmHWM", 0)
    code = daemon.stop()
    return {
        "proc": daemon,
        "seconds": elapsed,
        "ready": state["ready"],
        "cpu": cpu,
        "cpu_ready": state["cpu_ready"],
        "deletes": deletes,
        "errors": failures,
        "unbuildable": unbuildable,
        "seen": seen,
        "hwm_mb": rss_kb / 1024,
        "exit": code,
        "extra": extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the table")
    parser.add_argument("--txns", type=int, default=200, help="backlog transactions")
    parser.add_argument("--txn-rows", type=int, default=1_000, help="rows per transaction")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (alternating order)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per daemon drain")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--tls", action="store_true", help="memcached -Z nodes, pool tls")
    args = parser.parse_args()

    with Bench(tls=args.tls) as bench:
        machine = machine_lines(bench.cluster)
        for text in machine:
            print(text)
        t0 = time.perf_counter()
        setup_table(bench, args.rows)
        slots = [(f"recv_{r}", f"daemon_{r}") for r in range(args.repeat)]
        for pair in slots:
            for slot in pair:
                bench.cluster.execute(
                    "SELECT pg_create_logical_replication_slot(%s, 'wal2json')", [slot]
                )
        start_lsn = bench.cluster.current_wal_lsn()
        changes = generate_backlog(bench, args.rows, args.txns, args.txn_rows)
        end_lsn = bench.cluster.current_wal_lsn()
        wal_bytes = lsn_to_int(end_lsn) - lsn_to_int(start_lsn)
        print(
            f"backlog: {changes:,} changes in {args.txns:,} transactions "
            f"({args.txn_rows:,} rows each, REPLICA IDENTITY FULL), "
            f"{wal_bytes / 1e6:,.1f} MB of WAL up to {end_lsn}; set-up took "
            f"{time.perf_counter() - t0:.1f}s"
        )
        print("pg_recvlogical: -o " + " -o ".join(RECV_OPTIONS) + " --endpos END -f /dev/null")
        print(
            "daemon: rules bench -> bench:{id}, bench_email:{email}; 3 memcached nodes"
            + (" (TLS: memcached -Z, pool tls)" if args.tls else "")
        )
        print()

        end = lsn_to_int(end_lsn)
        results = []
        for r, (recv_slot, daemon_slot) in enumerate(slots):
            order = ("recv", "daemon") if r % 2 == 0 else ("daemon", "recv")
            result: dict[str, Any] = {"order": " then ".join(order)}
            for which in order:
                if which == "recv":
                    result["recv"] = run_recvlogical(bench, recv_slot, end_lsn)
                else:
                    result["daemon"] = run_daemon(bench, daemon_slot, end, args.timeout)
            results.append(result)

        print_table(
            ["figure", *(f"round {i + 1}" for i in range(len(results)))]
            + (["median"] if len(results) > 1 else []),
            figure_rows(results, changes),
        )
        print()
        print(
            "daemon times run from process start (imports, connect, slot check) until the"
            " slot's confirmed_flush_lsn reached"
            f" {int_to_lsn(end)}, polled every 20 ms; pg_recvlogical's from process start"
            " until it exited at --endpos."
        )
        for result in results:
            result["daemon"]["proc"].report_stderr()
        write_json(args.json, json_figures(results, changes, wal_bytes, args, machine))
        print(f"load average at the end (1/5/15 min): {load()}")


def json_figures(
    results: list[dict[str, Any]],
    changes: int,
    wal_bytes: int,
    args: argparse.Namespace,
    machine: list[str],
) -> dict[str, Any]:
    """Per-round figures and their medians, for bench/report.py."""
    rounds = []
    for r in results:
        d = r["daemon"]
        rounds.append(
            {
                "order": r["order"],
                "recv_s": r["recv"],
                "recv_changes_per_s": changes / r["recv"],
                "daemon_s": d["seconds"],
                "daemon_changes_per_s": changes / d["seconds"],
                "ratio": r["recv"] / d["seconds"],
                "ready_s": d["ready"],
                "daemon_changes_per_s_after_ready": changes / (d["seconds"] - d["ready"]),
                "cpu_s": d["cpu"],
                "cpu_s_per_million": d["cpu"] / changes * 1e6,
                "cpu_s_per_million_streaming": (d["cpu"] - d["cpu_ready"]) / changes * 1e6,
                "hwm_mb": d["hwm_mb"],
                "changes_seen": d["seen"],
                "deletes": d["deletes"],
                "memcached_errors": d["errors"],
                "unbuildable": d["unbuildable"],
                "exit_code": d["exit"],
            }
        )
    numeric = [k for k, v in rounds[0].items() if isinstance(v, int | float)]
    return {
        "machine": machine,
        "changes": changes,
        "transactions": args.txns,
        "rows_per_transaction": args.txn_rows,
        "wal_bytes": wal_bytes,
        "templates_per_row": len(RULES[0]["keys"]),
        "rounds": rounds,
        "median": {k: statistics.median(x[k] for x in rounds) for k in numeric},
    }


def figure_rows(results: list[dict[str, Any]], changes: int) -> list[list[str]]:
    def row(label: str, values: list[float], fmt: Any) -> list[str]:
        cells = [fmt(v) for v in values]
        if len(values) > 1:
            cells.append(fmt(statistics.median(values)))
        return [label, *cells]

    recv_s = [r["recv"] for r in results]
    d = [r["daemon"] for r in results]
    daemon_s = [x["seconds"] for x in d]
    recv_rate = [changes / s for s in recv_s]
    daemon_rate = [changes / s for s in daemon_s]
    after_ready = [changes / (x["seconds"] - x["ready"]) for x in d]
    per_million = [x["cpu"] / changes * 1e6 for x in d]
    per_million_stream = [(x["cpu"] - x["cpu_ready"]) / changes * 1e6 for x in d]
    rows = [
        ["order", *(r["order"] for r in results)] + (["-"] if len(results) > 1 else []),
        row("changes", [changes] * len(results), fmt_int),
        row("pg_recvlogical seconds", recv_s, lambda v: fmt_num(v, 3)),
        row("pg_recvlogical changes/s", recv_rate, fmt_int),
        row("daemon seconds (from process start)", daemon_s, lambda v: fmt_num(v, 3)),
        row("daemon changes/s", daemon_rate, fmt_int),
        row(
            "ratio daemon / pg_recvlogical",
            [a / b for a, b in zip(daemon_rate, recv_rate, strict=True)],
            lambda v: fmt_num(v, 2),
        ),
        row("daemon start-up to /readyz=200 s", [x["ready"] for x in d], lambda v: fmt_num(v, 3)),
        row("daemon changes/s after /readyz", after_ready, fmt_int),
        row("daemon CPU s (total)", [x["cpu"] for x in d], lambda v: fmt_num(v, 2)),
        row("daemon CPU s per 1M changes", per_million, lambda v: fmt_num(v, 2)),
        row("  same, start-up CPU excluded", per_million_stream, lambda v: fmt_num(v, 2)),
        row("daemon peak RSS (VmHWM) MB", [x["hwm_mb"] for x in d], lambda v: fmt_num(v, 1)),
        row("changes counted by the daemon", [x["seen"] for x in d], fmt_int),
        row(
            "deletes acknowledged (operations_total)",
            [sum(x["deletes"].values()) for x in d],
            fmt_int,
        ),
        [
            "  by result",
            *(fmt_breakdown(x["deletes"]) for x in d),
            *(["-"] if len(results) > 1 else []),
        ],
        row("memcached errors", [x["errors"] for x in d], fmt_int),
        row("unbuildable keys", [x["unbuildable"] for x in d], fmt_int),
        [
            "daemon exit code after SIGTERM",
            *(str(x["exit"]) for x in d),
            *(["-"] if len(results) > 1 else []),
        ],
    ]
    return rows


if __name__ == "__main__":
    main()
