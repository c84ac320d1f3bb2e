"""The delete hot path alone, no I/O: the C decoder vs plan(), the specification, one run.

Every engine turns the same wal2json v2 messages into per-node memcached ``delete``
requests:

* C: ``HotPath.decoder.feed_many`` + ``harvest`` (what the daemon runs first);
* plan(): ``parse_message`` + ``decode_v2`` + ``plan`` + ``Router.route`` + ``request_for``
  per routed operation (the specification: what the daemon runs for anything else);

Plain case: UPDATEs of a REPLICA IDENTITY FULL table, two templates (``bench:{id}``,
``bench_email:{email}``), 3 nodes; C vs plan().

Declined cases: records the C decoder hands to Python, so only the Python engines do the
work (the C column is the time the decoder spends before declining, paid on top of either):

* ``redelete``: the same table, its pool has ``redelete_after`` (scheduling the second
  delete is the same call on both Python paths and is left out);
* ``fallback``: the same table, its pool has ``fallback_depth: 1`` (2 owners per key);
* ``toast``: ``posts(id, slug, title, body)``, REPLICA IDENTITY FULL, UPDATEs of ``title``:
  the unchanged TOASTed ``body`` (3,000 chars) is in the old row only;
* ``null``: ``accounts(id, email, external_id)``, ``account_ext:{external_id}`` with
  ``external_id`` NULL (plan() reports the key as unbuildable and deletes the others).

Every engine must produce the same requests per node as plan(); timings are medians of
``--repeat`` rounds, the engines interleaved (order rotated) within each round. The figure
is this thread's CPU time (``time.thread_time``): the loops are single-threaded and do no
I/O, and on a machine shared with other work wall time also counts the time the core was
given to others (the JSON keeps the wall-clock medians too).
Usage: python bench/hotpath.py [--changes 200000] [--declined-changes 20000] [--repeat 5]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import write_json

from invalidator.config import Config
from invalidator.config.build import compile_rules, static_router
from invalidator.core.changes import Change
from invalidator.core.routing import Router
from invalidator.core.rules import RuleSet, plan
from invalidator.hotpath import HotPath
from invalidator.sinks.memcached.protocol import request_for
from invalidator.sources.replication import XLogData, parse_message
from invalidator.sources.wal2json import decode_v2

SERVERS = ["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"]
BATCH = 4096  # the daemon's read batch in a backlog
TOAST_CHARS = 3000  # an unchanged TOASTed value (stored out of line above ~2 kB)
TIMESTAMP = "2026-01-01 00:00:00.000000+00"

PerNode = dict[str, list[bytes]]
Engine = Callable[[list[bytes]], PerNode]


# ---------------------------------------------------------------------------------------
# Messages: XLogData CopyData frames carrying wal2json format-version 2 records


def column(name: str, type_name: str, value: object) -> dict[str, object]:
    return {"name": name, "type": type_name, "value": value}


def frame(i: int, table: str, new: list[dict[str, object]], old: list[dict[str, object]]) -> bytes:
    record = {
        "action": "U",
        "timestamp": TIMESTAMP,
        "lsn": f"0/{i:X}",
        "schema": "public",
        "table": table,
        "columns": new,
        "identity": old,
    }
    return b"w" + struct.pack("!QQq", i, i, 0) + orjson.dumps(record)


def bench_updates(n: int) -> list[bytes]:
    """``UPDATE bench SET v = v + 1`` row by row (REPLICA IDENTITY FULL)."""
    out = []
    for i in range(1, n + 1):
        email = column("email", "text", f"user{i}@example.com")
        new = [column("id", "integer", i), email, column("v", "integer", 1)]
        old = [column("id", "integer", i), email, column("v", "integer", 0)]
        out.append(frame(i, "bench", new, old))
    return out


def toast_updates(n: int) -> list[bytes]:
    """``UPDATE posts SET title = ...``: the unchanged TOASTed body is in the old row only."""
    out = []
    for i in range(1, n + 1):
        body = (f"{i:08x}" * (TOAST_CHARS // 8 + 1))[:TOAST_CHARS]
        ident = [column("id", "bigint", i), column("slug", "text", f"post-{i}")]
        new = [*ident, column("title", "text", f"Title {i} (edited)")]
        old = [*ident, column("title", "text", f"Title {i}"), column("body", "text", body)]
        out.append(frame(i, "posts", new, old))
    return out


def null_key_updates(n: int) -> list[bytes]:
    """``UPDATE accounts SET email = ...`` of accounts without an external id (NULL)."""
    out = []
    for i in range(1, n + 1):
        ids = [column("id", "integer", i)]
        ext = column("external_id", "text", None)
        new = [*ids, column("email", "text", f"new{i}@example.com"), ext]
        old = [*ids, column("email", "text", f"old{i}@example.com"), ext]
        out.append(frame(i, "accounts", new, old))
    return out


# ---------------------------------------------------------------------------------------
# Engines


@dataclass
class Setup:
    """One case's configuration, compiled the way the daemon compiles it."""

    rules: RuleSet
    router: Router
    hot: HotPath


