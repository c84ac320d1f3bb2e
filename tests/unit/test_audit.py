"""The audit's judgement: the keys a row gives, what they should hold, and each copy's verdict."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from invalidator.config import parse_config
from invalidator.config.build import compile_rules
from invalidator.core.audit import (
    MAX_EXAMPLES,
    RecentRows,
    RuleTally,
    audited_rules,
    expected_json,
    judge,
    row_keys,
    shorten,
)
from invalidator.core.changes import Change
from invalidator.core.rules import CompiledRule

USERS_JSON = {
    "table": "users",
    "keys": ["user:{id}", "user_by_email:{email}"],
    "value": {"json": ["id", "email", "name"]},
}


def rules(*configs: dict[str, Any]) -> tuple[CompiledRule, ...]:
    config = parse_config(
        {"pools": {"default": {"servers": ["a:1"]}}, "rules": list(configs)}, "test.yaml"
    )
    return compile_rules(config).rules


def test_keys_of_a_row_follow_the_templates() -> None:
    """Every template of the rule gives one key for the row, in order."""
    (rule,) = rules(USERS_JSON)
    found = row_keys(rule, {"id": 7, "email": "a@x", "name": "A"})
    assert [(key, t.source) for key, t in found] == [
        ("user:7", "user:{id}"),
        ("user_by_email:a@x", "user_by_email:{email}"),
    ]


def test_a_key_the_row_cannot_build_is_not_audited() -> None:
    """A NULL key column or a key memcached refuses gives no key (the daemon writes none)."""
    (rule,) = rules(USERS_JSON)
    assert [key for key, _ in row_keys(rule, {"id": 7, "email": None})] == ["user:7"]
    assert [key for key, _ in row_keys(rule, {"id": 7, "email": "has space"})] == ["user:7"]


def test_a_constant_key_is_not_audited() -> None:
    """A key without columns is every row's: no row says what it holds."""
    (rule,) = rules({"table": "t", "keys": ["all_t", "t:{id}"], "value": {"json": ["id"]}})
    assert [key for key, _ in row_keys(rule, {"id": 1})] == ["t:1"]


def test_expected_json_is_what_the_app_stores() -> None:
    """value.json gives exactly json.dumps of the columns in their order, as the app does."""
    (rule,) = rules(USERS_JSON)
    row = {"name": "A", "email": "a@x", "id": 7, "other": 1}
    expected = json.dumps({"id": 7, "email": "a@x", "name": "A"}).encode()
    assert expected_json(rule, row) == expected


def test_expected_json_serialises_numeric_like_a_refresh() -> None:
    """A numeric column (Decimal, as the stream and psycopg give it) becomes a JSON number."""
    (rule,) = rules({"table": "p", "keys": ["p:{id}"], "value": {"json": ["id", "price"]}})
    assert expected_json(rule, {"id": 1, "price": Decimal("1.10")}) == b'{"id": 1, "price": 1.1}'


def test_expected_json_unknown_without_every_column() -> None:
    """A row lacking a value column has no expected value (never a guessed one)."""
    (rule,) = rules(USERS_JSON)
    assert expected_json(rule, {"id": 7, "email": "a@x"}) is None


def test_identical_bytes_are_fresh() -> None:
    assert judge(b'{"id": 1}', b'{"id": 1}') == "fresh"


def test_same_document_other_bytes_is_reformatted_not_stale() -> None:
    """Another serialisation of the same document (spacing) is reported apart, not stale."""
    assert judge(b'{"id":1,"name":"A"}', b'{"id": 1, "name": "A"}') == "reformatted"


def test_another_document_is_stale() -> None:
    assert judge(b'{"id": 1, "name": "old"}', b'{"id": 1, "name": "new"}') == "stale"


def test_bytes_that_are_not_json_and_differ_are_stale() -> None:
    assert judge(b"\xff\x00pickle", b'{"id": 1}') == "stale"


