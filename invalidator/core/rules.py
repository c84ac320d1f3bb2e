"""The rules engine: a pure function from a ``Change`` to cache operations.

Key templates see the new row on INSERT, the old row on DELETE and both on UPDATE (so a
changed key column invalidates the old and the new key). On UPDATE, columns missing from
the new row (unchanged TOAST values) are taken from the old row when it has them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from invalidator.core.changes import Change, Row
from invalidator.core.operations import EMPTY_PLAN, Operation, OpName, Plan, SkippedKey
from invalidator.core.templates import Template, Unbuildable, key_problem

TableName = tuple[str, str]  # (schema, table)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready for the hot path: templates parsed, sets for membership tests."""

    index: int
    schema: str
    table: str
    on: frozenset[str]
    templates: tuple[Template, ...]
    action: OpName
    pool: str
    when_changed: tuple[str, ...] | None
    json_columns: tuple[str, ...] | None
    ttl: int
    value_query: str | None = None  # refresh value from this query, run by the daemon
    redelete: float | None = None  # seconds: delete again after this (race guard)
    truncate: str = "flush"  # flush | bump | warn

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def columns(self) -> frozenset[str]:
        """Every column the daemon reads for the rule (templates, when_changed, and the
        json value of a refresh; a delete rule's ``value`` is only read by ``audit``)."""
        names = {c for t in self.templates for c in t.columns}
        names.update(self.when_changed or ())
        if self.action == "refresh":
            names.update(self.json_columns or ())
        return frozenset(names)

    @property
    def audited(self) -> bool:
        """``audit`` can judge the rule's keys: it says what they hold (``value``) and they
        are not counters."""
        return self.action != "bump" and (
            self.json_columns is not None or self.value_query is not None
        )


@dataclass(slots=True)
class RuleSet:
    """Compiled rules indexed by table; ``aliases`` maps partitions to their parent."""

    rules: tuple[CompiledRule, ...]
    by_table: dict[TableName, tuple[CompiledRule, ...]] = field(default_factory=dict)
    aliases: dict[TableName, TableName] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grouped: dict[TableName, list[CompiledRule]] = {}
        for rule in self.rules:
            grouped.setdefault((rule.schema, rule.table), []).append(rule)
        self.by_table = {name: tuple(rules) for name, rules in grouped.items()}

    @property
    def tables(self) -> tuple[TableName, ...]:
        return tuple(self.by_table)

    def with_partitions(self, partitions: Mapping[TableName, TableName]) -> RuleSet:
        """A copy whose rules on a partitioned parent also match these partitions."""
        result = RuleSet(self.rules)
        result.aliases = {
            child: parent for child, parent in partitions.items() if parent in result.by_table
        }
        return result

    def rules_for(self, schema: str, table: str) -> tuple[CompiledRule, ...]:
        name = (schema, table)
        rules = self.by_table.get(name)
        if rules is None:
            parent = self.aliases.get(name)
            if parent is None:
                return ()
            rules = self.by_table[parent]
        return rules