def setup(pool: dict[str, Any], rules: list[dict[str, Any]]) -> Setup:
    config = Config.model_validate(
        {"pools": {"default": {"servers": SERVERS, **pool}}, "rules": rules}
    )
    compiled = compile_rules(config)
    router = static_router(config)
    return Setup(compiled, router, HotPath(compiled, router.placements))


def c_engine(s: Setup) -> Engine:
    """The C decoder; every message must be consumed (the plain case)."""
    hot = s.hot

    def run(data: list[bytes]) -> PerNode:
        out: PerNode = {}
        decoder = hot.decoder
        slots = hot.slots
        for start in range(0, len(data), BATCH):
            batch = data[start : start + BATCH]
            if decoder.feed_many(batch, 0) != len(batch):
                raise SystemExit("the C decoder declined a message of the plain case")
            for index, blob, _count in decoder.harvest()[0]:
                out.setdefault(slots[index].node, []).append(blob)
        return out

    return run


def c_decline_engine(s: Setup) -> Callable[[list[bytes]], int]:
    """The C decoder's work on messages it declines: how many it declined."""
    decoder = s.hot.decoder

    def run(data: list[bytes]) -> int:
        declined = 0
        i = 0
        end = len(data)
        feed_many = decoder.feed_many
        while i < end:
            i = feed_many(data, i)
            if i < end:
                declined += 1
                i += 1
        decoder.harvest()
        return declined

    return run


def plan_one(s: Setup, message: XLogData, out: PerNode) -> None:
    """decode_v2 + plan + route + request_for: the specification for one record."""
    change = decode_v2(message.payload)
    assert isinstance(change, Change)
    result = plan(change, s.rules)
    for routed in s.router.route(result.operations):
        out.setdefault(routed.node, []).append(request_for(routed.operation))


def plan_engine(s: Setup) -> Engine:
    def run(data: list[bytes]) -> PerNode:
        out: PerNode = {}
        for raw in data:
            message = parse_message(raw)
            assert type(message) is XLogData
            plan_one(s, message, out)
        return out

    return run


def joined(out: PerNode) -> dict[str, bytes]:
    return {node: b"".join(requests) for node, requests in out.items()}


@dataclass
class Timings:
    """Seconds per engine per round: CPU time of this thread, and wall time."""

    cpu: dict[str, list[float]]
    wall: dict[str, list[float]]

    def us(self, n: int, wall: bool = False) -> dict[str, float]:
        seconds = self.wall if wall else self.cpu
        return {name: statistics.median(v) / n * 1e6 for name, v in seconds.items()}


def rounds(engines: dict[str, Callable[[], object]], repeat: int) -> Timings:
    """Every engine once per round, interleaved, the order rotated every round."""
    names = list(engines)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            cpu = time.thread_time()
            wall = time.perf_counter()
            engines[name]()
            timings.wall[name].append(time.perf_counter() - wall)
            timings.cpu[name].append(time.thread_time() - cpu)
    return timings


# ---------------------------------------------------------------------------------------
# Cases


TWO_KEYS = [{"table": "bench", "keys": ["bench:{id}", "bench_email:{email}"]}]


@dataclass
class Case:
    name: str
    what: str
    pool: dict[str, Any]
    rules: list[dict[str, Any]]
    messages: Callable[[int], list[bytes]]


DECLINED = [
    Case("redelete", "pool redelete_after: 2s", {"redelete_after": "2s"}, TWO_KEYS, bench_updates),
    Case("fallback", "pool fallback_depth: 1", {"fallback_depth": 1}, TWO_KEYS, bench_updates),
    Case(
        "toast",
        f"UPDATE, unchanged TOAST column ({TOAST_CHARS:,} chars) absent from the new row",
        {},
        [{"table": "posts", "keys": ["post:{id}", "post_slug:{slug}"]}],
        toast_updates,
    ),
    Case(
        "null",
        "NULL key column (1 of 2 templates unbuildable)",
        {},
        [{"table": "accounts", "keys": ["account:{id}", "account_ext:{external_id}"]}],
        null_key_updates,
    ),
]


