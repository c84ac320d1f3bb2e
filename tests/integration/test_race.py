"""The cache-aside race, measured: a reader reads the old row just before a commit and
stores it just after the daemon's delete. Plain delete leaves such values until their TTL;
`redelete_after` removes them."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import psycopg
from pymemcache.client.hash import HashClient

from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

HOT_ROWS = 5
READERS = 6
ROUNDS = 3
ROUND_SECONDS = 1.5
GUARD = 0.05  # redelete_after: well beyond a reader's 1-5 ms between read and set


def run_round(db: PgDatabase, servers: list[str], seed: int) -> int:
    """Readers and a writer race for ROUND_SECONDS; returns keys left stale."""
    stop_writer, stop_readers = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reader(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        cache = HashClient(servers, use_pooling=False, no_delay=True, default_noreply=False)
        try:
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                while not stop_readers.is_set():
                    key_id = rng.randrange(1, HOT_ROWS + 1)
                    if cache.get(f"hot:{key_id}") is not None:
                        time.sleep(0.0005)
                        continue
                    row = conn.execute("SELECT v FROM hot WHERE id = %s", (key_id,)).fetchone()
                    time.sleep(rng.uniform(0.001, 0.005))  # the app's work before its set
                    cache.set(f"hot:{key_id}", json.dumps(row[0] if row else None), expire=300)
        except BaseException as exc:
            errors.append(exc)
        finally:
            cache.close()

    def writer() -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                while not stop_writer.is_set():
                    conn.execute(
                        "UPDATE hot SET v = v + 1 WHERE id = %s", (rng.randrange(1, HOT_ROWS + 1),)
                    )
                    time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    time.sleep(ROUND_SECONDS)
    stop_writer.set()
    time.sleep(0.02)
    stop_readers.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    time.sleep(GUARD * 4)  # past every second delete
    cache = HashClient(servers, use_pooling=False, no_delay=True, default_noreply=False)
    try:
        current = dict(db.execute("SELECT id, v FROM hot"))
        stale = 0
        for key_id, value in current.items():
            cached = cache.get(f"hot:{key_id}")
            if cached is not None and json.loads(cached) != value:
                stale += 1
        for key_id in current:
            cache.delete(f"hot:{key_id}")
        return stale
    finally:
        cache.close()


def measure(
    tmp_path: Path, db: PgDatabase, memcached: MemcachedPool, name: str, rule: dict[str, object]
) -> int:
    proc = DaemonProcess.create(
        tmp_path, name=name, dsn=db.dsn, slot=name, servers=memcached.servers, rules=[rule]
    )
    try:
        proc.start()
        return sum(run_round(db, memcached.servers, seed) for seed in range(ROUNDS))
    finally:
        proc.stop()


def test_redelete_after_closes_the_cache_aside_race(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """Same readers, writer and rounds: stale keys with plain delete vs with the guard;
    the guard must leave none."""
    pg_db.execute("CREATE TABLE hot (id int PRIMARY KEY, v int)")
    pg_db.execute(f"INSERT INTO hot SELECT g, 0 FROM generate_series(1, {HOT_ROWS}) g")
    plain = measure(tmp_path, pg_db, memcached, "plain", {"table": "hot", "keys": ["hot:{id}"]})
    guarded = measure(
        tmp_path,
        pg_db,
        memcached,
        "guarded",
        {"table": "hot", "keys": ["hot:{id}"], "redelete_after": GUARD},
    )
    print(
        f"\n[race] {ROUNDS} rounds x {HOT_ROWS} hot keys, {READERS} readers (1-5 ms between "
        f"read and set): stale keys with plain delete {plain}, with redelete_after "
        f"{GUARD * 1000:.0f} ms {guarded}"
    )
    assert guarded == 0
