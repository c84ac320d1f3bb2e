"""The audit's runtime: pacing, and the re-read that keeps a racing write from counting."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.config import parse_config
from invalidator.config.build import compile_rules, pool_placement
from invalidator.core.audit import RecentRows
from invalidator.core.changes import Change
from invalidator.runtime.audit import Auditor, NodeReads, Pacer, apps_dsn
from invalidator.sinks.memcached.protocol import Item

CONFIG = {
    "source": {"dsn": "postgresql://audit@127.0.0.1:1/app"},
    "pools": {"default": {"servers": ["127.0.0.1:1"]}},
    "rules": [{"table": "users", "keys": ["user:{id}"], "value": {"json": ["id", "name"]}}],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_spaces_items_at_the_rate() -> None:
    """At 100/s, 50 items then 50 more: the second batch waits half a second."""
    clock = FakeClock()
    pacer = Pacer(100, clock, clock.sleep)
    pacer.wait(50)
    pacer.wait(50)
    assert clock.slept == [0.5]


class Rows:
    """A RowReader over a table that changes between sample and re-read."""

    def __init__(self, sampled: list[dict[str, Any]], now: Mapping[int, dict[str, Any]]):
        self.sampled = sampled
        self.now = now
        self.queries = 0

    def sample(self, schema: str, table: str, n: int) -> list[dict[str, Any]]:
        return self.sampled[:n]

    def lookup(self, schema: str, table: str, match: Mapping[str, Any]) -> list[dict[str, Any]]:
        row = self.now.get(match["id"])
        return [row] if row is not None else []

    def position(self) -> int:
        return 0

    def close(self) -> None:
        pass


class Cache(NodeReads):
    """Node values, each with CAS unique 1 on the first read; ``script`` gives what the
    following reads find (value, CAS) for a re-read key, its last entry repeating."""

    def __init__(self, values: dict[str, bytes], script: Sequence[tuple[bytes, int]] = ()):
        super().__init__({})
        self.values = values
        self.script = list(script)
        self.reads = 0

    def gets_many(self, pool: str, node: str, keys: Sequence[str]) -> dict[str, Item]:
        self.reads += 1
        if self.reads > 1 and self.script:
            value, cas = self.script[min(self.reads - 2, len(self.script) - 1)]
            return {keys[0]: Item(value, cas)}
        return {k: Item(self.values[k], 1) for k in keys if k in self.values}


def doc(i: int, name: str) -> bytes:
    return json.dumps({"id": i, "name": name}).encode()


def run(rows: Rows, cache: Cache) -> Any:
    config = parse_config(CONFIG, "t.yaml")
    (rule,) = compile_rules(config).rules
    placements = {"default": pool_placement(config, "default")}
    auditor = Auditor(
        config,
        lambda: placements,
        cache,
        readers=lambda dsn: rows,
        recheck_delay=0,  # type: ignore[arg-type,return-value]
    )
    return auditor.audit(rule, 10)


def test_a_copy_that_a_racing_write_explains_is_not_stale() -> None:
    """Row 1 was updated and its key refreshed between the first read and the re-read:
    the re-read finds them matching again, so nothing is stale."""
    rows = Rows([{"id": 1, "name": "old"}], {1: {"id": 1, "name": "new"}})
    cache = Cache({"user:1": doc(1, "new")})
    tally = run(rows, cache)
    assert (tally.rechecked, tally.stale, tally.fresh, tally.examples) == (1, 0, 1, [])


def test_a_copy_still_stale_when_re_read_is_counted_with_its_example() -> None:
    rows = Rows([{"id": 1, "name": "new"}], {1: {"id": 1, "name": "new"}})
    cache = Cache({"user:1": doc(1, "old")})
    tally = run(rows, cache)
    assert (tally.rechecked, tally.stale) == (1, 1)
    (example,) = tally.examples
    assert (example.key, example.node) == ("user:1", "127.0.0.1:1")
    assert (example.cached, example.expected) == (doc(1, "old").decode(), doc(1, "new").decode())


def test_a_copy_of_a_deleted_row_is_stale() -> None:
    """The row is gone when re-read: any copy left is stale (the app would not find it)."""
    rows = Rows([{"id": 1, "name": "x"}], {})
    cache = Cache({"user:1": b"anything"})
    assert run(rows, cache).stale == 1


def test_apps_read_the_first_replica_when_the_pool_lists_replicas() -> None:
    """Without replicas: the primary; with them: the first listed."""
    assert apps_dsn(parse_config(CONFIG, "t.yaml"), "default") == (
        "postgresql://audit@127.0.0.1:1/app"
    )
    pools = {
        "default": {
            "servers": ["127.0.0.1:1"],
            "replicas": ["postgresql://r1@127.0.0.1:2/app", "postgresql://r2@127.0.0.1:3/app"],
        }
    }
    config = parse_config({**CONFIG, "pools": pools}, "t.yaml")
    assert apps_dsn(config, "default") == "postgresql://r1@127.0.0.1:2/app"


def test_the_re_read_waits_for_the_daemon_to_apply_what_the_row_reflects() -> None:
    """Row 1 changed at WAL position 10 and its delete is still in flight (the daemon has
    confirmed 0, then 5): the copy is judged only once the daemon confirms 10, when the
    delete has landed, so it is not stale."""
    rows = Rows([{"id": 1, "name": "new"}], {1: {"id": 1, "name": "new"}})
    rows.position = lambda: 10  # type: ignore[method-assign]
    progress = iter([0, 5, 10])
    applied = {"at": 0}

    class InFlight(Cache):
        def gets_many(self, pool: str, node: str, keys: Sequence[str]) -> dict[str, Item]:
            return {} if applied["at"] >= 10 else super().gets_many(pool, node, keys)

    def confirmed() -> int:
        applied["at"] = next(progress)
        return applied["at"]

    config = parse_config(CONFIG, "t.yaml")
    (rule,) = compile_rules(config).rules
    placements = {"default": pool_placement(config, "default")}
    auditor = Auditor(
        config,
        lambda: placements,
        InFlight({"user:1": doc(1, "old")}),
        readers=lambda dsn: rows,  # type: ignore[arg-type,return-value]
        recheck_delay=0,
        confirmed=confirmed,
    )
    tally = auditor.audit(rule, 10)
    assert (tally.rechecked, tally.stale, tally.cached, applied["at"]) == (1, 0, 0, 10)


def test_rows_the_stream_changed_lately_are_audited_beside_the_sample() -> None:
    """A row remembered by RecentRows is read again and its key judged, counted as recent."""
    config = parse_config(CONFIG, "t.yaml")
    (rule,) = compile_rules(config).rules
    recent = RecentRows((rule,))
    recent.note(Change("update", "public", "users", new={"id": 2, "name": "two"}))
    rows = Rows([{"id": 1, "name": "one"}], {2: {"id": 2, "name": "two"}})
    cache = Cache({"user:1": doc(1, "one"), "user:2": doc(2, "old")})
    placements = {"default": pool_placement(config, "default")}
    auditor = Auditor(
        config,
        lambda: placements,
        cache,
        readers=lambda dsn: rows,  # type: ignore[arg-type,return-value]
        recheck_delay=0,
        recent=recent,
    )
    tally = auditor.audit(rule, 10)
    assert (tally.rows, tally.recent, tally.fresh, tally.stale) == (2, 1, 1, 1)
    assert [e.key for e in tally.examples] == ["user:2"]


def test_an_unreachable_database_is_the_rules_error_without_the_password() -> None:
    """Nothing listens on 127.0.0.1:1: the rule reports one line naming the server, never
    the DSN's password, and nothing is counted."""
    from invalidator.commands.audit import audit, exit_code

    config = parse_config(
        {**CONFIG, "source": {"dsn": "postgresql://audit:s3cret@127.0.0.1:1/app"}}, "t.yaml"
    )
    (tally,) = audit(config, sample=5, rate=100)
    assert tally.error is not None and "s3cret" not in tally.error
    assert tally.error.startswith("audit: cannot connect to PostgreSQL (127.0.0.1:1): ")
    assert (tally.rows, tally.cached, exit_code([tally])) == (0, 0, 1)


def test_a_key_rewritten_at_every_re_read_gets_no_verdict() -> None:
    """An app that keeps storing a wrong value which the daemon keeps deleting: no write
    stays, so none is called stale (counted as rewritten)."""
    rows = Rows([{"id": 1, "name": "new"}], {1: {"id": 1, "name": "new"}})
    cache = Cache({"user:1": b"junk"}, [(b"junk", n) for n in range(2, 10)])
    tally = run(rows, cache)
    assert (tally.stale, tally.rewritten, tally.rechecked) == (0, 1, 1)


def test_a_stale_write_that_stays_after_a_rewrite_is_stale() -> None:
    """Rewritten once with another stale value which then stays: that write is stale."""
    rows = Rows([{"id": 1, "name": "new"}], {1: {"id": 1, "name": "new"}})
    cache = Cache({"user:1": doc(1, "old")}, [(doc(1, "older"), 2)])
    tally = run(rows, cache)
    assert (tally.stale, tally.rewritten) == (1, 0)
    assert [e.cached for e in tally.examples] == [doc(1, "older").decode()]
