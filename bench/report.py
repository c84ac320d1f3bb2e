"""Run every benchmark, then print one summary table and write it to bench/results/.

Each script (placement, hotpath, startup, throughput, big_transaction, latency, soak, tls,
replicas, vanished_node, placement_drain, plugins) runs as its own subprocess with
``--json``; its output is shown as it runs and kept in ``bench/results/latest.log``. At the
end: one table (figure, ours, reference, ratio or target, met?) on stdout, the same table as
Markdown with the machine and the date in ``bench/results/latest.md``, every figure in
``bench/results/latest.json``, and latency percentiles against load in
``bench/results/latency.png`` (needs matplotlib; skipped with a message when it is missing).

The machine may be shared: a watcher samples /proc every second and reports, per step, the
CPU used by processes that are not this run's (other test suites, other daemons).

Usage: python bench/report.py [--quick] [--soak-seconds 600] [--only latency,soak]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the repo root
sys.path.insert(0, str(BENCH))

from _common import ROOT, ForeignCpu, fmt_int, fmt_num, print_table  # noqa: E402

# Reference figures from ../shared/NOTES.md (pg_recvlogical, commit -> change received,
# pgbench single-row UPDATEs, this machine): used when the run measured none.
NOTES_REFERENCE = {5000: (0.5, 0.9), 10000: (0.6, 1.1), 20000: (0.8, 480.0)}  # p50, p99 ms
P99_TARGETS_MS = {5000: 3.0, 10000: 5.0}
LAG_RATE = 20000
RATIO_TARGET = 0.95
CPU_TARGET_S = 3.0
BIG_RSS_TARGET_MB = 200.0
RSS_SLOPE_TARGET = 0.1  # MB/min after warm-up: 160 MB (baseline -> 200 MB) takes > 1 day
STARTUP_TARGET_S = 1.0


@dataclass
class Step:
    name: str
    script: str
    args: list[str]
    data: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    foreign: dict[str, float] = field(default_factory=dict)
    waited: float = 0.0


def steps(quick: bool, soak_seconds: float) -> list[Step]:
    if quick:
        return [
            Step("placement", "placement.py", ["--keys", "100000"]),
            Step("hotpath", "hotpath.py", ["--changes", "50000"]),
            Step("startup", "startup.py", ["--starts", "3"]),
            Step("throughput", "throughput.py", ["--txns", "200", "--repeat", "1"]),
            Step("big_transaction", "big_transaction.py", []),
            Step(
                "latency",
                "latency.py",
                ["--samples", "150", "--load-seconds", "8", "--lag-seconds", "15"],
            ),
            Step("soak", "soak.py", ["--seconds", f"{soak_seconds:g}", "--interval", "5"]),
            Step("tls", "tls.py", ["--rounds", "1", "--txns", "100", "--rows", "100000"]),
            Step("replicas", "replicas.py", ["--probes", "15"]),
            Step("vanished_node", "vanished_node.py", ["--samples", "100"]),
            Step(
                "placement_drain",
                "placement_drain.py",
                ["--rows", "50000", "--txns", "50", "--repeat", "1"],
            ),
            Step(
                "plugins",
                "plugins.py",
                ["--txns", "100", "--rows", "100000", "--latency", "5000", "--samples", "150"],
            ),
        ]
    return [
        Step("placement", "placement.py", []),
        Step("hotpath", "hotpath.py", []),
        Step("startup", "startup.py", ["--starts", "5"]),
        # 1,000,000 changes: 1,000 transactions of 1,000 rows over 200,000 rows.
        Step("throughput", "throughput.py", ["--txns", "1000", "--repeat", "3"]),
        Step("big_transaction", "big_transaction.py", []),
        Step("latency", "latency.py", []),
        Step("soak", "soak.py", ["--seconds", f"{soak_seconds:g}", "--interval", "5"]),
        Step("tls", "tls.py", ["--rounds", "3"]),
        Step("replicas", "replicas.py", []),
        Step("vanished_node", "vanished_node.py", []),
        Step("placement_drain", "placement_drain.py", []),
        # 1,000,000 changes through each of four readers, rounds rotating the order.
        Step("plugins", "plugins.py", ["--txns", "1000", "--repeat", "2", "--latency", "5000"]),
    ]


# --------------------------------------------------------------------------- other load


# --------------------------------------------------------------------------- running


def wait_quiet(watch: ForeignCpu, limit: float) -> float:
    """Wait (at most ``limit`` s) for 5 s in a row in which processes that are not ours,
    PostgreSQL and memcached included (ours are idle between steps), used < 0.1 core."""
    if limit <= 0:
        return 0.0
    started = time.perf_counter()
    watch.take()
    quiet_since = started
    while (now := time.perf_counter()) - started < limit:
        if now - quiet_since >= 5.0:
            break
        time.sleep(1.0)
        foreign, _ = watch.take()
        if sum(foreign.values()) > 0.1 * (time.perf_counter() - now):
            quiet_since = time.perf_counter()
    return time.perf_counter() - started


def run_step(
    step: Step, results: Path, log: Any, watch: ForeignCpu, quiet_limit: float = 0.0
) -> None:
    out = results / "raw" / f"{step.name}.json"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    argv = [sys.executable, str(BENCH / step.script), *step.args, "--json", str(out)]
    waited = ""
    if quiet_limit > 0:
        print(f"... waiting up to {quiet_limit:.0f}s for other processes to go quiet", flush=True)
        step.waited = wait_quiet(watch, quiet_limit)
        waited = f" (waited {step.waited:.0f}s for a quiet machine)"
    banner = f"==> [{time.strftime('%H:%M:%S')}] {step.name}: {' '.join(argv[1:])}{waited}"
    print(banner, flush=True)
    log.write(banner + "\n")
    watch.take()
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)
    code = proc.wait()
    step.seconds = time.perf_counter() - started
    foreign, postmasters = watch.take()
    step.foreign = dict(foreign)
    step.foreign["_postmasters"] = postmasters
    if code != 0:
        step.error = f"exit code {code}"
    elif not out.exists():
        step.error = "no JSON written"
    else:
        step.data = json.loads(out.read_text())
    end = f"<== {step.name}: {step.seconds:.0f}s" + (
        f", FAILED ({step.error})" if step.error else ""
    )
    print(end + "\n", flush=True)
    log.write(end + "\n\n")
    log.flush()


# --------------------------------------------------------------------------- the summary


def ms(value: float | None) -> str:
    if value is None:
        return "timeout"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def kb(value: float | None) -> str:
    return "?" if value is None else f"{value / 1024:,.0f}"


def yes(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


Row = list[str]


def throughput_rows(data: dict[str, Any]) -> list[Row]:
    m = data["median"]
    rounds = len(data["rounds"])
    label = (
        f"Backlog drain, changes/s ({data['changes']:,} changes,"
        f" {data['templates_per_row']} keys/row" + (f", median of {rounds})" if rounds > 1 else ")")
    )
    ratio = m["daemon_changes_per_s"] / m["recv_changes_per_s"]
    streaming = m["daemon_changes_per_s_after_ready"] / m["recv_changes_per_s"]
    return [
        [
            label + ", both from process start",
            fmt_int(m["daemon_changes_per_s"]),
            f"{fmt_int(m['recv_changes_per_s'])} (pg_recvlogical)",
            f"{ratio:.2f} (target ≥ {RATIO_TARGET})",
            yes(ratio >= RATIO_TARGET),
        ],
        [
            f"  same, the daemon timed from streaming (its {m['ready_s']:.2f} s start-up left"
            " out; pg_recvlogical's few ms are not)",
            fmt_int(m["daemon_changes_per_s_after_ready"]),
            f"{fmt_int(m['recv_changes_per_s'])} (pg_recvlogical)",
            f"{streaming:.2f} (target ≥ {RATIO_TARGET})",
            yes(streaming >= RATIO_TARGET),
        ],
        [
            "Daemon CPU per 1M changes (backlog drain)",
            f"{m['cpu_s_per_million']:.1f} s ({m['cpu_s_per_million_streaming']:.1f} s"
            " after start-up)",
            "-",
            f"target ≤ {CPU_TARGET_S:g} s",
            yes(m["cpu_s_per_million"] <= CPU_TARGET_S),
        ],
    ]


def latency_rows(data: dict[str, Any]) -> list[Row]:
    idle = data["idle"]
    rows = [
        [
            "Commit → key gone, idle: p50 / p99 ms",
            f"{ms(idle['p50_ms'])} / {ms(idle['p99_ms'])}",
            "-",
            "-",
            "-",
        ]
    ]
    refs = {r["rate"]: r for r in data.get("reference", [])}
    for phase in data["phases"]:
        rate = phase["rate"]
        tps = phase["pgbench"].get("tps")
        achieved = f"{tps:,.0f} achieved" if tps is not None else "tps unknown"
        ref = refs.get(rate)
        if ref is not None:
            reference = f"{ms(ref['p50_ms'])} / {ms(ref['p99_ms'])} (pg_recvlogical, measured)"
        elif rate in NOTES_REFERENCE:
            p50, p99 = NOTES_REFERENCE[rate]
            reference = f"{ms(p50)} / {ms(p99)} (NOTES.md reference, not measured here)"
        else:
            reference = "-"
        target = P99_TARGETS_MS.get(rate)
        p99 = phase["p99_ms"]
        ok = None if target is None else (p99 is not None and p99 <= target)
        rows.append(
            [
                f"Commit → key gone, {rate:,} tps ({achieved}): p50 / p99 ms",
                f"{ms(phase['p50_ms'])} / {ms(p99)}"
                + (f" ({phase['timeouts']} timeouts)" if phase["timeouts"] else ""),
                reference,
                f"target p99 ≤ {target:g} ms" if target is not None else "-",
                yes(ok),
            ]
        )
    if data["phases"]:
        rates = " / ".join(f"{p['rate'] // 1000:g}k" for p in data["phases"])
        rows.append(
            [
                f"Daemon CPU, % of one core, at {rates} tps (machine % busy)",
                " / ".join(
                    f"{p['daemon_cpu_percent']:.0f} ({p['machine_busy_percent']:.0f})"
                    for p in data["phases"]
                ),
                "-",
                "-",
                "-",
            ]
        )
    if data["phases"] and all("others" in p for p in data["phases"]):
        rates = " / ".join(f"{p['rate'] // 1000:g}k" for p in data["phases"])

        def cores(phase: dict[str, Any] | None) -> str:
            return "-" if phase is None else f"{phase['others']['other_cores']:.2f}"

        rows.append(
            [
                f"Other suites' CPU during the {rates} windows, cores (see note)",
                " / ".join(cores(p) for p in data["phases"]),
                " / ".join(cores(refs.get(p["rate"])) for p in data["phases"]),
                "-",
                "-",
            ]
        )
    for phase in data["phases"]:
        if phase["rate"] != LAG_RATE:
            continue
        lag = phase["lag"]
        wal = lag["wal_bytes_per_s"]
        limit = wal / 60 if wal is not None else None  # < 1 s of WAL lost per minute
        tps = phase["pgbench"].get("tps")
        achieved = f"{tps:,.0f} achieved" if tps is not None else "tps unknown"
        for which, label in (("slot", "server slot lag"), ("daemon", "daemon lag metric")):
            f = lag[which]
            slope = f["slope"]
            ok = None if slope is None or limit is None else slope <= limit
            rows.append(
                [
                    f"Lag, {LAG_RATE:,} tps ({achieved}), {lag['seconds']:.0f} s: {label}",
                    f"first {kb(f['first'])} / last {kb(f['last'])} / max {kb(f['max'])} KB;"
                    f" slope {kb(slope)} KB/s",
                    f"WAL written {kb(wal)} KB/s",
                    f"slope ≤ {kb(limit)} KB/s (1 s of WAL per min)",
                    yes(ok),
                ]
            )
    return rows


def soak_rows(data: dict[str, Any]) -> list[Row]:
    tps = data["pgbench"].get("tps")
    slope = data["steady_slope_mb_per_min"]
    return [
        [
            f"RSS, {data['seconds']:.0f} s soak at {data['rate']:,} tps ({tps:,.0f} achieved)",
            f"start {data['rss_start_mb']:.1f} / end {data['rss_end_mb']:.1f} / max"
            f" {data['rss_max_mb']:.1f} MB; slope {data['slope_mb_per_min']:.3f} MB/min"
            f" ({slope:.3f} after {data['warmup_s']:.0f} s)",
            "-",
            f"flat: ≤ {RSS_SLOPE_TARGET:g} MB/min after warm-up",
            yes(slope is not None and slope <= RSS_SLOPE_TARGET),
        ],
        [
            f"Daemon CPU at {data['rate']:,} tps (soak)",
            f"{data['cpu_percent']:.0f}% of one core",
            "-",
            "-",
            "-",
        ],
    ]


def big_rows(data: dict[str, Any]) -> list[Row]:
    return [
        [
            f"Peak RSS (VmHWM), one {data['rows']:,}-row transaction",
            f"{data['peak_hwm_mb']:.1f} MB ({data['baseline_rss_mb']:.1f} MB before)",
            "-",
            f"target ≤ {BIG_RSS_TARGET_MB:g} MB",
            yes(data["peak_hwm_mb"] <= BIG_RSS_TARGET_MB),
        ],
        [
            "  sampled keys still cached after it",
            f"{data['keys_left']:,} of {data['keys_sampled']:,}",
            "-",
            "target 0",
            yes(data["keys_left"] == 0),
        ],
    ]


def startup_rows(data: dict[str, Any]) -> list[Row]:
    n = len(data["ready_s"])
    return [
        [
            f"Start-up: process start → /readyz 200 ({n} starts)",
            f"median {data['median_s']:.2f} s, max {data['max_s']:.2f} s",
            "-",
            f"target < {STARTUP_TARGET_S:g} s (max)",
            yes(data["max_s"] < STARTUP_TARGET_S),
        ]
    ]


def placement_rows(data: dict[str, Any]) -> list[Row]:
    """One row per client: C keys/s (the hot path's), beside Python's and the library's."""
    rows: list[Row] = []
    for item in data["clients"]:
        c_rate, library = item["c_keys_per_s"], item["library_keys_per_s"]
        reference = f"Python {fmt_int(item['python_keys_per_s'])}; library " + (
            f"{fmt_int(library)}" if library is not None else item["library"]
        )
        rows.append(
            [
                f"Placement keys/s, {item['client']} ({data['nodes']} nodes, C; "
                f"{item['mismatches']} mismatches)",
                fmt_int(c_rate) if c_rate is not None else "- (every node)",
                reference,
                f"target {fmt_int(data['target_keys_per_s'])}",
                yes(
                    item["mismatches"] == 0
                    and (c_rate is None or c_rate >= data["target_keys_per_s"])
                ),
            ]
        )
    return rows


def placement_drain_rows(data: dict[str, Any]) -> list[Row]:
    """Each ketama pool's drain rate over the rendezvous pool's, same backlog, one run."""
    pools = data["pools"]
    reference = pools[0]
    return [
        [
            f"Drain changes/s, {p['pool']} pool ({fmt_int(data['changes'])} changes)",
            fmt_int(p["median_changes_per_s"]),
            f"{fmt_int(reference['median_changes_per_s'])} ({reference['pool']})",
            f"{p['ratio_to_rendezvous']:.2f} (target >= {data['target_ratio']:g})",
            yes(p["ratio_to_rendezvous"] >= data["target_ratio"]),
        ]
        for p in pools[1:]
    ]


def hotpath_rows(data: dict[str, Any]) -> list[Row]:
    return [
        [
            f"Decode -> keys -> node -> requests, us/change (C decoder; {fmt_int(data['changes'])}"
            " UPDATEs, no I/O)",
            f"{data['c_us']:.2f}",
            f"{data['plan_us']:.2f} (plan(), the specification)",
            f"{data['plan_us'] / data['c_us']:.1f}x",
            yes(bool(data["same"])),
        ]
    ]


def tls_rows(data: dict[str, Any]) -> list[Row]:
    """TLS to memcached against plaintext, measured side by side by bench/tls.py."""

    def median(side: str, key: str) -> float:
        return float(statistics.median(data[side][key]))

    rows: list[Row] = []
    for key, label, digits in (
        ("daemon_changes_per_s", "TLS: drain changes/s (TLS vs plaintext nodes)", 0),
        ("cpu_s_per_million_streaming", "TLS: daemon CPU s per 1M changes (streaming)", 2),
        ("load_p50_ms", "TLS: commit -> key gone at 5,000 tps, p50 ms", 2),
        ("load_p99_ms", "TLS: commit -> key gone at 5,000 tps, p99 ms", 2),
    ):
        plain, tls = median("plaintext", key), median("tls", key)
        ratio = f"{tls / plain:.2f}x" if plain else "-"
        rows.append(
            [label, fmt_num(tls, digits), f"{fmt_num(plain, digits)} (plaintext)", ratio, "-"]
        )
    return rows


def replica_rows(data: dict[str, Any]) -> list[Row]:
    """Replica-aware invalidation against plain deletes, same load, by bench/replicas.py."""
    modes = {m["mode"]: m for m in data["modes"]}
    plain, hold = modes["no replicas"], modes["hold"]
    delay = data["delay_ms"]
    return [
        [
            f"replicas: commit -> key gone p50/p99 ms (standby {delay} ms behind)",
            f"{fmt_num(hold['gone']['p50_ms'], 1)} / {fmt_num(hold['gone']['p99_ms'], 1)}",
            f"{fmt_num(plain['gone']['p50_ms'], 1)} / {fmt_num(plain['gone']['p99_ms'], 1)}"
            " (no replicas)",
            "after replay",
            yes(hold["gone"]["p50_ms"] >= hold["replayed"]["p50_ms"]),
        ],
        [
            "replicas: commit -> standby replayed p50/p99 ms",
            f"{fmt_num(hold['replayed']['p50_ms'], 1)} / {fmt_num(hold['replayed']['p99_ms'], 1)}",
            "-",
            "-",
            "-",
        ],
        [
            "replicas: keys holding an old row after the writes",
            f"{hold['stale']} / {hold['cached']}",
            f"{plain['stale']} / {plain['cached']} (no replicas)",
            "0",
            yes(hold["stale"] == 0),
        ],
    ]


def vanished_rows(data: dict[str, Any]) -> list[Row]:
    """Healthy nodes' latency with a fourth node whose name does not resolve, by
    bench/vanished_node.py (four real nodes as the reference, same run)."""
    runs = {r["mode"]: r["latency"] for r in data["runs"]}
    base, vanished = runs["4 nodes"], runs["1 unresolvable"]
    return [
        [
            f"one unresolvable node: healthy keys gone p{q} ms ({data['rate']} tps)",
            fmt_num(vanished[f"p{q}_ms"]),
            f"{fmt_num(base[f'p{q}_ms'])} (4 real nodes)",
            f"{vanished[f'p{q}_ms'] / base[f'p{q}_ms']:.2f}x",
            "-",
        ]
        for q in (50, 99)
    ]


def plugins_rows(data: dict[str, Any]) -> list[Row]:
    """wal2json against pgoutput on one WAL (bench/plugins.py): drains and walsender CPU."""
    rate = data["changes_per_s"]
    cpu = data["walsender_cpu_s_per_million"]
    ratio = rate["daemon-pgoutput"] / rate["recv-pgoutput"]
    return [
        [
            "pgoutput: daemon drain changes/s",
            fmt_int(rate["daemon-pgoutput"]),
            f"{fmt_int(rate['recv-pgoutput'])} (pg_recvlogical pgoutput)",
            f"{ratio:.2f}x (target {RATIO_TARGET})",
            yes(ratio >= RATIO_TARGET),
        ],
        [
            "pgoutput: daemon drain vs the daemon on wal2json",
            fmt_int(rate["daemon-pgoutput"]),
            f"{fmt_int(rate['daemon-wal2json'])} (daemon wal2json)",
            f"{rate['daemon-pgoutput'] / rate['daemon-wal2json']:.2f}x",
            "-",
        ],
        [
            "walsender CPU s per 1M changes, pgoutput (pg_recvlogical)",
            fmt_num(cpu["recv-pgoutput"], 2),
            f"{fmt_num(cpu['recv-wal2json'], 2)} (wal2json)",
            f"{cpu['recv-pgoutput'] / cpu['recv-wal2json']:.2f}x",
            "-",
        ],
        [
            "walsender CPU s per 1M changes, pgoutput (daemon)",
            fmt_num(cpu["daemon-pgoutput"], 2),
            f"{fmt_num(cpu['daemon-wal2json'], 2)} (wal2json)",
            f"{cpu['daemon-pgoutput'] / cpu['daemon-wal2json']:.2f}x",
            "-",
        ],
    ] + [
        [
            f"pgoutput: commit -> key gone at {data['latency_rate']:,} tps, {q} ms",
            fmt_num(data["latency"]["pgoutput"][f"{q}_ms"], 2),
            f"{fmt_num(data['latency']['wal2json'][f'{q}_ms'], 2)} (wal2json)",
            "-",
            "-",
        ]
        for q in ("p50", "p99")
        if data.get("latency")
    ]


BUILDERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "throughput": throughput_rows,
    "latency": latency_rows,
    "soak": soak_rows,
    "big_transaction": big_rows,
    "startup": startup_rows,
    "placement": placement_rows,
    "hotpath": hotpath_rows,
    "tls": tls_rows,
    "replicas": replica_rows,
    "vanished_node": vanished_rows,
    "placement_drain": placement_drain_rows,
    "plugins": plugins_rows,
}
ORDER = [
    "throughput",
    "latency",
    "soak",
    "big_transaction",
    "startup",
    "placement",
    "hotpath",
    "tls",
    "replicas",
    "vanished_node",
    "placement_drain",
    "plugins",
]
HEADERS = ["figure", "ours", "reference", "ratio or target", "met?"]


