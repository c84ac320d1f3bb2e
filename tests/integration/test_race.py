"""The cache-aside race, measured: a reader reads the old row just before a commit and
stores it just after the daemon's delete. Plain delete leaves such values until their TTL;
`redelete_after` removes them.

What the guard promises is judged from timestamps, not assumed from speed: a stale value
whose set completed within GUARD of the row's last UPDATE being sent must be removed (the
second delete is due GUARD after the daemon saw the commit, which is later than that). A
set completing later than that (a reader descheduled for longer than GUARD on a loaded
machine) is beyond any guard of that length; it is counted and printed, never blamed.

Readers store ``json.dumps({"v": v})``, what ``value: {json: [v]}`` says, so each round is
also judged by ``invalidator audit`` (the same keys, read independently): it must find
exactly the stale keys the timestamps found.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from pymemcache.client.hash import HashClient

from invalidator.commands.audit import audit
from invalidator.config import parse_config
from tests.cache_aside import wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

HOT_ROWS = 5
READERS = 6
MIN_ROUNDS = 3
MAX_ROUNDS = 15  # plain delete: more rounds until the race shows, at most this many
ROUND_SECONDS = 1.5
GUARD = 0.05  # redelete_after: well beyond a reader's 1-5 ms between read and set


@dataclass
class Round:
    stale: int  # keys left stale once the daemon caught up (and, guarded, re-deleted)
    within: int  # of those, set within GUARD of the row's last UPDATE: the guard's to close
    old_sets: int  # reader sets of a value an UPDATE already sent had replaced (races run)
    audited: int  # stale copies `audit` found in the same state


def caught_up(db: PgDatabase, slot: str, lsn: str) -> bool:
    rows = db.execute(
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (lsn, slot),
    )
    return rows == [(True,)]


def audit_stale(
    db: PgDatabase,
    servers: list[str],
    rule: dict[str, Any],
    sample: int,
    pool: dict[str, Any] | None = None,
) -> Callable[[], int]:
    """The stale copies ``invalidator audit`` finds for ``rule`` (with its ``value``) on
    ``sample`` rows; ``pool`` adds pool settings (``replicas``: where apps read)."""
    config = parse_config(
        {
            "source": {"dsn": db.dsn},
            "pools": {"default": {"servers": servers, **(pool or {})}},
            "rules": [rule],
        },
        "audit.yaml",
    )

    def judge() -> int:
        (tally,) = audit(config, sample=sample, rate=1000)
        assert tally.error is None, tally.error
        return tally.stale

    return judge


def run_round(
    db: PgDatabase,
    servers: list[str],
    slot: str,
    seed: int,
    guarded: bool,
    audited: Callable[[], int],
) -> Round:
    """Readers and a writer race for ROUND_SECONDS; the keys left stale, judged once every
    first delete is confirmed (and, guarded, once every covered one is gone)."""
    stop_writer, stop_readers = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    sets: list[list[tuple[int, int | None, float]]] = [[] for _ in range(READERS)]
    updates: list[tuple[int, int, float]] = []  # (id, new v, sent at)

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
                    value = row[0] if row else None
                    time.sleep(rng.uniform(0.001, 0.005))  # the app's work before its set
                    cache.set(f"hot:{key_id}", json.dumps({"v": value}), expire=300)
                    sets[n].append((key_id, value, time.monotonic()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            cache.close()

    def writer() -> None:
        # A hot row is often updated again a few ms later: readers that missed after the
        # first commit's delete then store its value after the second commit's delete.
        rng = random.Random(seed)
        try:
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                while not stop_writer.is_set():
                    key_id = rng.randrange(1, HOT_ROWS + 1)
                    for _ in range(rng.choice([1, 2, 3])):
                        sent = time.monotonic()
                        row = conn.execute(
                            "UPDATE hot SET v = v + 1 WHERE id = %s RETURNING v", (key_id,)
                        ).fetchone()
                        assert row is not None
                        updates.append((key_id, row[0], sent))
                        time.sleep(rng.uniform(0.001, 0.004))
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
    assert not any(thread.is_alive() for thread in threads)
    end = db.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    # Every first delete acknowledged: from here on no delete but a second one is due.
    assert wait_until(lambda: caught_up(db, slot, end), timeout=60), f"{slot}: not caught up"

    last_update = {key_id: sent for key_id, _, sent in updates}
    sent_at = {(key_id, v): sent for key_id, v, sent in updates}
    all_sets = sorted((s for reader_sets in sets for s in reader_sets), key=lambda s: s[2])
    old_sets = sum(
        1
        for key_id, value, done in all_sets
        if value is not None and sent_at.get((key_id, value + 1), done) < done
    )
    cache = HashClient(servers, use_pooling=False, no_delay=True, default_noreply=False)
    try:

        def judge() -> tuple[int, int]:
            current = dict(db.execute("SELECT id, v FROM hot"))
            stale = within = 0
            for key_id, value in current.items():
                cached = cache.get(f"hot:{key_id}")
                if cached is None or json.loads(cached)["v"] == value:
                    continue
                stale += 1
                stored = json.loads(cached)["v"]
                done = max((d for k, v, d in all_sets if (k, v) == (key_id, stored)), default=None)
                assert done is not None, f"hot:{key_id} holds {stored}, which no reader set"
                if done <= last_update[key_id] + GUARD:
                    within += 1
            return stale, within

        if guarded:  # second deletes are due GUARD after the first: wait for them, bounded
            wait_until(lambda: judge()[1] == 0, timeout=10)
        stale, within = judge()
        found = audited()
        for key_id in range(1, HOT_ROWS + 1):
            cache.delete(f"hot:{key_id}")
        return Round(stale, within, old_sets, found)
    finally:
        cache.close()


def measure(
    tmp_path: Path,
    db: PgDatabase,
    memcached: MemcachedPool,
    name: str,
    rule: dict[str, object],
    rounds: int | None = None,
) -> list[Round]:
    """``rounds`` rounds; without it, rounds until one shows a stale key the guard would
    have had to close (at least MIN_ROUNDS, at most MAX_ROUNDS)."""
    proc = DaemonProcess.create(
        tmp_path, name=name, dsn=db.dsn, slot=name, servers=memcached.servers, rules=[rule]
    )
    results: list[Round] = []
    audited = audit_stale(db, memcached.servers, {**rule, "value": {"json": ["v"]}}, HOT_ROWS)
    try:
        proc.start()
        for seed in range(rounds or MAX_ROUNDS):
            guarded = "redelete_after" in rule
            results.append(run_round(db, memcached.servers, name, seed, guarded, audited))
            if rounds is None and seed + 1 >= MIN_ROUNDS and sum(r.within for r in results):
                break
        return results
    finally:
        proc.stop()


def test_redelete_after_closes_the_cache_aside_race(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """Same readers, writer and rounds: plain delete must show the race (stale keys a
    guard would have closed), otherwise the comparison proves nothing; with the guard
    none of those may be left. `audit` judges every round too and agrees with the
    timestamps: stale keys found without the guard, none the guard should have closed."""
    pg_db.execute("CREATE TABLE hot (id int PRIMARY KEY, v int)")
    pg_db.execute(f"INSERT INTO hot SELECT g, 0 FROM generate_series(1, {HOT_ROWS}) g")
    plain = measure(tmp_path, pg_db, memcached, "plain", {"table": "hot", "keys": ["hot:{id}"]})
    guarded = measure(
        tmp_path,
        pg_db,
        memcached,
        "guarded",
        {"table": "hot", "keys": ["hot:{id}"], "redelete_after": GUARD},
        rounds=len(plain),
    )
    print(
        f"\n[race] {len(plain)} rounds x {HOT_ROWS} hot keys, {READERS} readers (1-5 ms"
        f" between read and set): stale keys with plain delete {sum(r.stale for r in plain)}"
        f" ({sum(r.within for r in plain)} within {GUARD * 1000:.0f} ms of the last update),"
        f" with redelete_after {GUARD * 1000:.0f} ms {sum(r.stale for r in guarded)}"
        f" ({sum(r.within for r in guarded)} within); reader sets of a replaced value:"
        f" plain {sum(r.old_sets for r in plain)}, guarded {sum(r.old_sets for r in guarded)};"
        f" audit found {sum(r.audited for r in plain)} stale (plain),"
        f" {sum(r.audited for r in guarded)} (guarded)"
    )
    assert [r.audited for r in plain + guarded] == [r.stale for r in plain + guarded]
    assert sum(r.within for r in plain) > 0, (
        f"plain delete never showed the race in {len(plain)} rounds ({plain}): without it the"
        " guarded run proves nothing"
    )
    assert sum(r.old_sets for r in guarded) > 0, f"the guarded run never raced: {guarded}"
    assert [r.within for r in guarded] == [0] * len(guarded), guarded
