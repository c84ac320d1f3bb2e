"""The delete hot path alone, no I/O: C decoder vs the Python engine, same messages, one run.

Both turn the same wal2json v2 UPDATE messages (REPLICA IDENTITY FULL, two templates:
``bench:{id}``, ``bench_email:{email}``, 3 nodes) into per-node ``delete`` requests:

* C: ``HotPath.decoder.feed_many`` + ``harvest`` (what the daemon runs);
* Python: ``parse_message`` + ``orjson`` + ``FastPlanner.keys`` + ``Rendezvous.owner`` +
  request bytes per key (what the daemon ran before the C decoder).

Prints µs per change for each and the ratio, and checks both produce the same requests.
Usage: python bench/hotpath.py [--changes 200000] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import write_json
from invalidator.core.fastpath import fast_planners

from invalidator.config import Config
from invalidator.config.build import compile_rules
from invalidator.core.placement import Rendezvous
from invalidator.core.rules import RuleSet
from invalidator.hotpath import HotPath
from invalidator.sinks.memcached.client import Router
from invalidator.sources.replication import parse_message

SERVERS = ["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"]
BATCH = 4096  # the daemon's read batch in a backlog


def messages(n: int) -> list[bytes]:
    out = []
    for i in range(1, n + 1):
        row: list[dict[str, object]] = [
            {"name": "id", "type": "integer", "value": i},
            {"name": "email", "type": "text", "value": f"user{i}@example.com"},
            {"name": "v", "type": "integer", "value": 1},
        ]
        old = [dict(c, value=0) if c["name"] == "v" else c for c in row]
        payload = orjson.dumps(
            {"action": "U", "lsn": "0/1", "schema": "public", "table": "bench", "columns": row,
             "identity": old}
        )  # fmt: skip
        out.append(b"w" + struct.pack("!QQq", i, i, 0) + payload)
    return out


def run_c(hot: HotPath, batches: list[list[bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    decoder = hot.decoder
    for batch in batches:
        decoder.feed_many(batch, 0)
        for index, blob, _count in decoder.harvest()[0]:
            out.setdefault(hot.slots[index].node, []).append(blob)
    return out


def run_python(rules: RuleSet, batches: list[list[bytes]]) -> dict[str, list[bytes]]:
    planner = fast_planners(rules)[("public", "bench")]
    placement = Rendezvous(SERVERS)
    out: dict[str, list[bytes]] = {}
    for batch in batches:
        per_node: dict[str, list[bytes]] = {}
        for data in batch:
            message = parse_message(data)
            record = orjson.loads(message.payload)  # type: ignore[union-attr]
            for _pool, key in planner.keys(record, "update") or ():
                per_node.setdefault(placement.owner(key), []).append(
                    b"delete " + key.encode() + b"\r\n"
                )
        for node, requests in per_node.items():
            out.setdefault(node, []).append(b"".join(requests))
    return out


def best_of(fn: object, repeat: int, *args: object) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    config = Config.model_validate(
        {
            "pools": {"default": {"servers": SERVERS}},
            "rules": [{"table": "bench", "keys": ["bench:{id}", "bench_email:{email}"]}],
        }
    )
    rules = compile_rules(config)
    hot = HotPath.for_rules(rules, Router(config.pools).placements)
    data = messages(args.changes)
    batches = [data[i : i + BATCH] for i in range(0, len(data), BATCH)]
    same = {n: b"".join(b) for n, b in run_c(hot, batches).items()} == {
        n: b"".join(b) for n, b in run_python(rules, batches).items()
    }
    c = best_of(run_c, args.repeat, hot, batches)
    py = best_of(run_python, args.repeat, rules, batches)
    n = args.changes
    print(
        f"changes: {n:,} UPDATEs, 2 keys each, 3 nodes, batches of {BATCH}; best of {args.repeat}"
    )
    print(f"{'engine':<8} {'us/change':>10} {'changes/s':>12}")
    print(f"{'C':<8} {c / n * 1e6:>10.2f} {n / c:>12,.0f}")
    print(f"{'Python':<8} {py / n * 1e6:>10.2f} {n / py:>12,.0f}")
    print(f"ratio: C is {py / c:.1f}x faster; same requests on every node: {same}")
    write_json(
        args.json,
        {"changes": n, "c_us": c / n * 1e6, "python_us": py / n * 1e6, "same": same},
    )
    if not same:
        raise SystemExit("the C decoder and the Python engine disagree")


if __name__ == "__main__":
    main()