def summary_rows(done: dict[str, Step]) -> list[Row]:
    rows: list[Row] = []
    for name in ORDER:
        step = done.get(name)
        if step is None:
            continue
        if step.data is None:
            rows.append([f"{name}: FAILED ({step.error})", "-", "-", "-", "NO"])
            continue
        try:
            rows.extend(BUILDERS[name](step.data))
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            rows.append([f"{name}: figures unreadable ({exc!r})", "-", "-", "-", "NO"])
    return rows


# --------------------------------------------------------------------------- files


def git_state() -> str:
    def git(*argv: str) -> str:
        proc = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "invalidator")
    return head + (" + uncommitted changes in invalidator/" if dirty else "")


def code_state(start: str, end: str) -> str:
    """The code measured; says so when invalidator/ changed while the benchmarks ran."""
    if start == end:
        return start
    return f"{start} at the start, {end} at the end (invalidator/ changed during the run)"


def machine_description(done: dict[str, Step]) -> list[str]:
    for step in done.values():
        if step.data and step.data.get("machine"):
            lines = [
                line
                for line in step.data["machine"]
                if not line.startswith("load average")  # per step, below
            ]
            break
    else:
        lines = [f"machine: {platform.platform()}, nproc {os.cpu_count()}"]
    with contextlib.suppress(OSError, ValueError, IndexError):
        for text in Path("/proc/meminfo").read_text().splitlines():
            if text.startswith("MemTotal:"):
                lines.append(f"memory: {int(text.split()[1]) / 1024 / 1024:.1f} GiB")
    return lines


