"""Runs ``invalidator run`` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.services import free_port


def write_config(
    path: Path,
    *,
    dsn: str,
    slot: str,
    servers: list[str],
    rules: list[dict[str, Any]],
    port: int,
    **source: Any,
) -> Path:
    config = {
        "source": {"dsn": dsn, "slot": slot, **source},
        "pools": {"default": {"servers": servers}},
        "rules": rules,
        "http": {"listen": f"127.0.0.1:{port}"},
        "log": {"format": "json", "level": "info"},
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class DaemonProcess:
    """One daemon process; ``start`` waits until /readyz says it streams."""

    def __init__(self, config: Path, port: int, log_path: Path):
        self.config = config
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, tmp: Path, name: str = "daemon", **kwargs: Any) -> DaemonProcess:
        port = free_port()
        config = write_config(tmp / f"{name}.yaml", port=port, **kwargs)
        return cls(config, port, tmp / f"{name}.log")

    def start(self, *, wait: bool = True, timeout: float = 20.0) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invalidator", "run", "--config", str(self.config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def ready(self) -> bool:
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.02)
        raise AssertionError(f"daemon not streaming after {timeout}s:\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` on /metrics."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""
