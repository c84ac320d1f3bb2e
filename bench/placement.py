"""Placement throughput for every client: our Python placement (the specification), our C
placement (what the hot path runs) and the client library's own, same keys, one run.

Per client (3 nodes): keys/s of each, and on the way the number of sampled keys where C
and Python disagree, or where the library (when measured) disagrees with us. Libraries
measured in this process: pymemcache, pylibmc, python-memcached (when installed). Others
(Go, Java, Ruby, Node, PHP) are timed by their vector oracles' timing mode
(``PLACEMENT_TIMING=1``, scripts/placement_vectors/timing.py) when the toolchain and the
oracle are there; otherwise the row says why not.

Usage: python bench/placement.py [--keys N] [--nodes 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts" / "placement_vectors"))

from _common import fmt_int, print_table, write_json
from pymemcache.client.hash import HashClient

from invalidator.core.placement import placement_for
from invalidator.hotpath import placer

TARGET = 1_000_000  # keys/s in C, every client (issue 14)

# (label, client, behaviors): every client with its defaults, and the ketama variants.
CLIENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("pymemcache", "pymemcache", {}),
    ("pylibmc", "pylibmc", {}),
    ("pylibmc ketama", "pylibmc", {"ketama": True}),
    ("php-memcached", "php-memcached", {}),
    ("php-memcached libketama", "php-memcached", {"libketama_compatible": True}),
    ("python-memcached", "python-memcached", {}),
    ("dalli", "dalli", {}),
    ("spymemcached", "spymemcached", {}),
    ("spymemcached ketama", "spymemcached", {"locator": "consistent", "hash": "ketama"}),
    ("gomemcache", "gomemcache", {}),
    ("node-memcached", "node-memcached", {}),
    ("memjs", "memjs", {}),
    ("mcrouter", "mcrouter", {}),
]

Owner = Callable[[str], Any]


def rate(fn: Owner, keys: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for key in keys:
            fn(key)
        best = min(best, time.perf_counter() - start)
    return len(keys) / best


def in_process_library(
    client: str, behaviors: dict[str, Any], servers: list[str]
) -> tuple[str, Owner | None, Callable[[str], str] | None]:
    """(what, the library's own placement call, its answer as a node name) or a reason."""
    if client == "pymemcache":
        hasher = HashClient(servers, use_pooling=False).hasher
        return "pymemcache HashClient", hasher.get_node, hasher.get_node
    if client == "pylibmc":
        try:
            import pylibmc  # type: ignore[import-untyped]
        except ImportError:
            return "not measured (pylibmc not installed)", None, None
        mc = pylibmc.Client(servers, behaviors=behaviors)
        return "pylibmc Client.hash", mc.hash, lambda key: servers[mc.hash(key)]
    if client == "python-memcached":
        try:
            import memcache  # type: ignore[import-untyped]
        except ImportError:
            return "not measured (python-memcached not installed)", None, None
        memcache._Host.connect = lambda self: 1  # every server up, no socket (as the oracle)
        mc = memcache.Client(servers)
        index = {id(host): i for i, host in enumerate(mc.servers)}

        def get_server(key: str) -> Any:
            return mc._get_server(mc._encode_key(key))

        return (
            "python-memcached Client._get_server",
            get_server,
            lambda key: servers[index[id(get_server(key)[0])]],
        )
    if client in ("mcrouter", "broadcast"):
        return "- (every node: the router places)", None, None
    return "", None, None


def external_library(
    client: str, behaviors: dict[str, Any], servers: list[str], keys: list[str]
) -> tuple[str, float | None]:
    """The library's keys/s from its vector oracle's timing mode, or why not measured."""
    import timing  # scripts/placement_vectors/timing.py

    return timing.measure(client, behaviors, servers, keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    servers = [f"10.0.0.{i + 1}:11211" for i in range(args.nodes)]
    keys = [
        f"user:{i}" if i % 2 else f"user_by_email:person{i}@example.com" for i in range(args.keys)
    ]
    sample = keys[:: max(1, len(keys) // 20_000)]
    python_keys = keys[: max(1, len(keys) // 5)]
    print(
        f"machine: {platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, {args.nodes} nodes, {len(keys):,} keys "
        f"({len(python_keys):,} for Python and in-process libraries)"
    )
    results: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for label, client, behaviors in CLIENTS:
        placement = placement_for(client, servers, behaviors)
        fast = placer(placement)
        python_rate = rate(placement.owners, python_keys, 3)
        c_rate = rate(fast.owner, keys, 3) if fast is not None else None
        mismatches = sum(fast.owner(k) != placement.owners(k)[0] for k in sample) if fast else 0
        what, library_call, library_owner = in_process_library(client, behaviors, servers)
        library_rate: float | None = None
        if library_call is not None and library_owner is not None:
            library_rate = rate(library_call, python_keys, 1)
            mismatches += sum(library_owner(k) != placement.owners(k)[0] for k in sample)
        elif not what:
            what, library_rate = external_library(client, behaviors, servers, python_keys)
        results.append(
            {
                "client": label,
                "python_keys_per_s": python_rate,
                "c_keys_per_s": c_rate,
                "library": what,
                "library_keys_per_s": library_rate,
                "sampled": len(sample),
                "mismatches": mismatches,
            }
        )
        rows.append(
            [
                label,
                fmt_int(python_rate),
                fmt_int(c_rate) if c_rate is not None else "- (every node)",
                f"{fmt_int(library_rate)} ({what})" if library_rate is not None else what,
                f"{c_rate / library_rate:.1f}x" if c_rate and library_rate else "-",
                str(mismatches),
            ]
        )
    print_table(
        ["client", "Python keys/s", "C keys/s", "library keys/s", "C/library", "mismatches"],
        rows,
    )
    hashed = [r for r in results if r["c_keys_per_s"] is not None]
    slowest = min(hashed, key=lambda r: r["c_keys_per_s"])
    met = slowest["c_keys_per_s"] >= TARGET
    print(
        f"slowest in C: {slowest['client']} {fmt_int(slowest['c_keys_per_s'])} keys/s "
        f"(target {fmt_int(TARGET)}: {'met' if met else 'NOT met'}); "
        f"mismatches on {len(sample):,} sampled keys per client: "
        f"{sum(r['mismatches'] for r in results)}"
    )
    write_json(
        args.json,
        {"nodes": args.nodes, "keys": len(keys), "target_keys_per_s": TARGET, "clients": results},
    )
    if any(r["mismatches"] for r in results):
        raise SystemExit("placement disagrees (C vs Python, or a library vs us)")


if __name__ == "__main__":
    main()
