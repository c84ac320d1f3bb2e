"""Replica-aware invalidation, measured side by side: commit -> key gone, commit -> replayed.

One primary, a physical standby that replays each commit ``--delay`` ms late, three
memcached nodes. Readers fill the cache from the standby on a miss (the seed guide's
cache-aside read, pointed at a replica); a writer updates the primary at ``--tps``. The
same load runs against three daemons in turn:

- ``no replicas``: deletes at commit (what 0.1 did);
- ``hold``: ``replicas: [standby]`` — operations wait until the standby replayed the commit;
- ``apply twice``: ``replicas`` with ``replica_wait_max: 0`` — every operation at commit, and
  again once the standby replayed it (the alternative design, measured to choose).

Per mode: probes (a row no reader touches) give commit -> key gone and commit -> row
visible on the standby, p50/p99; the readers' misses per second (each one a replica
query); the memcached operations per commit; and the keys holding an old row once the
writes stop and everything has caught up. Usage: python bench/replicas.py [--delay 400]
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from typing import Any

import psycopg
from _common import Bench, fmt_num, latency_stats, print_table, write_json
from pymemcache.client.hash import HashClient

from tests.cache_aside import ReplicaReaders
from tests.services import PostgresStandby

ROWS = 200
READERS = 4
RULE = {"table": "users", "keys": ["user:{id}"]}


def client(servers: list[str]) -> HashClient:
    return HashClient(servers, use_pooling=False, no_delay=True, default_noreply=False)


def row_json(row: tuple[Any, ...]) -> str:
    return json.dumps({"id": row[0], "name": row[1]})


def run_mode(
    bench: Bench,
    standby: PostgresStandby,
    name: str,
    pool: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    servers = bench.pool.servers
    replica_dsn = standby.dsn()
    daemon = bench.daemon(name.replace(" ", "_"), [RULE], pool=pool)
    daemon.start()
    daemon.wait_ready()
    errors: list[BaseException] = []

    writes_stop = threading.Event()
    writes = [0]

    def writer() -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(bench.cluster.dsn(), autocommit=True) as conn:
                gap = 1.0 / args.tps
                next_at = time.perf_counter()
                while not writes_stop.is_set():
                    writes[0] += 1
                    conn.execute(
                        "UPDATE users SET name = %s WHERE id = %s",
                        (f"w{writes[0]}", rng.randrange(1, ROWS + 1)),
                    )
                    next_at += gap
                    time.sleep(max(0.0, next_at - time.perf_counter()))
        except BaseException as exc:
            errors.append(exc)

    readers = ReplicaReaders(
        servers,
        replica_dsn,
        ids=range(1, ROWS + 1),
        query="SELECT id, name FROM users WHERE id = %s",
        encode=row_json,
        count=READERS,
    )
    write = threading.Thread(target=writer)
    ops_before = daemon.metric("invalidator_operations_total", op="delete")
    started = time.perf_counter()
    readers.start()
    write.start()
    gone: list[float] = []
    replayed: list[float] = []
    cache = client(servers)
    try:
        with (
            psycopg.connect(bench.cluster.dsn(), autocommit=True) as primary,
            psycopg.connect(replica_dsn, autocommit=True) as replica,
        ):
            for n in range(args.probes):
                cache.set("user:0", "old", expire=300)
                primary.execute("UPDATE users SET name = %s WHERE id = 0", (f"probe{n}",))
                committed = time.perf_counter()
                t_gone = t_replayed = None
                while time.perf_counter() - committed < 30 and (
                    t_gone is None or t_replayed is None
                ):
                    now = time.perf_counter()
                    if t_gone is None and cache.get("user:0") is None:
                        t_gone = now - committed
                    if t_replayed is None:
                        got = replica.execute("SELECT name FROM users WHERE id = 0").fetchone()
                        if got is not None and got[0] == f"probe{n}":
                            t_replayed = now - committed
                    time.sleep(0.001)
                gone.append(t_gone if t_gone is not None else float("inf"))
                replayed.append(t_replayed if t_replayed is not None else float("inf"))
                time.sleep(0.05)
        writes_stop.set()
        write.join(10)
        seconds = time.perf_counter() - started
        end = bench.cluster.current_wal_lsn()
        standby.wait_for_replay(end)
        slot = name.replace(" ", "_")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = bench.cluster.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (end, slot),
            )
            if rows == [(True,)]:
                break
            time.sleep(0.02)
        time.sleep(0.3)
        readers.stop()
        if errors:
            raise errors[0]
        stale = cached = 0
        for row in bench.cluster.execute("SELECT id, name FROM users WHERE id > 0"):
            value = cache.get(f"user:{row[0]}")
            if value is not None:
                cached += 1
                stale += value.decode() != row_json(row)
        ops = daemon.metric("invalidator_operations_total", op="delete") - ops_before
        for user_id in range(ROWS + 1):
            cache.delete(f"user:{user_id}")
    finally:
        cache.close()
        daemon.stop()
        bench.cluster.drop_replication_slot(name.replace(" ", "_"))
    return {
        "mode": name,
        "gone": latency_stats([g for g in gone if g != float("inf")], gone.count(float("inf"))),
        "replayed": latency_stats(
            [r for r in replayed if r != float("inf")], replayed.count(float("inf"))
        ),
        "replica_reads_per_s": sum(readers.misses) / seconds,
        "ops_per_commit": ops / max(1, writes[0] + args.probes),
        "stale": stale,
        "cached": cached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=int, default=400, help="standby apply delay, ms")
    parser.add_argument("--tps", type=float, default=200.0, help="writer updates per second")
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    results = []
    with Bench() as bench:
        bench.cluster.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
        bench.cluster.execute(f"INSERT INTO users SELECT g, 'v0' FROM generate_series(0, {ROWS}) g")
        standby = PostgresStandby(bench.cluster, apply_delay_ms=args.delay)
        bench.defer(standby.stop)
        standby.start()
        standby_dsn = standby.dsn()
        modes = [
            ("no replicas", {}),
            ("hold", {"replicas": [standby_dsn]}),
            ("apply twice", {"replicas": [standby_dsn], "replica_wait_max": 0}),
        ]
        for name, pool in modes:
            results.append(run_mode(bench, standby, name, pool, args))
    print(
        f"\nstandby {args.delay} ms behind; writer {args.tps:.0f} updates/s; {READERS} readers"
        f" of the standby; {args.probes} probes per mode\n"
    )
    rows = []
    for r in results:
        rows.append(
            [
                r["mode"],
                f"{fmt_num(r['gone']['p50_ms'], 1)} / {fmt_num(r['gone']['p99_ms'], 1)}",
                f"{fmt_num(r['replayed']['p50_ms'], 1)} / {fmt_num(r['replayed']['p99_ms'], 1)}",
                fmt_num(r["replica_reads_per_s"], 0),
                fmt_num(r["ops_per_commit"], 2),
                f"{r['stale']} / {r['cached']}",
            ]
        )
    print_table(
        [
            "mode",
            "commit->key gone p50/p99 ms",
            "commit->replayed p50/p99 ms",
            "replica reads/s",
            "deletes/commit",
            "stale/cached after",
        ],
        rows,
    )
    write_json(args.json, {"delay_ms": args.delay, "tps": args.tps, "modes": results})


if __name__ == "__main__":
    main()
