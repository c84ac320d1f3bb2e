"""Stampede: database queries caused by each invalidation of one hot key, `delete` vs
`refresh`, with N concurrent cache-aside readers. Side by side in one run.

Usage: python bench/stampede.py [--readers 16] [--updates 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from pymemcache.client.hash import HashClient

from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PostgresCluster


def run(
    mode: str, cluster: PostgresCluster, pool: MemcachedPool, readers: int, updates: int, tmp: Path
) -> dict[str, float]:
    db = f"stampede_{mode}"
    cluster.create_database(db)
    dsn = cluster.dsn(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE hot (id int PRIMARY KEY, v int)")
        conn.execute("ALTER TABLE hot REPLICA IDENTITY FULL")
        conn.execute("INSERT INTO hot VALUES (1, 0)")
    rule: dict[str, object] = {"table": "hot", "keys": ["hot:{id}"]}
    if mode == "refresh":
        rule |= {"action": "refresh", "value": {"json": ["id", "v"]}, "ttl": 300}
    proc = DaemonProcess.create(
        tmp, name=mode, dsn=dsn, slot=f"stampede_{mode}", servers=pool.servers, rules=[rule]
    )
    proc.start()
    queries = [0] * readers
    gets = [0] * readers
    stop = threading.Event()

    def reader(n: int) -> None:
        cache = HashClient(pool.servers, use_pooling=False, no_delay=True, default_noreply=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                gets[n] += 1
                if cache.get("hot:1") is None:
                    queries[n] += 1
                    row = conn.execute("SELECT id, v FROM hot WHERE id = 1").fetchone()
                    assert row is not None
                    time.sleep(0.002)  # the app's own work before caching
                    cache.set("hot:1", json.dumps({"id": row[0], "v": row[1]}), expire=300)
                else:
                    time.sleep(0.001)
        cache.close()

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(readers)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    base = sum(queries)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(updates):
            conn.execute("UPDATE hot SET v = v + 1 WHERE id = 1")
            time.sleep(0.1)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(10)
    proc.stop()
    cluster.drop_database(db)
    caused = sum(queries) - base
    return {"queries": caused, "per_invalidation": caused / updates, "gets": sum(gets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--updates", type=int, default=40)
    args = parser.parse_args()
    with PostgresCluster() as cluster, MemcachedPool(3) as pool:
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"stampede-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        results = {
            mode: run(mode, cluster, pool, args.readers, args.updates, tmp)
            for mode in ("delete", "refresh")
        }
    print(
        f"machine: {platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, nproc {os.cpu_count()}; {args.readers} readers "
        f"(cache-aside, 2 ms between DB read and set), {args.updates} updates of one hot "
        "row, 100 ms apart"
    )
    print(f"{'action':<10}{'DB queries':>12}{'per invalidation':>18}{'cache gets':>12}")
    for mode, r in results.items():
        print(f"{mode:<10}{r['queries']:>12.0f}{r['per_invalidation']:>18.2f}{r['gets']:>12.0f}")


if __name__ == "__main__":
    main()
