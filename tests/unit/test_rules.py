"""The rules engine: which keys a change invalidates."""

from __future__ import annotations

from typing import Any

from invalidator.config import parse_config
from invalidator.config.build import compile_rules
from invalidator.core.changes import Change
from invalidator.core.operations import Operation
from invalidator.core.rules import RuleSet, plan


def ruleset(*rules: dict[str, Any]) -> RuleSet:
    config = parse_config(
        {
            "pools": {"default": {"servers": ["a:1"]}, "other": {"servers": ["b:2"]}},
            "rules": list(rules),
        },
        "test.yaml",
    )
    return compile_rules(config)


USERS = {"table": "users", "keys": ["user:{id}", "user_by_email:{email}"]}


def keys(change: Change, rules: RuleSet) -> list[str]:
    return [op.key for op in plan(change, rules).operations]


def test_insert_uses_the_new_row() -> None:
    """INSERT builds keys from the inserted row."""
    change = Change("insert", "public", "users", new={"id": 1, "email": "a@x"})
    assert keys(change, ruleset(USERS)) == ["user:1", "user_by_email:a@x"]


def test_delete_uses_the_old_row() -> None:
    """DELETE builds keys from the old row (replica identity)."""
    change = Change("delete", "public", "users", old={"id": 3, "email": "c@x"})
    assert keys(change, ruleset(USERS)) == ["user:3", "user_by_email:c@x"]


def test_update_of_key_column_invalidates_old_and_new_key() -> None:
    """A changed email removes both user_by_email keys; user:{id} once."""
    change = Change(
        "update",
        "public",
        "users",
        new={"id": 2, "email": "new@x"},
        old={"id": 2, "email": "old@x"},
    )
    assert keys(change, ruleset(USERS)) == ["user:2", "user_by_email:old@x", "user_by_email:new@x"]


def test_update_without_old_value_reports_the_old_key_as_unbuildable() -> None:
    """With REPLICA IDENTITY DEFAULT the old email is unknown: counted, not guessed."""
    change = Change("update", "public", "users", new={"id": 2, "email": "new@x"}, old={"id": 2})
    result = plan(change, ruleset(USERS))
    assert [op.key for op in result.operations] == ["user:2", "user_by_email:new@x"]
    assert [(s.rule, s.table, s.template, s.reason) for s in result.skipped] == [
        (0, "public.users", "user_by_email:{email}", "column email is absent in the old row")
    ]


def test_unchanged_toast_column_is_taken_from_the_old_row() -> None:
    """Columns missing from the new row (unchanged TOAST) come from the old row."""
    rules = ruleset({"table": "docs", "keys": ["doc:{slug}"]})
    change = Change("update", "public", "docs", new={"id": 1}, old={"id": 1, "slug": "s"})
    assert keys(change, rules) == ["doc:s"]


def test_null_key_column_is_skipped_and_reported() -> None:
    """A NULL email builds no key, and says so."""
    result = plan(Change("insert", "public", "users", new={"id": 1, "email": None}), ruleset(USERS))
    assert [op.key for op in result.operations] == ["user:1"]
    assert [s.reason for s in result.skipped] == ["column email is null in the new row"]


def test_invalid_key_is_never_sent() -> None:
    """A key with a space is reported with the reason and not planned."""
    result = plan(
        Change("insert", "public", "users", new={"id": 1, "email": "a b"}), ruleset(USERS)
    )
    assert [op.key for op in result.operations] == ["user:1"]
    assert [s.reason for s in result.skipped] == ["key contains whitespace: 'user_by_email:a b'"]


def test_on_limits_the_change_kinds() -> None:
    """A rule `on: [delete]` ignores inserts."""
    rules = ruleset({**USERS, "on": ["delete"]})
    assert keys(Change("insert", "public", "users", new={"id": 1, "email": "a"}), rules) == []


def test_when_changed_skips_updates_of_other_columns() -> None:
    """when_changed: [email] ignores an update that only touched name."""
    rules = ruleset({**USERS, "when_changed": ["email"]})
    change = Change(
        "update",
        "public",
        "users",
        new={"id": 1, "email": "a", "name": "n2"},
        old={"id": 1, "email": "a", "name": "n1"},
    )
    assert keys(change, rules) == []


def test_when_changed_acts_when_the_old_value_is_unknown() -> None:
    """If the old value is not in the change, assume it changed: never miss one."""
    rules = ruleset({**USERS, "when_changed": ["email"]})
    change = Change("update", "public", "users", new={"id": 1, "email": "a"}, old={"id": 1})
    assert keys(change, rules) == ["user:1", "user_by_email:a"]


def test_schema_must_match() -> None:
    """A rule on public.users ignores audit.users."""
    assert (
        keys(Change("insert", "audit", "users", new={"id": 1, "email": "a"}), ruleset(USERS)) == []
    )