def test_no_copy_is_absent() -> None:
    assert judge(None, b'{"id": 1}') == "absent"


def test_a_copy_of_a_row_without_value_is_stale() -> None:
    """Expected None (a value query that finds no row): whatever is cached is stale."""
    assert judge(b"{}", None) == "stale"


def test_tally_counts_each_verdict() -> None:
    """copies = every read, cached = copies found, split into fresh/reformatted/stale."""
    tally = RuleTally(0, "default", "public.users")
    for verdict in ("fresh", "fresh", "reformatted", "stale", "absent"):
        tally.count(verdict)  # type: ignore[arg-type]
    assert (tally.copies, tally.cached, tally.fresh, tally.reformatted, tally.stale) == (
        5,
        4,
        2,
        1,
        1,
    )


def test_tally_keeps_at_most_ten_examples_shortened() -> None:
    """Examples stop at MAX_EXAMPLES; long values are cut with an ellipsis."""
    tally = RuleTally(0, "default", "public.users")
    for i in range(MAX_EXAMPLES + 5):
        tally.example(f"k{i}", "a:1", b"x" * 500, b"y")
    assert len(tally.examples) == MAX_EXAMPLES
    assert tally.examples[0].cached == shorten(b"x" * 500)
    assert tally.examples[0].cached is not None and tally.examples[0].cached.endswith("…")
    assert len(tally.examples[0].cached) == 120


def test_only_rules_that_say_what_they_store_are_audited() -> None:
    """Refresh rules and delete rules with value are audited; plain deletes are not."""
    compiled = rules(
        USERS_JSON,
        {"table": "users", "keys": ["plain:{id}"]},
        {"table": "p", "keys": ["p:{id}"], "action": "refresh", "value": {"query": "SELECT 1"}},
    )
    assert [r.index for r in audited_rules(compiled)] == [0, 2]
    assert [r.index for r in audited_rules(compiled, only=2)] == [2]


def test_value_on_a_delete_rule_is_not_read_from_the_stream() -> None:
    """A delete rule's value is for audit only: the columns the daemon needs stay the keys'."""
    (rule,) = rules(USERS_JSON)
    assert rule.columns == frozenset({"id", "email"})


def test_recent_rows_keep_the_key_columns_of_changed_rows_per_audited_rule() -> None:
    """An UPDATE's new row and a DELETE's old row are remembered for the audited rule,
    by the columns its keys need; a rule without value remembers nothing."""
    compiled = rules(USERS_JSON, {"table": "users", "keys": ["plain:{id}"]})
    recent = RecentRows(compiled)
    recent.note(Change("update", "public", "users", new={"id": 1, "email": "a@x", "name": "A"}))
    recent.note(Change("delete", "public", "users", old={"id": 2, "email": "b@x"}))
    recent.note(Change("insert", "public", "other", new={"id": 3, "email": "c@x"}))
    assert recent.take(1, 10) == []
    assert recent.take(0, 10) == [{"id": 1, "email": "a@x"}, {"id": 2, "email": "b@x"}]
    assert recent.take(0, 10) == []  # taken once


def test_recent_rows_are_bounded_oldest_dropped() -> None:
    (rule,) = rules(USERS_JSON)
    recent = RecentRows((rule,), size=3)
    for i in range(5):
        recent.note(Change("insert", "public", "users", new={"id": i, "email": f"{i}@x"}))
    assert [row["id"] for row in recent.take(0, 10)] == [2, 3, 4]


def test_a_recent_row_without_a_key_column_is_not_remembered() -> None:
    """A NULL or absent key column cannot find the row again."""
    (rule,) = rules(USERS_JSON)
    recent = RecentRows((rule,))
    recent.note(Change("insert", "public", "users", new={"id": 1, "email": None}))
    recent.note(Change("delete", "public", "users", old={"id": 2}))
    assert recent.take(0, 10) == []
