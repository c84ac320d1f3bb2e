"""The daemon in process: what each rule action writes to memcached — refreshed values,
bumped counters, re-deletes, truncate flushes — and how keys it cannot build are counted."""

from __future__ import annotations

import json
from typing import Any

from invalidator.core.changes import Change
from invalidator.errors import SourceError
from tests.fakes import A, B, C, Harness, ids_on, make_config, owner, updated, wait_until


def confirmed(harness: Harness, position: int) -> None:
    wait_until(lambda: harness.source.confirmed >= position, f"position {position:#x} confirmed")


class Values:
    """A refresh rule's ``value: {query}`` answered from a dict by row id."""

    def __init__(self, rows: dict[int, bytes | None], failing: bool = False):
        self.rows = rows
        self.failing = failing
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def value(self, query: str, row: dict[str, Any]) -> bytes | None:
        self.queries.append((query, row))
        if self.failing:
            raise SourceError("value query failed: connection lost")
        return self.rows.get(row["id"])

    def close(self) -> None:
        self.closed = True


def test_refresh_rule_with_a_json_value_writes_the_row_to_the_owner(harness: Harness) -> None:
    """value: {json: [...]} sets the key to the app's json.dumps of those columns, with the
    rule's TTL, on the owner node only."""
    rule = {
        "table": "users",
        "keys": ["user:{id}"],
        "action": "refresh",
        "value": {"json": ["id", "name"]},
        "ttl": 300,
    }
    harness.start(make_config(rule))
    user = ids_on(B)[0]
    confirmed(harness, harness.source.commit([updated(user, name="Ann", email="a@x")]))
    key = f"user:{user}"
    expected = json.dumps({"id": user, "name": "Ann"}).encode()
    assert harness.memcached[B].data == {key: expected}
    (written,) = harness.memcached[B].received("set")
    assert written.args[:3] == (key, "0", "300")
    assert not harness.memcached[A].received("set") and not harness.memcached[C].received("set")


def test_refresh_rule_with_a_query_writes_its_value_or_deletes_a_vanished_row(
    harness: Harness,
) -> None:
    """value: {query} runs the query for the row: its bytes are set; no row means delete."""
    found, vanished = ids_on(A, 2)
    rule = {
        "table": "users",
        "keys": ["user:{id}"],
        "action": "refresh",
        "value": {"query": "SELECT payload FROM user_cache WHERE id = %(id)s"},
    }
    values = Values({found: b"payload-1"})
    nodes = harness.memcached
    nodes[A].data[f"user:{vanished}"] = b"stale"
    harness.start(make_config(rule), values=values)
    confirmed(harness, harness.source.commit([updated(found), updated(vanished)]))
    assert nodes[A].data == {f"user:{found}": b"payload-1"}
    assert [row["id"] for _, row in values.queries] == [found, vanished]


def test_refresh_whose_value_query_fails_deletes_instead(harness: Harness) -> None:
    """A failing value query never leaves the old value: the key is deleted, with a warning."""
    rule = {
        "table": "users",
        "keys": ["user:{id}"],
        "action": "refresh",
        "value": {"query": "SELECT payload FROM user_cache WHERE id = %(id)s"},
    }
    user = ids_on(C)[0]
    harness.memcached[C].data[f"user:{user}"] = b"stale"
    daemon = harness.start(make_config(rule), values=Values({}, failing=True))
    confirmed(harness, harness.source.commit([updated(user)]))
    assert harness.memcached[C].data == {}
    assert harness.memcached[C].deleted() == [f"user:{user}"]
    assert daemon.log.events("refresh query failed; deleting instead")


def test_bump_rule_creates_the_counter_then_increments_it(harness: Harness) -> None:
    """action: bump adds the missing counter as 1 (incr NOT_FOUND → add), then increments."""
    rule = {"table": "users", "keys": ["gen:users"], "action": "bump"}
    harness.start(make_config(rule))
    node = harness.memcached[owner("gen:users")]
    confirmed(harness, harness.source.commit([updated(1)]))
    assert node.data == {"gen:users": b"1"}
    confirmed(harness, harness.source.commit([updated(2)]))
    assert node.data == {"gen:users": b"2"}
    assert [c.verb for c in node.received() if c.verb != "stats"] == ["incr", "add", "incr"]


def test_bump_that_creates_the_counter_is_counted_as_created(harness: Harness) -> None:
    """A bump that had to create its counter is reported with result "created"."""
    rule = {"table": "users", "keys": ["gen:users"], "action": "bump"}
    daemon = harness.start(make_config(rule))
    confirmed(harness, harness.source.commit([updated(1)]))

    def counted(result: str) -> float | None:
        return daemon.metric("operations_total", pool="default", op="bump", result=result)

    wait_until(lambda: counted("created") or counted("ok"), "the bump counted")
    assert (counted("created"), counted("ok")) == (1, None)


def test_redelete_deletes_the_key_again_after_the_delay(harness: Harness) -> None:
    """redelete_after deletes the key a second time (a reader may have stored the old row
    meanwhile); the position does not wait for that second delete."""
    user = ids_on(A)[0]
    key = f"user:{user}"
    node = harness.memcached[A]
    daemon = harness.start(make_config(servers=[A, B, C], redelete_after="0.3s"))
    position = harness.source.commit([updated(user)])
    confirmed(harness, position)
    wait_until(lambda: node.deleted() == [key], "the first delete")
    node.data[key] = b"old row stored by a slow reader"
    wait_until(lambda: node.deleted() == [key, key], "the re-delete")
    assert key not in node.data
    first_confirmation = harness.source.confirmed_at(position)
    assert first_confirmation is not None
    assert first_confirmation.seq < node.received("delete")[1].seq
    daemon.wait_metric("operations_total", 1, pool="default", op="redelete", result="sent")
    for other in (B, C):
        assert harness.memcached[other].deleted() == []


def test_truncate_flushes_every_node_of_the_pool(harness: Harness) -> None:
    """A truncate's keys cannot be listed: every node of the pool gets one flush_all."""
    rule = {"table": "users", "keys": ["user:{id}"], "on": ["update", "truncate"]}
    daemon = harness.start(make_config(rule))
    confirmed(harness, harness.source.commit([Change("truncate", "public", "users")]))
    for node in harness.memcached.nodes.values():
        assert [c.verb for c in node.received() if c.verb != "stats"] == ["flush_all"]
    daemon.wait_metric("operations_total", 3, pool="default", op="flush", result="ok")


def test_key_that_cannot_be_built_is_counted_and_the_others_still_deleted(
    harness: Harness,
) -> None:
    """A template whose column is absent is counted in unbuildable_keys_total and logged;
    the keys that can be built are deleted and the position moves on."""
    rule = {"table": "users", "keys": ["user:{id}", "email:{email}"]}
    daemon = harness.start(make_config(rule))
    changes = [
        Change("update", "public", "users", new={"id": i, "email": f"{i}@y"}, old={"id": i})
        for i in (7, 8)
    ]
    confirmed(harness, harness.source.commit(changes))
    deleted = [c.key for c in harness.memcached.received("delete")]
    assert sorted(deleted) == ["email:7@y", "email:8@y", "user:7", "user:8"]
    assert daemon.metric("unbuildable_keys_total", table="public.users", rule="0") == 2
    (logged,) = daemon.log.events("key not built")  # the same problem: logged once a minute
    assert logged["template"] == "email:{email}" and "absent" in logged["reason"]
