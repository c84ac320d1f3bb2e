"""Shared helpers for the bench scripts that run the daemon against real services.

``Bench`` starts a throwaway PostgreSQL cluster (wal2json) and memcached nodes through
``tests/services.py`` and tears everything down on exit, errors and SIGTERM included.
``DaemonProcess`` runs ``python -m invalidator run`` as a real subprocess and reads what an
operator could read from outside: /readyz, /metrics, /proc/<pid>/{stat,status}.
Benchmarks print figures; they never assert timings.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from tests.services import (  # noqa: E402
    MemcachedPool,
    PostgresCluster,
    exit_on_sigterm,
    free_port,
)

__all__ = [
    "ROOT",
    "Bench",
    "BenchError",
    "DaemonProcess",
    "client_env",
    "fmt_breakdown",
    "fmt_int",
    "fmt_num",
    "int_to_lsn",
    "load",
    "lsn_to_int",
    "machine_lines",
    "percentile",
    "print_table",
    "slot_confirmed",
    "wait_confirmed",
]


class BenchError(RuntimeError):
    """The benchmark could not run (a service or the daemon misbehaved)."""


# --------------------------------------------------------------------------- small helpers


def lsn_to_int(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def client_env() -> dict[str, str]:
    """Our environment minus variables that would redirect libpq or the daemon's config."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVALIDATOR_"))}


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


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


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format → (name, labels, value) samples."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


class DaemonProcess:
    """``python -m invalidator run --config <tmp>.yaml`` with an HTTP port on 127.0.0.1."""

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
    ):
        self.slot = slot
        self.port = free_port()
        self.drain_timeout = drain_timeout
        config = {
            "source": {"kind": "wal2json", "dsn": dsn, "slot": slot, "create_slot": create_slot},
            "pools": {"default": {"servers": list(servers), "hashing": "rendezvous"}},
            "rules": list(rules),
            "http": {"listen": f"127.0.0.1:{self.port}"},
            "log": {"format": "json", "level": "warning"},
        }
        self.config_path = workdir / f"daemon-{slot}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.stderr_path = workdir / f"daemon-{slot}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.returncode: int | None = None
        self._stderr: Any = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("daemon not started")
        return self.proc.pid

    def start(self) -> Self:
        self._stderr = self.stderr_path.open("wb")
        argv = [sys.executable, "-m", "invalidator", "run", "--config", str(self.config_path)]
        argv += ["--drain-timeout", str(self.drain_timeout)]
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=client_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
        )
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"daemon (slot {self.slot}) exited with code {self.proc.returncode}:\n"
                + "\n".join("    " + line for line in self.stderr_lines()[-15:])
            )

    # -- HTTP ---------------------------------------------------------------------------

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def ready(self) -> bool:
        try:
            return self._get("/readyz", timeout=1.0)[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from process start until /readyz answered 200."""
        deadline = time.perf_counter() + timeout
        while not self.ready():
            self.check_alive()
            if time.perf_counter() > deadline:
                raise BenchError(f"daemon (slot {self.slot}) not ready after {timeout:.0f}s")
            time.sleep(0.01)
        return time.perf_counter() - self.started_at

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        status, body = self._get("/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, have, value in self.metrics()
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )

    def breakdown(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``name``'s samples matching ``labels``, summed per value of ``label``."""
        totals: dict[str, float] = {}
        for sample, have, value in self.metrics():
            if sample == name and all(have.get(k) == v for k, v in labels.items()):
                key = have.get(label, "")
                totals[key] = totals.get(key, 0.0) + value
        return totals

    # -- /proc ----------------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon process (all its threads)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        # fields[0] is the state (field 3): utime and stime are fields 14 and 15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def memory_kb(self) -> dict[str, int]:
        """VmRSS, VmHWM, ... of /proc/<pid>/status, in kB."""
        values = {}
        for text in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, rest = text.partition(":")
            if name.startswith("Vm") and rest.strip().endswith("kB"):
                values[name] = int(rest.split()[0])
        return values

    # -- stopping -------------------------------------------------------------------------

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait (the daemon drains), SIGKILL if it does not exit; its exit code."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                print(f"daemon (slot {self.slot}) ignored SIGTERM for {timeout:.0f}s: killed")
            self.returncode = proc.returncode
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return self.returncode

    def stderr_lines(self) -> list[str]:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace").splitlines()
        return []

    def report_stderr(self, limit: int = 10) -> None:
        """Print what the daemon wrote to stderr (warnings and errors only, by config)."""
        lines = self.stderr_lines()
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

    def __init__(self, memcached_nodes: int = 3):
        self.cluster = PostgresCluster()
        self.pool = MemcachedPool(memcached_nodes)
        self._stack = contextlib.ExitStack()
        self.workdir = Path(".")

    def __enter__(self) -> Self:
        exit_on_sigterm()
        stack = self._stack.__enter__()
        try:
            tmp = tempfile.TemporaryDirectory(prefix="pgci-bench-")
            stack.callback(tmp.cleanup)
            self.workdir = Path(tmp.name)
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
    ) -> DaemonProcess:
        """A DaemonProcess for this cluster and pool (not started); stopped on exit."""
        proc = DaemonProcess(
            dsn=self.cluster.dsn(),
            slot=slot,
            servers=self.pool.servers,
            rules=rules,
            workdir=self.workdir,
            create_slot=create_slot,
        )
        self.defer(proc.stop)
        return proc

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self.cluster.connect()
