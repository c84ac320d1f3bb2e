"""Runs one client library's oracle program per server list and collects its answers.

Generators in other languages read the corpus keys one per line (keys hold no whitespace)
and print, per key, the index of the server their library picked (-1: it refused the key).
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import corpus
import record

# A corpus case → (the app's server strings, pools.NAME.servers strings) or a skip reason.
Express = Callable[[dict[str, Any]], "tuple[list[str], list[str]] | str"]


def write_keys(directory: Path) -> Path:
    """The corpus keys, one per line, UTF-8."""
    keys = corpus.keys()
    if any("\n" in k for k in keys):
        raise ValueError("a corpus key holds a newline")
    path = directory / "keys.txt"
    path.write_text("".join(k + "\n" for k in keys), encoding="utf-8")
    return path


def ask(command: Sequence[str], servers: int) -> list[int]:
    """The owners one run of ``command`` prints, checked for count and range."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")
    owners = [int(line) for line in done.stdout.split()]
    if len(owners) != corpus.KEY_COUNT or not all(-1 <= o < servers for o in owners):
        raise RuntimeError(f"{command[0]}: {len(owners)} answers, not one per key in range")
    return owners


def collect(
    express: Express, run: Callable[[list[str], dict[str, Any]], list[int]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every corpus case the client can express, placed by ``run(app_servers, case)``;
    the reasons for the others."""
    cases: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for case in corpus.server_lists():
        expressed = express(case)
        if isinstance(expressed, str):
            skipped[case["name"]] = expressed
            continue
        app_servers, servers = expressed
        owners = run(app_servers, case)
        cases.append(
            {"name": case["name"], "servers": servers, "app_servers": app_servers, "owners": owners}
        )
    return cases, skipped


def is_ip(host: str) -> bool:
    """An IP address literal, not a name (resolving a name would use DNS)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def has_hostname(case: dict[str, Any]) -> bool:
    """A host of the case is a name."""
    return not all(is_ip(host) for host, _ in case["hosts"])


def config_servers(case: dict[str, Any], weights: bool = False) -> list[str]:
    """The case's servers as pools.NAME.servers takes them (with weights if asked)."""
    ws = case["weights"] if weights and case["weights"] else [None] * len(case["hosts"])
    return [record.config_server(h, p, w) for (h, p), w in zip(case["hosts"], ws, strict=True)]