def test_pool_is_carried_by_each_operation() -> None:
    """Operations name the rule's pool."""
    rules = ruleset({"table": "sessions", "keys": ["s:{id}"], "pool": "other"})
    ops = plan(Change("delete", "public", "sessions", old={"id": 9}), rules).operations
    assert [(op.key, op.pool) for op in ops] == [("s:9", "other")]


def test_same_key_from_two_rules_is_planned_once() -> None:
    """Duplicate keys within one change are deduplicated."""
    rules = ruleset(USERS, {"table": "users", "keys": ["user:{id}"]})
    assert keys(Change("delete", "public", "users", old={"id": 1, "email": "e"}), rules) == [
        "user:1",
        "user_by_email:e",
    ]


def test_partition_matches_rule_on_its_parent() -> None:
    """With partitions known, a change on measurements_eu uses measurements' rules."""
    rules = ruleset({"table": "measurements", "keys": ["m:{id}"]}).with_partitions(
        {("public", "measurements_eu"): ("public", "measurements")}
    )
    assert keys(Change("insert", "public", "measurements_eu", new={"id": 5}), rules) == ["m:5"]


def test_truncate_reports_every_template_as_unbuildable() -> None:
    """A truncate cannot list keys; it is reported per template, never silent."""
    result = plan(Change("truncate", "public", "users"), ruleset(USERS))
    assert result.operations == ()
    assert [s.template for s in result.skipped] == ["user:{id}", "user_by_email:{email}"]


def test_refresh_writes_json_of_the_columns_like_the_app() -> None:
    """refresh value is byte-identical to json.dumps of a dict in the given order."""
    rules = ruleset(
        {
            "table": "products",
            "keys": ["product:{id}"],
            "action": "refresh",
            "value": {"json": ["id", "name", "price"]},
            "ttl": 1800,
        }
    )
    change = Change(
        "insert", "public", "products", new={"price": 9.5, "name": "Café", "id": 7, "extra": 1}
    )
    assert plan(change, rules).operations == (
        Operation(
            "refresh",
            "product:7",
            "default",
            "public.products",
            value=b'{"id": 7, "name": "Caf\\u00e9", "price": 9.5}',
            ttl=1800,
        ),
    )


def test_refresh_on_delete_deletes() -> None:
    """When the row is gone there is nothing to refresh with: delete."""
    rules = ruleset(
        {
            "table": "products",
            "keys": ["product:{id}"],
            "action": "refresh",
            "value": {"json": ["id"]},
        }
    )
    ops = plan(Change("delete", "public", "products", old={"id": 7}), rules).operations
    assert [(op.op, op.key) for op in ops] == [("delete", "product:7")]


def test_truncate_with_flush_policy_flushes_the_pool_once() -> None:
    """Default policy of a delete rule with truncate in `on`: one flush of its pool."""
    rules = ruleset(
        {**USERS, "on": ["insert", "truncate"]},
        {"table": "users", "keys": ["u2:{id}"], "on": ["truncate"]},
    )
    result = plan(Change("truncate", "public", "users"), rules)
    assert [(op.op, op.pool) for op in result.operations] == [("flush", "default")]
    assert result.skipped == ()


def test_truncate_of_a_bump_rule_bumps_its_counter() -> None:
    """A generation counter (a template without columns) is bumped on truncate."""
    rules = ruleset(
        {
            "table": "users",
            "keys": ["gen:users"],
            "action": "bump",
            "on": ["insert", "update", "delete", "truncate"],
        }
    )
    ops = plan(Change("truncate", "public", "users"), rules).operations
    assert [(op.op, op.key) for op in ops] == [("bump", "gen:users")]


def test_truncate_with_warn_policy_only_reports() -> None:
    """truncate: warn plans nothing and reports every template."""
    rules = ruleset({**USERS, "on": ["truncate"], "truncate": "warn"})
    result = plan(Change("truncate", "public", "users"), rules)
    assert (result.operations, [s.kind for s in result.skipped]) == ((), ["truncate"] * 2)


def test_bump_rule_increments_its_counter_once_per_change() -> None:
    """One bump per change even if the old and new rows give the same counter key."""
    rules = ruleset({"table": "users", "keys": ["gen:users"], "action": "bump"})
    ops = plan(Change("update", "public", "users", new={"id": 1}, old={"id": 1}), rules)
    assert [(op.op, op.key) for op in ops.operations] == [("bump", "gen:users")]


def test_ttl_policy_names_resolve_through_the_pool() -> None:
    """`ttl: user_profile` takes the pool's TTL for that data type."""
    config = parse_config(
        {
            "pools": {"default": {"servers": ["a:1"], "ttls": {"user_profile": 600}}},
            "rules": [
                {
                    "table": "products",
                    "keys": ["p:{id}"],
                    "action": "refresh",
                    "value": {"json": ["id"]},
                    "ttl": "user_profile",
                }
            ],
        },
        "t.yaml",
    )
    ops = plan(
        Change("insert", "public", "products", new={"id": 1}), compile_rules(config)
    ).operations
    assert [(op.op, op.ttl) for op in ops] == [("refresh", 600)]
