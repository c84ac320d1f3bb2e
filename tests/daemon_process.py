"""The daemon as a real subprocess, seen from outside as an operator sees it.

``DaemonProcess`` runs ``python -m invalidator run --config <file>`` and reads /readyz,
/metrics, /proc/<pid>/{stat,status} and its log. It is the one wrapper that the tests,
bench/ and scripts/demo.py use. Plain module: no pytest imports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

from prometheus_client.parser import text_string_to_metric_families

from tests.services import clean_env, free_port

__all__ = [
    "DaemonError",
    "DaemonProcess",
    "Sample",
    "metric_breakdown",
    "metric_sum",
    "parse_metrics",
    "write_config",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


class DaemonError(AssertionError):
    """The daemon process misbehaved: it exited, never became ready, or /metrics failed.

    An AssertionError, so that a test shows it as a failed expectation.
    """


# --------------------------------------------------------------------------- /metrics


class Sample(NamedTuple):
    """One sample of the Prometheus text format (names as written: ``_total``, ``_bucket``)."""

    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a /metrics page."""
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _matching(samples: Iterable[Sample], name: str, labels: Mapping[str, str]) -> Iterator[Sample]:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            yield sample


def metric_sum(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(sample.value for sample in _matching(samples, name, labels))


def metric_breakdown(
    samples: Iterable[Sample], name: str, label: str, **labels: str
) -> dict[str, float]:
    """``name``'s samples matching ``labels``, summed per value of ``label``."""
    totals: dict[str, float] = {}
    for sample in _matching(samples, name, labels):
        key = sample.labels.get(label, "")
        totals[key] = totals.get(key, 0.0) + sample.value
    return totals


# --------------------------------------------------------------------------- config


def write_config(
    path: Path,
    *,
    dsn: str,
    slot: str,
    servers: Sequence[str],
    rules: Sequence[dict[str, Any]],
    port: int,
    pool: Mapping[str, Any] | None = None,
    log_level: str = "info",
    audit: Mapping[str, Any] | None = None,
    **source: Any,
) -> Path:
    """A config file for one pool ``default`` and an HTTP port on 127.0.0.1; ``pool`` adds
    settings to the pool, ``source`` to the source (kind, create_slot, ...), ``audit`` the
    staleness probe."""
    config: dict[str, Any] = {
        "source": {"dsn": dsn, "slot": slot, **source},
        "pools": {"default": {"servers": list(servers), **(pool or {})}},
        "rules": list(rules),
        "http": {"listen": f"127.0.0.1:{port}"},
        "log": {"format": "json", "level": log_level},
    }
    if audit is not None:
        config["audit"] = dict(audit)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


# --------------------------------------------------------------------------- the process


class DaemonProcess:
    """One daemon process; ``start`` waits until /readyz says it streams.

    Its stdout and stderr (the log) are appended to ``log_path``, across restarts too. The
    child gets ``clean_env()`` (no PG*/INVALIDATOR_* variables: the config file is the
    truth) plus ``env``, runs ``python -m invalidator run --config <config> <args>`` in
    ``cwd``, and with ``new_session`` does not receive the terminal's Ctrl-C. ``stop()``
    kills it at once unless ``stop_timeout`` is given: then SIGTERM, that long to drain,
    SIGKILL after.
    """

    def __init__(
        self,
        config: Path,
        port: int,
        log_path: Path,
        *,
        slot: str | None = None,
        args: Sequence[str] = (),
        python: str = sys.executable,
        cwd: Path = REPO_ROOT,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
        ready_timeout: float = 20.0,
        stop_timeout: float | None = None,
    ):
        self.config = config
        self.port = port
        self.log_path = log_path
        self.slot = slot
        self.args = list(args)
        self.python = python
        self.cwd = cwd
        self.env = dict(env or {})
        self.new_session = new_session
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.perf_counter() just before the last start
        self.returncode: int | None = None

    @classmethod
    def create(cls, tmp: Path, name: str = "daemon", **kwargs: Any) -> DaemonProcess:
        """A config ``tmp/<name>.yaml`` from ``write_config(**kwargs)`` on a free port."""
        port = free_port()
        config = write_config(tmp / f"{name}.yaml", port=port, **kwargs)
        return cls(config, port, tmp / f"{name}.log", slot=kwargs.get("slot"))

    @property
    def name(self) -> str:
        """How messages name this daemon."""
        return f"daemon (slot {self.slot})" if self.slot else "daemon"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise DaemonError(f"{self.name} not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _argv(self, command: str) -> list[str]:
        return [self.python, "-m", "invalidator", command, "--config", str(self.config)]

    def _env(self) -> dict[str, str]:
        return clean_env(PYTHONUNBUFFERED="1", **self.env)

    def start(self, *, wait: bool = True, timeout: float | None = None) -> Self:
        """Start the process; with ``wait``, return once /readyz answers 200."""
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                self._argv("run") + self.args,
                cwd=self.cwd,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=self.new_session,
            )
        self.returncode = None
        if wait:
            self.wait_ready(timeout)
        return self

    def cli(
        self, command: str, *args: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Another subcommand (status, teardown, check, ...) on the same config, python and
        environment; its output captured."""
        return subprocess.run(
            self._argv(command) + list(args),
            cwd=self.cwd,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check_alive(self) -> None:
        """Raise DaemonError, with the log's last lines, when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(
                f"{self.name} exited with code {self.proc.returncode}:\n{self._indented_tail()}"
            )

    # -- HTTP ---------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """(status, body) of a GET on the daemon's HTTP port; OSError when unreachable."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def ready(self) -> bool:
        try:
            return self.get("/readyz", timeout=1.0)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float | None = None, poll: float = 0.01) -> float:
        """Poll /readyz until it answers 200; the seconds since the process started.

        DaemonError when the process exits first or after ``timeout`` (default
        ``ready_timeout``), naming the last answer.
        """
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.perf_counter() + timeout
        last = "no answer"
        while True:
            try:
                status, body = self.get("/readyz", timeout=1.0)
                if status == 200:
                    return time.perf_counter() - self.started_at
                last = f"{status} {body.strip()}"
            except OSError as exc:
                last = str(getattr(exc, "reason", exc))
            self.check_alive()
            if time.perf_counter() > deadline:
                raise DaemonError(
                    f"{self.name}: /readyz not 200 after {timeout:.0f}s (last: {last})\n"
                    + self._indented_tail()
                )
            time.sleep(poll)

    def metrics(self) -> list[Sample]:
        """Every sample on /metrics now."""
        status, body = self.get("/metrics", timeout=5.0)
        if status != 200:
            raise DaemonError(f"{self.name}: /metrics answered {status}")
        return parse_metrics(body)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` on /metrics whose labels include ``labels``."""
        return metric_sum(self.metrics(), name, **labels)

    def breakdown(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``name``'s samples on /metrics matching ``labels``, summed per value of ``label``."""
        return metric_breakdown(self.metrics(), name, label, **labels)

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

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.returncode = self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit code (subprocess.TimeoutExpired if it does not)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def stop(self, timeout: float | None = None) -> int | None:
        """Make sure the process is gone; its exit code (None: never started).

        ``timeout`` (default ``stop_timeout``) None: SIGKILL at once. Otherwise SIGTERM, so
        that it drains, and SIGKILL when it has not exited after ``timeout`` seconds.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None and timeout is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {timeout:.0f}s: killed", flush=True)
        if proc.poll() is None:
            proc.kill()
        self.returncode = proc.wait(10)
        return self.returncode

    def __enter__(self) -> Self:
        """``with proc.start():`` stops it (``stop()``) when the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the log --------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return "\n".join(self.log_lines())

    def log_lines(self) -> list[str]:
        """What the process wrote so far (stdout and stderr), blank lines left out."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def _indented_tail(self, lines: int = 30) -> str:
        return "\n".join("    " + line for line in self.log_lines()[-lines:])