def contention_lines(done: dict[str, Step]) -> list[str]:
    lines = []
    for step in done.values():
        foreign = {k: v for k, v in step.foreign.items() if not k.startswith("_")}
        services = foreign.pop("services", 0.0)
        other = sum(foreign.values())
        top = ", ".join(
            f"{name} {cpu:.1f}" for name, cpu in sorted(foreign.items(), key=lambda kv: -kv[1])[:3]
        )
        clusters = int(step.foreign.get("_postmasters", 0))
        lines.append(
            f"{step.name} ({step.seconds:.0f} s, after waiting {step.waited:.0f} s for quiet):"
            f" other processes used {other:.1f} CPU-s"
            f" ({other / max(step.seconds, 1e-9):.2f} cores on average)"
            + (f" [{top}]" if top else "")
            + f"; PostgreSQL/memcached (this run's and others') {services:.1f} CPU-s;"
            f" PostgreSQL clusters seen at once: {clusters}"
        )
    return lines


def noisy(done: dict[str, Step]) -> bool:
    for step in done.values():
        other = sum(v for k, v in step.foreign.items() if not k.startswith("_") and k != "services")
        if step.seconds and other / step.seconds > 0.1:
            return True
    return False


def command_line() -> str:
    if not sys.argv[1:]:
        return "`make bench` (`python bench/report.py`)"
    return "`python bench/report.py " + " ".join(sys.argv[1:]) + "`"


