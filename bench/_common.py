"""Shared helpers for the bench scripts that run the daemon against real services.

``Bench`` starts a throwaway PostgreSQL cluster (wal2json) and memcached nodes through
``tests/services.py`` and tears everything down on exit, errors and SIGTERM included.
``DaemonProcess`` is tests/daemon_process.py's wrapper (``python -m invalidator run`` as a
real subprocess, read from outside: /readyz, /metrics, /proc/<pid>/{stat,status}) with the
bench's config and habits. Benchmarks print figures; they never assert timings.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from invalidator.core.changes import int_to_lsn, lsn_to_int  # noqa: E402
from tests import daemon_process  # noqa: E402
from tests.daemon_process import DaemonError, write_config  # noqa: E402
from tests.services import (  # noqa: E402
    MemcachedPool,
    PostgresCluster,
    TlsFiles,
    clean_env,
    exit_on_sigterm,
    free_port,
)
from tests.stats import latency_stats, percentile, slope  # noqa: E402

# Scripts written against this module import these from here; their homes are
# invalidator/core/changes.py, tests/services.py and tests/stats.py.
client_env = clean_env

__all__ = [
    "ROOT",
    "Bench",
    "BenchError",
    "DaemonProcess",
    "ForeignCpu",
    "LagSampler",
    "Pgbench",
    "RssSampler",
    "busy_percent",
    "client_env",
    "cpu_times",
    "fmt_breakdown",
    "fmt_int",
    "fmt_num",
    "int_to_lsn",
    "lag_summary",
    "latency_stats",
    "load",
    "lsn_to_int",
    "machine_lines",
    "parse_pgbench",
    "percentile",
    "print_table",
    "slope",
    "slot_confirmed",
    "slot_lag",
    "wait_confirmed",
    "write_json",
]


class BenchError(RuntimeError):
    """The benchmark could not run (a service or the daemon misbehaved)."""


# --------------------------------------------------------------------------- small helpers


def _plain(value: Any) -> Any:
    """JSON-safe copy: nan and inf become None (json.dumps would write NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str] | None, data: dict[str, Any]) -> None:
    """Write a script's figures for bench/report.py (nothing when ``path`` is None)."""
    if path is None:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_plain(data), indent=1) + "\n")


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def fmt_num(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(fields)  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time (all cores) spent busy between two cpu_times()."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else float("nan")


def load() -> str:
    """/proc/loadavg's 1/5/15-minute figures (the machine may be shared)."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def fmt_breakdown(totals: dict[str, float]) -> str:
    """{"ok": 3, "not_found": 5} -> "not_found 5, ok 3" (empty: "-")."""
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(totals.items())) or "-"


def machine_lines(cluster: PostgresCluster | None = None) -> list[str]:
    nproc = len(os.sched_getaffinity(0))
    lines = [
        f"machine: {platform.platform()}, nproc {nproc} ({_cpu_model()}), "
        f"{platform.python_implementation()} {platform.python_version()}"
    ]
    lines.append(f"load average before start (1/5/15 min, other sessions included): {load()}")
    if cluster is not None:
        version = cluster.execute("SHOW server_version")[0][0]
        lines.append(
            f"services: PostgreSQL {version} (wal2json, fsync=off, on 127.0.0.1), "
            "memcached x3 (-t 1), all sharing the same cores"
        )
    return lines


# --------------------------------------------------------------------------- slots


def slot_lag(conn: psycopg.Connection[Any], slot: str) -> tuple[int, int | None]:
    """(pg_current_wal_lsn(), that minus the slot's confirmed_flush_lsn) in bytes."""
    row = conn.execute(
        "SELECT pg_current_wal_lsn()::text,"
        " (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
        "  FROM pg_replication_slots WHERE slot_name = %s)",
        [slot],
    ).fetchone()
    assert row is not None
    return lsn_to_int(row[0]), (int(row[1]) if row[1] is not None else None)


def slot_confirmed(conn: psycopg.Connection[Any], slot: str) -> int | None:
    """The slot's confirmed_flush_lsn as a number (None: no such slot or not yet set)."""
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        [slot],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return lsn_to_int(row[0])


def wait_confirmed(
    conn: psycopg.Connection[Any],
    slot: str,
    target: int,
    *,
    timeout: float,
    poll: float = 0.02,
    daemon: DaemonProcess | None = None,
    tick: Callable[[float], None] | None = None,
) -> float:
    """Poll until the slot's confirmed_flush_lsn >= target; return perf_counter() then.

    ``tick(now)`` runs on every poll (e.g. to watch /readyz); a daemon that exits raises.
    """
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if tick is not None:
            tick(now)
        confirmed = slot_confirmed(conn, slot)
        if confirmed is not None and confirmed >= target:
            return time.perf_counter()
        if daemon is not None:
            daemon.check_alive()
        if now > deadline:
            where = int_to_lsn(confirmed) if confirmed is not None else "none"
            raise BenchError(
                f"slot {slot} confirmed {where}, not {int_to_lsn(target)}, after {timeout:.0f}s"
            )
        time.sleep(poll)


# --------------------------------------------------------------------------- the daemon


class DaemonProcess(daemon_process.DaemonProcess):
    """tests/daemon_process.py's DaemonProcess as the bench scripts drive it.

    Its config: wal2json (or ``source``'s settings), one rendezvous pool, log level warning
    (the figures must not pay for info lines), ``--drain-timeout``. ``start()`` only
    starts: the scripts time /readyz with ``wait_ready()`` (30 s at most). ``stop()`` lets
    the daemon drain: SIGTERM, 20 s, then SIGKILL. The log file is also called
    ``stderr_path`` here.
    """

    def __init__(
        self,
        *,
        dsn: str,
        slot: str,
        servers: Sequence[str],
        rules: Sequence[dict[str, Any]],
        workdir: Path,
        create_slot: bool = True,
        drain_timeout: float = 5.0,
        tls: dict[str, str] | None = None,
        pool: dict[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ):
        port = free_port()
        config = write_config(
            workdir / f"daemon-{slot}.yaml",
            dsn=dsn,
            slot=slot,
            servers=servers,
            rules=rules,
            port=port,
            pool={
                **({} if "client" in (pool or {}) else {"hashing": "rendezvous"}),
                **({"tls": tls} if tls else {}),
                **(pool or {}),
            },
            log_level="warning",
            create_slot=create_slot,
            **{"kind": "wal2json", **(source or {})},
        )
        super().__init__(
            config,
            port,
            workdir / f"daemon-{slot}.stderr",
            slot=slot,
            args=["--drain-timeout", str(drain_timeout)],
            ready_timeout=30.0,
            stop_timeout=20.0,
        )
        self.drain_timeout = drain_timeout

    def start(self, *, wait: bool = False, timeout: float | None = None) -> Self:
        return super().start(wait=wait, timeout=timeout)

    @property
    def stderr_path(self) -> Path:
        return self.log_path

    @stderr_path.setter
    def stderr_path(self, path: Path) -> None:
        self.log_path = path

    def report_stderr(self, limit: int = 10) -> None:
        """Print what the daemon wrote to stderr (warnings and errors only, by config)."""
        lines = self.log_lines()
        if not lines:
            print(f"daemon stderr (slot {self.slot}): empty")
            return
        print(f"daemon stderr (slot {self.slot}): {len(lines)} lines, first {limit}:")
        for text in lines[:limit]:
            print("    " + text[:300])


# --------------------------------------------------------------------------- services


class Bench:
    """PostgreSQL + memcached nodes, a scratch directory, and LIFO cleanup of everything.

    Cleanup order on exit: things added with ``defer`` (daemons, ...) newest first, then
    every replication slot is dropped, then memcached and PostgreSQL are stopped.
    """

    def __init__(self, memcached_nodes: int = 3, *, tls: bool = False):
        self.cluster = PostgresCluster()
        # tls: the nodes speak TLS only (memcached -Z) and the daemon's pool has ``tls``.
        self.tls = TlsFiles() if tls else None
        self.pool = MemcachedPool(memcached_nodes, tls=self.tls)
        self._stack = contextlib.ExitStack()
        self.workdir = Path(".")

    def __enter__(self) -> Self:
        exit_on_sigterm()
        stack = self._stack.__enter__()
        try:
            tmp = tempfile.TemporaryDirectory(prefix="pgci-bench-")
            stack.callback(tmp.cleanup)
            self.workdir = Path(tmp.name)
            if self.tls is not None:
                stack.callback(self.tls.cleanup)
            stack.callback(self.cluster.stop)
            self.cluster.start()
            stack.callback(self.pool.stop)
            self.pool.start()
            stack.callback(self._drop_slots)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    def defer(self, callback: Callable[[], object]) -> None:
        self._stack.callback(callback)

    def _drop_slots(self) -> None:
        with contextlib.suppress(Exception):
            self.cluster.drop_replication_slots(terminate_active=True)

    def daemon(
        self,
        slot: str,
        rules: Sequence[dict[str, Any]],
        *,
        create_slot: bool = True,
        pool: dict[str, Any] | None = None,
        dsn: str | None = None,
        servers: Sequence[str] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> DaemonProcess:
        """A DaemonProcess for this cluster (or ``dsn``) and pool (``pool``: more pool
        settings; ``servers``: other than the pool's; ``source``: source settings, default
        ``kind: wal2json``), not started; stopped on exit."""
        proc = DaemonProcess(
            dsn=dsn or self.cluster.dsn(),
            pool=pool,
            slot=slot,
            servers=servers if servers is not None else self.pool.servers,
            rules=rules,
            workdir=self.workdir,
            create_slot=create_slot,
            tls=self.tls.pool_tls() if self.tls is not None else None,
            source=source,
        )
        self.defer(proc.stop)
        return proc

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self.cluster.connect()


# --------------------------------------------------------------------------- samplers


class RssSampler(threading.Thread):
    """VmRSS/VmHWM of the daemon every ``interval`` seconds until stopped."""

    def __init__(self, daemon: DaemonProcess, interval: float = 0.1):
        super().__init__(name="rss-sampler", daemon=True)
        self.daemon_proc = daemon
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (perf_counter, VmRSS kB, VmHWM kB)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                mem = self.daemon_proc.memory_kb()
            except (OSError, DaemonError):
                return
            self.samples.append((time.perf_counter(), mem["VmRSS"], mem["VmHWM"]))
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=2)


class LagSampler(threading.Thread):
    """Every ``interval`` s for ``seconds`` s: the server's view of the slot and the daemon's.

    Each sample is (seconds since start, pg_current_wal_lsn() as a number,
    pg_current_wal_lsn() - confirmed_flush_lsn, the daemon's
    invalidator_replication_lag_bytes). The sampler uses its own connection.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        slot: str,
        daemon: DaemonProcess,
        seconds: float,
        interval: float = 1.0,
    ):
        super().__init__(name="lag-sampler", daemon=True)
        self.connect = connect
        self.slot = slot
        self.daemon_proc = daemon
        self.seconds = seconds
        self.interval = interval
        self.samples: list[tuple[float, int, float, float]] = []
        self.error: str | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            with self.connect() as conn:
                start = time.perf_counter()
                tick = 0
                while not self.halt.is_set():
                    at = time.perf_counter() - start
                    wal, lag = slot_lag(conn, self.slot)
                    try:
                        daemon_lag = self.daemon_proc.metric("invalidator_replication_lag_bytes")
                    except (OSError, DaemonError):
                        daemon_lag = float("nan")
                    self.samples.append((at, wal, float("nan") if lag is None else lag, daemon_lag))
                    tick += 1
                    if tick * self.interval > self.seconds + 1e-6:
                        return
                    self.halt.wait(max(0.0, start + tick * self.interval - time.perf_counter()))
        except Exception as exc:  # reported with the figures, never fatal
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def lag_summary(samples: Sequence[tuple[float, int, float, float]]) -> dict[str, Any]:
    """first/last/max and least-squares slope (bytes/s) of both lags; the WAL rate."""

    def one(index: int) -> dict[str, float]:
        points = [(s[0], s[index]) for s in samples if math.isfinite(s[index])]
        values = [p[1] for p in points]
        return {
            "first": values[0] if values else float("nan"),
            "last": values[-1] if values else float("nan"),
            "max": max(values, default=float("nan")),
            "slope": slope(points),
        }

    wal_rate = float("nan")
    if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
        wal_rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
    return {
        "seconds": samples[-1][0] - samples[0][0] if samples else 0.0,
        "count": len(samples),
        "wal_bytes_per_s": wal_rate,
        "slot": one(2),
        "daemon": one(3),
        "samples": [[round(s[0], 3), s[2], s[3]] for s in samples],
    }


# --------------------------------------------------------------------------- other load


class ForeignCpu(threading.Thread):
    """CPU seconds used by processes that are neither this run's nor a database/cache.

    Descendants of this process are ours. PostgreSQL and memcached processes cannot be told
    apart from other suites' (they are re-parented), so they are counted separately as
    ``services`` together with ours; a second postmaster means another cluster is running.
    """

    SERVICES = ("postgres", "memcached")

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(name="foreign-cpu", daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")
        self.interval = interval
        self.me = os.getpid()
        self.lock = threading.Lock()
        self.by_name: dict[str, float] = {}
        self.postmasters = 0
        self.halt = threading.Event()
        self._seen: dict[tuple[int, str], int] = {}

    @staticmethod
    def _scan() -> dict[int, tuple[str, int, str, int]]:
        """pid -> (comm, ppid, starttime, utime + stime ticks)."""
        procs = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = Path(entry.path, "stat").read_text()
                comm = text[text.index("(") + 1 : text.rindex(")")]
                fields = text[text.rindex(")") + 2 :].split()
                procs[int(entry.name)] = (
                    comm,
                    int(fields[1]),
                    fields[19],
                    int(fields[11]) + int(fields[12]),
                )
        return procs

    def _cmd(self, pid: int, comm: str) -> str:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            words = [a.decode(errors="replace") for a in argv if a]
            if words:
                name = os.path.basename(words[0])
                if name.startswith("python") and len(words) > 2 and words[1] == "-m":
                    return f"{name} -m {words[2]}"
                return name
        return comm

    def run(self) -> None:
        first = True
        while not self.halt.is_set():
            procs = self._scan()
            children: dict[int, list[int]] = {}
            for pid, (_, ppid, _, _) in procs.items():
                children.setdefault(ppid, []).append(pid)
            ours = set()
            todo = [self.me]
            while todo:
                pid = todo.pop()
                ours.add(pid)
                todo.extend(children.get(pid, []))
            seen: dict[tuple[int, str], int] = {}
            postmasters = 0
            with self.lock:
                for pid, (comm, ppid, start, ticks) in procs.items():
                    key = (pid, start)
                    seen[key] = ticks
                    if comm == "postgres" and procs.get(ppid, ("",))[0] != "postgres":
                        postmasters += 1
                    if first or pid in ours or pid == os.getpid():
                        continue
                    delta = ticks - self._seen.get(key, 0)
                    if delta <= 0:
                        continue
                    name = "services" if comm.startswith(self.SERVICES) else self._cmd(pid, comm)
                    self.by_name[name] = self.by_name.get(name, 0.0) + delta / self.tick
                self.postmasters = max(self.postmasters, postmasters)
            self._seen = seen
            first = False
            self.halt.wait(self.interval)

    def take_summary(self, seconds: float) -> dict[str, Any]:
        """``take()`` as figures: other CPU-s, cores on average, the top commands."""
        taken, postmasters = self.take()
        services = taken.pop("services", 0.0)
        other = sum(taken.values())
        top = sorted(taken.items(), key=lambda kv: -kv[1])[:3]
        return {
            "other_cpu_s": other,
            "other_cores": other / seconds if seconds > 0 else float("nan"),
            "top": [[name, cpu] for name, cpu in top],
            "services_cpu_s": services,
            "postmasters": postmasters,
        }

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)

    def take(self) -> tuple[dict[str, float], int]:
        """CPU seconds by command since the last call, and the most postmasters seen."""
        with self.lock:
            taken, self.by_name = self.by_name, {}
            postmasters, self.postmasters = self.postmasters, 0
        return taken, postmasters


# --------------------------------------------------------------------------- pgbench


def parse_pgbench(text: str) -> dict[str, float]:
    found = {}
    for name, pattern in (
        ("tps", r"^tps = ([\d.]+)"),
        ("processed", r"number of transactions actually processed: (\d+)"),
        ("latency_ms", r"latency average = ([\d.]+) ms"),
        ("schedule_lag_ms", r"rate limit schedule lag: avg ([\d.]+)"),
        ("failed", r"number of failed transactions: (\d+)"),
    ):
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            found[name] = float(match.group(1))
    return found


class Pgbench:
    """pgbench -n -f script -c clients -j threads -R rate -T seconds, output to a file."""

    def __init__(
        self,
        bench: Bench,
        script: Path,
        rate: int,
        seconds: float,
        *,
        clients: int = 4,
        threads: int = 2,
        name: str = "",
    ):
        cluster = bench.cluster
        self.rate = rate
        self.seconds = max(1, math.ceil(seconds))
        argv = [cluster.bin("pgbench"), "-h", cluster.host, "-p", str(cluster.port)]
        argv += ["-U", "postgres", "-n", "-f", str(script), "-c", str(clients), "-j", str(threads)]
        argv += ["-R", str(rate), "-T", str(self.seconds), "postgres"]
        self.argv = argv
        self.out_path = bench.workdir / f"pgbench-{name or rate}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        bench.defer(self.kill)

    def start(self) -> Self:
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.started = time.perf_counter()
        return self

    def wait(self) -> dict[str, float]:
        """Wait for the run to end; pgbench's figures (tps, processed, failed, ...)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"pgbench at {self.rate} tps did not finish") from None
        output = self.out_path.read_text(errors="replace")
        if self.proc.returncode != 0:
            raise BenchError(f"pgbench exited with {self.proc.returncode}:\n{output[-2000:]}")
        return parse_pgbench(output)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
