"""Live cross-check of the oracles: each client library really stores keys in real
memcached nodes (127.0.0.1, free ports), and every key must be found on the node our
placement names, and only there.

The vector generators ask the libraries without a network (stubbed liveness, a recording
selector or connect, locators built from the apps' factory); this shows the real send path
picks the same node. Run after the *_vectors.sh scripts installed the libraries:
``.venv/bin/python scripts/placement_vectors/live_check.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402
from pymemcache.client.base import Client  # noqa: E402

from invalidator.core.placement import placement_for  # noqa: E402
from tests.services import MemcachedNode  # noqa: E402

NODE_PATH = str(ROOT / ".vectors" / "npm" / "node_modules")
GO_ORACLE = str(ROOT / ".vectors" / "go" / "gomemcache_oracle")
SPY_JAR = "/usr/share/java/spymemcached.jar"

# (client, behaviors, weights or None, the command that stores the keys file's keys).
Command = Callable[[str, list[tuple[str, int, int | None]]], tuple[list[str], str | None]]


def dalli(keys: str, nodes: list[tuple[str, int, int | None]]) -> tuple[list[str], str | None]:
    app = [f"{h}:{p}" + (f":{w}" if w else "") for h, p, w in nodes]
    return ["ruby", "dalli_oracle.rb", "--set", keys, *app], None


def gomemcache(keys: str, nodes: list[tuple[str, int, int | None]]) -> tuple[list[str], None]:
    return [GO_ORACLE, "--set", keys, *[f"{h}:{p}" for h, p, _ in nodes]], None


def memjs(keys: str, nodes: list[tuple[str, int, int | None]]) -> tuple[list[str], None]:
    return [
        "node",
        "memjs_oracle.js",
        "--set",
        keys,
        ",".join(f"{h}:{p}" for h, p, _ in nodes),
    ], None


def node_memcached(options: dict[str, Any]) -> Command:
    def command(keys: str, nodes: list[tuple[str, int, int | None]]) -> tuple[list[str], None]:
        names = [f"{h}:{p}" for h, p, _ in nodes]
        weighted = any(w for _, _, w in nodes)
        servers: Any = (
            {n: w for n, (_, _, w) in zip(names, nodes, strict=True)} if weighted else names
        )
        spec = json.dumps({"servers": servers, "options": options})
        return ["node", "node_memcached_oracle.js", "--set", keys, spec], None

    return command


def spymemcached(locator: str, hash_name: str) -> Command:
    def command(keys: str, nodes: list[tuple[str, int, int | None]]) -> tuple[list[str], str]:
        servers = " ".join(f"{h}:{p}" + (f"={w}" if w else "") for h, p, w in nodes)
        return (
            ["java", "-cp", SPY_JAR, "spymemcached_oracle.java", "--set", keys],
            f"{locator} {hash_name}_HASH {servers}\n",
        )

    return command


CHECKS: list[tuple[str, dict[str, Any], list[int] | None, Command]] = [
    ("dalli", {}, None, dalli),
    ("dalli", {}, [1, 2, 3], dalli),
    ("gomemcache", {}, None, gomemcache),
    ("memjs", {}, None, memjs),
    ("node-memcached", {}, None, node_memcached({})),
    ("node-memcached", {}, [1, 2, 3], node_memcached({})),
    (
        "node-memcached",
        {"compatibility": "hash_ring"},
        None,
        node_memcached({"compatibility": "hash_ring"}),
    ),
    ("spymemcached", {}, None, spymemcached("ARRAY_MOD", "NATIVE")),
    (
        "spymemcached",
        {"locator": "consistent", "hash": "ketama"},
        None,
        spymemcached("CONSISTENT", "KETAMA"),
    ),
    (
        "spymemcached",
        {"locator": "consistent", "hash": "ketama"},
        [1, 2, 3],
        spymemcached("CONSISTENT", "KETAMA"),
    ),
    (
        "spymemcached",
        {"locator": "consistent", "hash": "fnv1a_32"},
        None,
        spymemcached("CONSISTENT", "FNV1A_32"),
    ),
]


def held(node: MemcachedNode, keys: list[str]) -> set[str]:
    """The keys ``node`` holds."""
    client = Client((node.host, node.port), allow_unicode_keys=True)
    found: set[str] = set()
    for start in range(0, len(keys), 100):
        found.update(client.get_many(keys[start : start + 100]))
    client.close()
    return found


def check(
    keys: list[str],
    keys_file: str,
    client: str,
    behaviors: dict[str, Any],
    weights: list[int] | None,
    command: Command,
) -> tuple[int, int, int]:
    """(stored, refused, mismatched) for one client over 3 fresh nodes."""
    nodes = [MemcachedNode() for _ in range(3)]
    for node in nodes:
        node.start()
    try:
        ws = weights or [None, None, None]
        listed = [(n.host, n.port, w) for n, w in zip(nodes, ws, strict=True)]
        argv, stdin = command(keys_file, listed)
        env = {**os.environ, "NODE_PATH": NODE_PATH}
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, cwd=HERE, env=env, check=True
        )
        stored = [int(x) for x in done.stdout.split()]
        if len(stored) != len(keys):
            raise RuntimeError(f"{client}: {len(stored)} answers for {len(keys)} keys")
        servers = [f"{h}:{p}" + (f" {w}" if w else "") for h, p, w in listed]
        placement = placement_for(client, servers, behaviors)
        holders: dict[str, list[str]] = {}
        for node, name in zip(nodes, placement.nodes, strict=True):
            for key in held(node, keys):
                holders.setdefault(key, []).append(name)
        mismatched = 0
        for key, ok in zip(keys, stored, strict=True):
            expected = [placement.owners(key)[0]] if ok == 1 else []
            if holders.get(key, []) != expected:
                mismatched += 1
        return stored.count(1), stored.count(-1), mismatched
    finally:
        for node in nodes:
            node.stop()


def usable(client: str, key: str) -> bool:
    """The npm memcached package writes the command with String.replace(key, key): a ``$``
    pattern in the key (``$&``, ``$$``, ...) changes the stored key's name (the node is
    still the one placed for the key), so such keys cannot be looked up by name here."""
    return not (client == "node-memcached" and "$" in key)


def main() -> int:
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for client, behaviors, weights, command in CHECKS:
            keys = [k for k in corpus.keys()[::10] if usable(client, k)]
            keys_file = Path(tmp) / "keys.txt"
            keys_file.write_text("".join(k + "\n" for k in keys), encoding="utf-8")
            stored, refused, mismatched = check(
                keys, str(keys_file), client, behaviors, weights, command
            )
            failed |= mismatched > 0 or stored == 0
            print(
                f"{client:15s} {json.dumps(behaviors):45s} weights={weights!s:10s} "
                f"keys={len(keys)} stored={stored} refused={refused} mismatched={mismatched}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