def plain_case(n: int, repeat: int) -> dict[str, Any]:
    s = setup({}, TWO_KEYS)
    data = bench_updates(n)
    engines: dict[str, Engine] = {"C": c_engine(s), "plan()": plan_engine(s)}
    expected = joined(engines["plan()"](data))
    same = {name: joined(engine(data)) == expected for name, engine in engines.items()}
    what = "UPDATE, REPLICA IDENTITY FULL, 2 keys, 3 nodes (the C decoder consumes all)"
    return measured("plain", what, engines, data, repeat, same, 0)


def declined_case(case: Case, n: int, repeat: int) -> dict[str, Any]:
    s = setup(case.pool, case.rules)
    data = case.messages(n)
    c_declines = c_decline_engine(s)
    declined = c_declines(data)
    engines: dict[str, Callable[[list[bytes]], object]] = {
        "C": c_declines,
        "plan()": plan_engine(s),
    }
    return measured(case.name, case.what, engines, data, repeat, {}, declined)


def measured(
    name: str,
    what: str,
    engines: Mapping[str, Callable[[list[bytes]], object]],
    data: list[bytes],
    repeat: int,
    same: dict[str, bool],
    declined: int,
) -> dict[str, Any]:
    """Time every engine over ``data`` in interleaved rounds; one result row."""
    n = len(data)
    timings = rounds({label: _bind(engine, data) for label, engine in engines.items()}, repeat)
    return {
        "case": name,
        "what": what,
        "changes": n,
        "us": timings.us(n),
        "wall_us": timings.us(n, wall=True),
        "cpu_seconds": timings.cpu,
        "wall_seconds": timings.wall,
        "same_as_plan": same,
        "c_declined": declined,
    }


def _bind(engine: Callable[[list[bytes]], object], data: list[bytes]) -> Callable[[], object]:
    return lambda: engine(data)


# ---------------------------------------------------------------------------------------


def table_lines(results: list[dict[str, Any]]) -> Iterator[str]:
    head = f"{'case':<9} {'changes':>8} {'C':>7} {'plan()':>7}"
    head += f" {'plan/C':>7} {'C declined':>11}"
    yield head
    for r in results:
        us = r["us"]
        n = r["changes"]
        line = f"{r['case']:<9} {n:>8,} {us['C']:>7.2f} {us['plan()']:>7.2f}"
        ratio = f"{us['plan()'] / us['C']:.1f}x" if not r["c_declined"] else "-"
        line += f" {ratio:>7} {r['c_declined']:>5,}/{n:<5,}"
        yield line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000, help="plain-case messages")
    parser.add_argument(
        "--declined-changes", type=int, default=20_000, help="messages per declined case"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians reported)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    results = [plain_case(args.changes, args.repeat)]
    for case in DECLINED:
        results.append(declined_case(case, args.declined_changes, args.repeat))

    print(
        f"µs of CPU per change (this thread), median of {args.repeat} interleaved rounds;"
        f" batches of {BATCH} for C; no I/O"
    )
    for line in table_lines(results):
        print(line)
    print()
    for r in results:
        print(f"  {r['case']}: {r['what']}")
    print(
        "C: the whole job on the plain case; on a declined case, the time the decoder spends"
        " before declining (the daemon pays it on top of the Python path)."
    )
    print("plain: C is the daemon's path; plan(): the specification (decode_v2, plan, route).")
    mismatches = [
        f"{r['case']}: {name}" for r in results for name, ok in r["same_as_plan"].items() if not ok
    ]
    print(
        "same requests per node as plan(): "
        + ("yes, every engine and case" if not mismatches else "NO: " + ", ".join(mismatches))
    )
    plain = results[0]
    write_json(
        args.json,
        {
            "changes": plain["changes"],
            "repeat": args.repeat,
            "c_us": plain["us"]["C"],
            "plan_us": plain["us"]["plan()"],
            "same": not mismatches,
            "cases": results,
        },
    )
    if mismatches:
        raise SystemExit("an engine disagrees with plan(): " + ", ".join(mismatches))


if __name__ == "__main__":
    main()
