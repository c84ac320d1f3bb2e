"""An old commit vs the current working tree, measured side by side in one run.

Machines of the same kind differ up to 2x in absolute speed, so figures from different
runs cannot be compared. This script checks out ``--base`` in a temporary git worktree,
builds a virtualenv for it (``pip install -e '<tree>[dev]'``, which compiles its C
extension), then alternates rounds on this machine — old then new, new then old, ... —
each round running, in each tree, with that tree's own virtualenv and scripts:

* ``bench/throughput.py`` (backlog drain; the daemon vs ``pg_recvlogical`` in the same run):
  drain changes/s from process start, its ratio to ``pg_recvlogical``, daemon CPU seconds
  per 1M changes;
* ``bench/latency.py --rates 5000 --no-reference``: commit -> key gone p50/p99 under
  ``pgbench -R 5000`` (and the pgbench rate actually reached).

It prints one table — medians over rounds for old and new and new/old ratios — and writes
it as markdown and JSON (``--out``, default ``bench/results/compare.{md,json}``); each
run's JSON and log stay under ``bench/results/raw/compare/``. The temporary worktree and its
virtualenv are removed at the end, failures and SIGTERM included (unless ``--keep``).
Figures only, never assertions.

Usage: python bench/compare.py [--base 721c105] [--rounds 3] [--quick]
       [--throughput-args "..."] [--latency-args "..."]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "721c105"  # the commit before the core/sources/sinks restructuring

THROUGHPUT = {
    "full": ["--txns", "500", "--txn-rows", "1000", "--repeat", "1"],
    "quick": ["--rows", "50000", "--txns", "50", "--txn-rows", "1000", "--repeat", "1"],
}
LATENCY = {
    "full": ["--rates", "5000", "--no-reference", "--samples", "400", "--load-seconds", "15"],
    "quick": ["--rates", "5000", "--no-reference", "--samples", "100", "--load-seconds", "4"],
}
RUN_TIMEOUT = 1800.0  # seconds for one script run


class CompareError(RuntimeError):
    """A tree could not be built or one of its benchmark runs failed."""


@dataclass(frozen=True)
class Figure:
    """One row of the table: where it comes from in a script's JSON."""

    key: str
    label: str
    script: str  # throughput | latency
    better: str  # higher | lower
    get: Callable[[dict[str, Any]], float | None]
    digits: int = 2


def _field(data: dict[str, Any], *path: str) -> Any:
    """``data[path[0]][path[1]]...`` with an error naming what the JSON has instead."""
    node: Any = data
    for i, name in enumerate(path):
        if not isinstance(node, dict) or name not in node:
            have = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise CompareError(f"JSON has no {'.'.join(path[: i + 1])!r} (has: {have})")
        node = node[name]
    return node


def _throughput(name: str) -> Callable[[dict[str, Any]], float | None]:
    # throughput.py: "median" over its own --repeat rounds (one round here).
    return lambda data: _field(data, "median", name)


def _phase_5k(data: dict[str, Any]) -> dict[str, Any]:
    for phase in _field(data, "phases"):
        if phase.get("rate") == 5000:
            return phase  # type: ignore[no-any-return]
    raise CompareError("latency JSON has no phase at rate 5000")


def _latency(*path: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda data: _field(_phase_5k(data), *path)


FIGURES = [
    Figure(
        "drain_changes_per_s",
        "drain: daemon changes/s (from process start)",
        "throughput",
        "higher",
        _throughput("daemon_changes_per_s"),
        0,
    ),
    Figure(
        "recv_changes_per_s",
        "drain: pg_recvlogical changes/s (same run)",
        "throughput",
        "higher",
        _throughput("recv_changes_per_s"),
        0,
    ),
    Figure(
        "drain_ratio_to_recvlogical",
        "drain: daemon / pg_recvlogical",
        "throughput",
        "higher",
        _throughput("ratio"),
    ),
    Figure(
        "drain_changes_per_s_after_ready",
        "  same, from /readyz=200",
        "throughput",
        "higher",
        _throughput("daemon_changes_per_s_after_ready"),
        0,
    ),
    Figure(
        "ready_s", "daemon start-up to /readyz=200 s", "throughput", "lower", _throughput("ready_s")
    ),
    Figure(
        "cpu_s_per_million",
        "daemon CPU s per 1M changes",
        "throughput",
        "lower",
        _throughput("cpu_s_per_million"),
    ),
    Figure(
        "cpu_s_per_million_streaming",
        "  same, start-up CPU excluded",
        "throughput",
        "lower",
        _throughput("cpu_s_per_million_streaming"),
    ),
    Figure(
        "p50_ms_5k", "5k tps: p50 ms (commit -> key gone)", "latency", "lower", _latency("p50_ms")
    ),
    Figure("p99_ms_5k", "5k tps: p99 ms", "latency", "lower", _latency("p99_ms")),
    Figure(
        "pgbench_tps_5k",
        "5k tps: pgbench tps reached",
        "latency",
        "higher",
        _latency("pgbench", "tps"),
        0,
    ),
    Figure(
        "daemon_cpu_percent_5k",
        "5k tps: daemon CPU % of one core",
        "latency",
        "lower",
        _latency("daemon_cpu_percent"),
        0,
    ),
]


@dataclass
class Tree:
    """A source tree, the python of its virtualenv, and what each of its runs gave."""

    label: str  # old | new
    root: Path
    python: Path
    revision: str
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- processes


class Terminated(Exception):
    """SIGTERM arrived: clean up and exit."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def git(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.rstrip("\n")


def child_env(python: Path) -> dict[str, str]:
    """Our environment, without anything that would point a tree at the other's code."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_logged(argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """Run ``argv`` with its output in ``log``; on failure raise with the log's tail."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            code = proc.wait(timeout=RUN_TIMEOUT)
        except BaseException:
            # Ours to stop: SIGTERM lets a bench script tear its services down first.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise CompareError(
            f"{shlex.join(argv)} exited with {code} (log: {log}):\n" + "\n".join(tail)
        )