def markdown(rows: list[Row], done: dict[str, Step], run: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    when, total, command = run["when"], run["total_s"], run["command"]
    out = [
        "# pg-cache-invalidator: benchmark summary",
        "",
        f"- date: {when} (total {total / 60:.1f} min)",
        f"- command: {command}"
        + (" (quick smoke run: short phases, few samples)" if run["quick"] else ""),
        f"- code: {run['code']}",
    ]
    out += [f"- {line}" for line in machine_description(done)]
    out += [
        "- three memcached nodes, PostgreSQL, pgbench, the daemon and the probes share the same"
        " cores: figures under load include CPU contention",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|",
    ]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    out += [
        "",
        "How each figure is measured (`bench/*.py`, one subprocess each):",
        "",
        "- backlog drain: the same committed WAL read from process start by `pg_recvlogical`"
        " (to /dev/null) and by the daemon (until its slot's confirmed_flush_lsn reaches the"
        " end, i.e. every delete acknowledged by memcached); `bench/throughput.py`.",
        "- commit → key gone: a cache-aside client sets `user:{id}`, commits a one-row UPDATE,"
        " then polls the owning node (TCP_NODELAY, replies awaited) until the key is gone"
        " (back to back for 1 ms, then pauses of 2% of the elapsed time, at most 2 ms);"
        " pgbench drives single-row UPDATEs on other rows at the offered rate (`-c 4 -j 2 -R`)."
        " The measured reference is `pg_recvlogical` on a second slot with the daemon stopped,"
        " same load: commit returned → the row's line read from its stdout (it can be negative:"
        " the walsender may send the change before the client sees its commit return);"
        " `bench/latency.py`.",
        "- lag: both lags sampled every second while the probe runs; slope by least squares;"
        " bounded means the daemon falls behind by less than one second's worth of WAL per"
        " minute. The daemon's metric subtracts its confirmed position from a server WAL"
        " position read once a second, so it reads low by up to a second of WAL.",
        "- daemon CPU: utime+stime of the daemon process over the sampling window; machine % busy"
        " is /proc/stat over all cores.",
        "- other suites' CPU: CPU used by processes that are neither this run's nor PostgreSQL/"
        "memcached, over each latency window (daemon / pg_recvlogical). This machine is shared"
        " with other test runs; anything above ~0.1 core makes the tail latencies suspect.",
        "- soak: VmRSS of the daemon every 5 s under pgbench at 5,000 tps; `bench/soak.py`.",
        "- one large transaction: VmHWM (the process's peak RSS) after a single UPDATE of every"
        " row of a 1,000,000-row table; `bench/big_transaction.py`.",
        "- start-up: process start → /readyz answers 200 (polled every 10 ms), idle database;"
        " `bench/startup.py`.",
        "",
        "Other activity on the machine during each step (a watcher sampling /proc every second):",
        "",
    ]
    out += [f"- {line}" for line in contention_lines(done)]
    if noisy(done):
        out += [
            "",
            "**Warning:** other processes used more than 0.1 core during some of these steps:"
            " latency, lag and throughput figures from them include that contention.",
        ]
    out += ["", "![latency percentiles against load](latency.png)", ""]
    return "\n".join(out)


def plot(latency: dict[str, Any] | None, path: Path, when: str) -> str:
    """Draw latency.png; a message saying what was done (or why not)."""
    if latency is None:
        return f"{path}: not drawn (the latency step produced no figures)"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"{path}: not drawn: matplotlib is not installed (.venv/bin/pip install matplotlib)"
    floor = 0.01  # ms: log scale; values at or below zero are drawn here

    def clamp(values: list[float | None]) -> list[float]:
        return [max(floor, v) if v is not None else math.nan for v in values]

    colours = {"p50": "tab:blue", "p90": "tab:green", "p99": "tab:orange", "max": "tab:red"}
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    phases = [latency["idle"], *latency["phases"]]
    xs = [p["rate"] for p in phases]
    for q, colour in colours.items():
        ax.plot(xs, clamp([p[f"{q}_ms"] for p in phases]), "o-", color=colour, label=f"ours {q}")
    refs = latency.get("reference") or []
    if refs:
        rx = [r["rate"] for r in refs]
        for q, colour in colours.items():
            ax.plot(
                rx,
                clamp([r[f"{q}_ms"] for r in refs]),
                "s--",
                color=colour,
                mfc="none",
                alpha=0.8,
                label=f"pg_recvlogical {q} (measured)",
            )
    nx = sorted(NOTES_REFERENCE)
    ax.plot(
        nx,
        [NOTES_REFERENCE[x][0] for x in nx],
        "x",
        color="grey",
        ms=8,
        label="pg_recvlogical p50 (NOTES.md)",
    )
    ax.plot(
        nx,
        [NOTES_REFERENCE[x][1] for x in nx],
        "+",
        color="black",
        ms=10,
        label="pg_recvlogical p99 (NOTES.md)",
    )
    tx = sorted(P99_TARGETS_MS)
    ax.plot(tx, [P99_TARGETS_MS[x] for x in tx], "v", color="darkred", ms=10, label="target p99")
    for p in latency["phases"]:
        tps = p["pgbench"].get("tps")
        if tps is not None and abs(tps - p["rate"]) > 0.02 * p["rate"]:
            ax.annotate(
                f"achieved {tps:,.0f} tps",
                (p["rate"], floor * 3),
                ha="right" if p["rate"] == max(xs) else "center",
                fontsize=8,
                color="dimgrey",
            )
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("offered load, single-row UPDATE tps (pgbench -R; 0 = idle)")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_title(
        f"commit → key gone (ours) vs commit → change received (pg_recvlogical)\n{when}",
        fontsize=10,
    )
    ticks = sorted({0, *xs, *(r["rate"] for r in refs)})
    ax.set_xticks(ticks, ["idle" if t == 0 else f"{t:,}" for t in ticks])
    if any(r[f"{q}_ms"] is not None and r[f"{q}_ms"] <= floor for r in refs for q in colours):
        ax.text(
            0.99,
            0.01,
            f"values ≤ {floor:g} ms (incl. negative: change read before the commit returned)"
            f" drawn at {floor:g} ms",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="dimgrey",
        )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"{path}: drawn"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~5 min)")
    parser.add_argument(
        "--soak-seconds", type=float, default=None, help="soak length (default 600, quick 30)"
    )
    parser.add_argument("--only", default="", help="comma-separated steps to run (default all)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each step, wait up to this many seconds for other processes (other test"
        " suites on the same cores) to go quiet; 0: never (default 45, quick 15)",
    )
    parser.add_argument(
        "--results", type=Path, default=BENCH / "results", help="where the files go"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: rewrite the table, latest.md and latency.png from latest.json",
    )
    args = parser.parse_args()
    if args.render_only:
        saved = json.loads((args.results / "latest.json").read_text())
        loaded = {
            name: Step(
                name,
                f"{name}.py",
                v["args"],
                v["figures"],
                v["error"],
                v["seconds"],
                v["foreign_cpu"],
                v.get("waited", 0.0),
            )
            for name, v in saved["steps"].items()
        }
        finish(loaded, saved["run"], args.results)
        return
    soak = args.soak_seconds if args.soak_seconds is not None else (30.0 if args.quick else 600.0)
    quiet_limit = args.quiet_wait if args.quiet_wait is not None else (15.0 if args.quick else 45.0)
    plan = steps(args.quick, soak)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {s.name for s in plan}
        if unknown:
            parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
        plan = [s for s in plan if s.name in wanted]

    results: Path = args.results
    (results / "raw").mkdir(parents=True, exist_ok=True)
    watch = ForeignCpu()
    watch.start()
    code_at_start = git_state()
    started = time.perf_counter()
    done: dict[str, Step] = {}
    with (results / "latest.log").open("w") as log:
        for step in plan:
            quiet = 0 if step.name in ("placement", "hotpath") else quiet_limit
            run_step(step, results, log, watch, quiet)
            done[step.name] = step
    watch.stop()
    run = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "total_s": time.perf_counter() - started,
        "quick": args.quick,
        "command": command_line(),
        "code": code_state(code_at_start, git_state()),
    }
    steps_json = {
        name: {
            "args": s.args,
            "seconds": s.seconds,
            "waited": s.waited,
            "error": s.error,
            "foreign_cpu": s.foreign,
            "figures": s.data,
        }
        for name, s in done.items()
    }
    (results / "latest.json").write_text(
        json.dumps({"run": run, "steps": steps_json}, indent=1) + "\n"
    )
    finish(done, run, results)


def finish(done: dict[str, Step], run: dict[str, Any], results: Path) -> None:
    """Print the summary; write latest.md and latency.png."""
    when, total = run["when"], run["total_s"]
    rows = summary_rows(done)
    print(f"Summary ({when}, {total / 60:.1f} min" + (", quick run)" if run["quick"] else ")"))
    print_table(HEADERS, rows)
    print()
    for line in contention_lines(done):
        print("other activity: " + line)
    if noisy(done):
        print("WARNING: other processes used > 0.1 core during some steps: figures are suspect")
    (results / "latest.md").write_text(markdown(rows, done, run))
    latency = done.get("latency")
    print(plot(latency.data if latency else None, results / "latency.png", when))
    print(f"{results / 'latest.md'}, {results / 'latest.json'}, {results / 'latest.log'}: written")
    if any(s.error for s in done.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