def json_default(value: Any) -> Any:
    """json.dumps fallback for values psycopg returns that json cannot serialise."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_value(columns: Sequence[str], row: Row) -> bytes:
    """What a ``value: {json: columns}`` key holds for ``row``: ``json.dumps`` of a dict of
    those columns in that order (the app's own serialisation); every column must be in
    ``row``."""
    return json.dumps({c: row[c] for c in columns}, default=json_default).encode()


def _changed(old: Row | None, new: Row, columns: Sequence[str]) -> bool:
    if old is None:
        return True
    for column in columns:
        if column not in old or column not in new:
            return True  # unknown counts as changed: never miss an invalidation
        if old[column] != new[column]:
            return True
    return False


def _truncate(matched: Sequence[CompiledRule], table: str, lsn: str | None) -> Plan:
    """A truncate's keys cannot be listed: flush the pool, bump a counter, or report."""
    operations: list[Operation] = []
    skipped: list[SkippedKey] = []
    flushed: set[str] = set()
    for rule in matched:
        policy = rule.truncate if "truncate" in rule.on else "warn"
        if policy == "flush":
            if rule.pool not in flushed:
                flushed.add(rule.pool)
                operations.append(Operation("flush", "", rule.pool, table, lsn, rule=rule.index))
            continue
        for template in rule.templates:
            counter = template.constant
            if policy == "bump" and counter is not None:
                operations.append(
                    Operation("bump", counter, rule.pool, table, lsn, rule=rule.index)
                )
                continue
            reason = (
                "table truncated: its keys cannot be listed (on: [truncate] with "
                "truncate: flush or bump acts on it)"
            )
            skipped.append(SkippedKey(rule.index, table, template.source, reason, lsn, "truncate"))
    return Plan(tuple(operations), tuple(skipped))


def plan(change: Change, rules: RuleSet) -> Plan:
    """Every operation the rules want for ``change``, deduplicated, in rule order."""
    matched = rules.rules_for(change.schema, change.table)
    if not matched:
        return EMPTY_PLAN
    kind = change.kind
    table = change.qualified_table
    lsn = change.lsn
    if kind == "truncate":
        return _truncate(matched, table, lsn)
    new = change.new
    old = change.old
    if kind == "update" and new is not None and old is not None:
        # Columns absent from the new row are unchanged TOAST values: the old row has them.
        missing = old.keys() - new.keys()
        if missing:
            new = {**{c: old[c] for c in missing}, **new}
    images: tuple[tuple[str, Row], ...]
    if kind == "insert":
        images = (("new", new),) if new is not None else ()
    elif kind == "delete":
        images = (("old", old),) if old is not None else ()
    else:
        images = tuple((name, row) for name, row in (("old", old), ("new", new)) if row is not None)

    operations: list[Operation] = []
    skipped: list[SkippedKey] = []
    seen: set[tuple[str, str, str]] = set()
    for rule in matched:
        if kind not in rule.on:
            continue
        if (
            kind == "update"
            and rule.when_changed is not None
            and new is not None
            and not _changed(old, new, rule.when_changed)
        ):
            continue
        _apply_rule(rule, kind, images, new, table, lsn, operations, skipped, seen)
    if not operations and not skipped:
        return EMPTY_PLAN
    return Plan(tuple(operations), tuple(skipped))


def _apply_rule(
    rule: CompiledRule,
    kind: str,
    images: Iterable[tuple[str, Row]],
    new: Row | None,
    table: str,
    lsn: str | None,
    operations: list[Operation],
    skipped: list[SkippedKey],
    seen: set[tuple[str, str, str]],
) -> None:
    op: OpName = rule.action
    value: bytes | None = None
    ttl: int | None = None
    if op == "refresh":
        if kind == "delete" or new is None:
            op = "delete"  # the row is gone: nothing to refresh it with
        elif rule.json_columns is not None:
            absent = [c for c in rule.json_columns if c not in new]
            if absent:
                # Without the value the refresh degrades to a delete: never leave it stale.
                skipped.append(
                    SkippedKey(
                        rule.index,
                        table,
                        f"value.json[{absent[0]}]",
                        f"column {absent[0]} absent from the new row",
                        lsn,
                        "absent",
                    )
                )
                op = "delete"
            else:
                value = json_value(rule.json_columns, new)
                ttl = rule.ttl
        else:
            ttl = rule.ttl  # value None: the daemon runs rule.value_query for it
    for template in rule.templates:
        for image_name, row in images:
            key = template.render(row)
            if isinstance(key, Unbuildable):
                reason = f"column {key.column} is {key.reason} in the {image_name} row"
                skipped.append(
                    SkippedKey(rule.index, table, template.source, reason, lsn, key.reason)
                )
                continue
            # On UPDATE the old image only invalidates; the new image carries the value.
            this_op: OpName = op if image_name == "new" or op != "refresh" else "delete"
            ident = (this_op, rule.pool, key)
            if ident in seen:
                continue  # the same key from the other image or another rule: checked once
            seen.add(ident)
            problem = key_problem(key)
            if problem is not None:
                skipped.append(
                    SkippedKey(
                        rule.index,
                        table,
                        template.source,
                        f"{problem}: {key[:60]!r}",
                        lsn,
                        "invalid",
                    )
                )
                continue
            if this_op == "refresh":
                operations.append(
                    Operation("refresh", key, rule.pool, table, lsn, value, ttl, rule.index)
                )
            else:
                operations.append(Operation(this_op, key, rule.pool, table, lsn, rule=rule.index))


def gap_operations(
    rules: RuleSet, pools: Iterable[str], policy: str, reason: str
) -> tuple[Operation, ...]:
    """What answers a gap (changes that may have been missed: any key may be stale).

    ``flush`` empties every pool. ``bump`` increments the counters of a pool whose rules
    are all bump rules with fixed counter keys, and still flushes every other pool, whose
    keys no counter reaches: a gap is never answered with keys left stale."""
    table = f"gap:{reason}"
    operations: list[Operation] = []
    for pool in pools:
        pool_rules = [r for r in rules.rules if r.pool == pool]
        counters_only = bool(pool_rules) and all(
            r.action == "bump" and all(t.constant is not None for t in r.templates)
            for r in pool_rules
        )
        if policy != "bump" or not counters_only:
            operations.append(Operation("flush", "", pool, table))
            continue
        seen: set[str] = set()
        for rule in pool_rules:
            for template in rule.templates:
                key = template.constant
                if key is not None and key not in seen:
                    seen.add(key)
                    operations.append(Operation("bump", key, pool, table, rule=rule.index))
    return tuple(operations)