@contextlib.contextmanager
def old_tree(base: str, keep: bool, raw: Path) -> Iterator[Tree]:
    """``base`` checked out in a temporary worktree with its own built virtualenv."""
    revision = git("rev-parse", "--verify", f"{base}^{{commit}}").strip()
    scratch = Path(tempfile.mkdtemp(prefix="pgci-compare-"))
    tree = scratch / "tree"
    venv = scratch / "venv"
    added = False
    try:
        git("worktree", "add", "--detach", str(tree), revision)
        added = True
        started = time.perf_counter()
        print(f"building {base} ({revision[:12]}) in {tree} ...", flush=True)
        env = child_env(venv / "bin" / "python")
        log = raw / "build-old.log"
        run_logged([sys.executable, "-m", "venv", str(venv)], scratch, env, log)
        run_logged(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-e",
                f"{tree}[dev]",
            ],
            tree,
            env,
            log,
        )
        print(f"built in {time.perf_counter() - started:.0f}s", flush=True)
        yield Tree("old", tree, venv / "bin" / "python", revision)
    finally:
        if keep:
            print(f"kept {scratch} (remove with: git worktree remove --force {tree})")
        else:
            if added:
                try:
                    git("worktree", "remove", "--force", str(tree))
                except CompareError as exc:
                    print(f"warning: {exc}; `git worktree prune` forgets it", file=sys.stderr)
            shutil.rmtree(scratch, ignore_errors=True)


def current_tree() -> Tree:
    revision = git("rev-parse", "HEAD").strip()
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    files = ", ".join(line[3:] for line in changed)
    label = f"{revision}{f' + uncommitted changes to {files}' if changed else ''}"
    return Tree("new", ROOT, Path(sys.executable), label)


def run_script(
    tree: Tree, script: str, args: Sequence[str], raw: Path, round_no: int
) -> dict[str, Any]:
    out = raw / f"{script}-{tree.label}-{round_no}.json"
    log = raw / f"{script}-{tree.label}-{round_no}.log"
    argv = [str(tree.python), str(tree.root / "bench" / f"{script}.py"), *args, "--json", str(out)]
    started = time.perf_counter()
    print(f"  round {round_no} {tree.label}: {script}.py ...", end="", flush=True)
    try:
        run_logged(argv, tree.root, child_env(tree.python), log)
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" {time.perf_counter() - started:.0f}s", flush=True)
    data: dict[str, Any] = json.loads(out.read_text())
    tree.runs.setdefault(script, []).append(data)
    return data


# --------------------------------------------------------------------------- figures


def values(tree: Tree, figure: Figure) -> list[float | None]:
    return [figure.get(data) for data in tree.runs.get(figure.script, [])]


def median(xs: Sequence[float | None]) -> float | None:
    finite = [x for x in xs if x is not None]
    return statistics.median(finite) if finite and len(finite) == len(xs) else None


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def summary(old: Tree, new: Tree) -> list[dict[str, Any]]:
    rows = []
    for figure in FIGURES:
        o, n = values(old, figure), values(new, figure)
        mo, mn = median(o), median(n)
        paired = [b / a for a, b in zip(o, n, strict=True) if a and b is not None]
        rows.append(
            {
                "figure": figure.key,
                "label": figure.label,
                "better": figure.better,
                "digits": figure.digits,
                "old_rounds": o,
                "new_rounds": n,
                "old": mo,
                "new": mn,
                "new_over_old": mn / mo if mo and mn is not None else None,
                "new_over_old_rounds": paired,
                "new_over_old_paired_median": statistics.median(paired) if paired else None,
            }
        )
    return rows


def notes(tree: Tree) -> list[str]:
    """What a run reported that makes its figures suspect."""
    found = []
    for i, data in enumerate(tree.runs.get("throughput", []), 1):
        for r in data.get("rounds", []):
            changes = data.get("changes")
            for name, bad in (
                ("memcached_errors", r.get("memcached_errors")),
                ("unbuildable", r.get("unbuildable")),
                ("exit_code", r.get("exit_code")),
            ):
                if bad:
                    found.append(f"{tree.label} throughput round {i}: {name} = {bad}")
            if changes is not None and r.get("changes_seen") != changes:
                found.append(
                    f"{tree.label} throughput round {i}: the daemon's changes_total read"
                    f" {r.get('changes_seen') or 0:,.0f} of {changes:,} changes at the end"
                )
    for i, data in enumerate(tree.runs.get("latency", []), 1):
        if data.get("exit_code"):
            found.append(f"{tree.label} latency round {i}: daemon exit code {data['exit_code']}")
        with contextlib.suppress(CompareError):
            phase = _phase_5k(data)
            if phase.get("timeouts"):
                found.append(f"{tree.label} latency round {i}: {phase['timeouts']} probe timeouts")
    return found


def table_lines(rows: list[dict[str, Any]], markdown: bool) -> list[str]:
    head = ["figure", "old", "new", "new/old", "better if", "new/old per round", "median"]
    body = [
        [
            r["label"].strip() if markdown else r["label"],
            fmt(r["old"], r["digits"]),
            fmt(r["new"], r["digits"]),
            fmt(r["new_over_old"], 2) + ("x" if r["new_over_old"] is not None else ""),
            r["better"],
            " ".join(f"{x:.2f}" for x in r["new_over_old_rounds"]) or "-",
            fmt(r["new_over_old_paired_median"], 2),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 6) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return lines
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(head, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for cells in body:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return lines


def machine_line() -> str:
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.uname().nodename}, {len(os.sched_getaffinity(0))} cores, load average {load}"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="the old revision")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small runs: a smoke test")
    parser.add_argument(
        "--throughput-args",
        help='arguments for both trees\' throughput.py (write --throughput-args="...")',
    )
    parser.add_argument("--latency-args", help="arguments for both trees' latency.py")
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "results" / "compare"), help="writes OUT.md/.json"
    )
    parser.add_argument("--keep", action="store_true", help="keep the old worktree and venv")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    throughput_args = (
        shlex.split(args.throughput_args) if args.throughput_args else THROUGHPUT[mode]
    )
    latency_args = shlex.split(args.latency_args) if args.latency_args else LATENCY[mode]
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = ROOT / "bench" / "results" / "raw" / "compare" / stamp
    raw.mkdir(parents=True, exist_ok=True)
    before = machine_line()
    started = time.perf_counter()
    new = current_tree()
    try:
        with old_tree(args.base, args.keep, raw) as old:
            print(f"old: {args.base} = {old.revision}")
            print(f"new: working tree {ROOT} at {new.revision}")
            print(f"throughput.py {shlex.join(throughput_args)}")
            print(f"latency.py {shlex.join(latency_args)}")
            print(f"{rounds} round(s), alternating which tree goes first; raw results in {raw}")
            for r in range(1, rounds + 1):
                order = (old, new) if r % 2 == 1 else (new, old)
                for tree in order:
                    run_script(tree, "throughput", throughput_args, raw, r)
                for tree in order:
                    run_script(tree, "latency", latency_args, raw, r)
    except (CompareError, Terminated, KeyboardInterrupt) as exc:
        raise SystemExit(f"bench/compare.py: {exc}") from None

    rows = summary(old, new)
    warnings = notes(old) + notes(new)
    elapsed = time.perf_counter() - started
    header = [
        f"old: {args.base} ({old.revision}); new: working tree at {new.revision}",
        f"{rounds} round(s) of throughput.py {shlex.join(throughput_args)} and latency.py"
        f" {shlex.join(latency_args)}, each tree with its own virtualenv, alternating order;"
        " medians over rounds; new/old is the ratio of the medians; 'new/old per round'"
        " pairs the two trees' runs of each round, 'median' is the median of those pairs",
        f"machine: {before} at the start, {machine_line()} at the end; {elapsed / 60:.1f} min",
    ]
    print()
    for line in header:
        print(line)
    print()
    for line in table_lines(rows, markdown=False):
        print(line)
    for warning in warnings:
        print(f"warning: {warning}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = ["# Old vs new, one run", "", *(f"- {line}" for line in header), ""]
    md += table_lines(rows, markdown=True)
    md += ["", *(f"- warning: {w}" for w in warnings)] if warnings else []
    md += ["", f"Raw JSON and logs: `{raw.relative_to(ROOT)}`", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "base": args.base,
                "old_revision": old.revision,
                "new_revision": new.revision,
                "rounds": rounds,
                "throughput_args": throughput_args,
                "latency_args": latency_args,
                "machine": header[2],
                "figures": rows,
                "warnings": warnings,
                "raw": str(raw),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written: {out.with_suffix('.md')}, {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
