"""The hot path for delete rules: a wal2json record straight to (pool, key) pairs.

``plan()`` is general and reports every problem; most changes have none. A table whose
rules are all plain deletes (no ``when_changed``) gets a ``FastPlanner``: its templates are
compiled to straight-line Python over the parsed record. Anything unusual — a NULL or
absent column, a float where an exact number is expected, a key memcached would refuse or
that is not plain ASCII, an UPDATE whose new row lacks old columns (TOAST) — returns
``None``, and the caller takes the general path, which gives the same answer and reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from invalidator.core.rules import CompiledRule, RuleSet, TableName
from invalidator.core.templates import MAX_KEY_BYTES, Template

Renderer = Callable[[dict[str, Any]], "str | None"]


def compile_renderer(template: Template) -> Renderer:
    """``Template`` → a function from a row dict to the key, or None when unusual."""
    lines = ["def render(r):"]
    parts: list[str] = []
    for i, column in enumerate(template.columns):
        lines.append(f"    v{i} = r.get({column!r})")
        # None: NULL or absent; float: possibly an inexact number (see wal2json.py).
        lines.append(f"    if v{i} is None or type(v{i}) is float: return None")
    for i, literal in enumerate(template.literals):
        if literal:
            parts.append(
                literal.replace("\\", "\\\\")
                .replace("{", "{{")
                .replace("}", "}}")
                .replace('"', '\\"')
                .replace("\n", "\\n")
                .replace("\r", "\\r")
            )
        if i < len(template.columns):
            parts.append(f"{{v{i}}}")
    lines.append(f'    return f"{"".join(parts)}"')
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)
    return namespace["render"]  # type: ignore[no-any-return]


def _row(columns: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {c["name"]: c["value"] for c in columns}


class FastPlanner:
    """Delete-only rules of one table, compiled."""

    __slots__ = ("kinds", "redelete", "renderers", "table", "templates")

    def __init__(self, rules: Sequence[CompiledRule], table: str):
        self.table = table  # "schema.table" as the change reports it (metrics, operations)
        self.redelete = rules[0].redelete if rules else None
        self.renderers: list[tuple[str, Renderer]] = []
        self.templates: list[tuple[str, Template]] = []  # (pool, template), rule order
        kinds: set[str] = set()
        for rule in rules:
            kinds.update(rule.on)
            for template in rule.templates:
                self.renderers.append((rule.pool, compile_renderer(template)))
                self.templates.append((rule.pool, template))
        # Every rule must accept every kind we fast-path, or the general path decides.
        self.kinds = frozenset(
            k for k in ("insert", "update", "delete") if all(k in r.on for r in rules)
        )

    @staticmethod
    def eligible(rules: Sequence[CompiledRule]) -> bool:
        return bool(rules) and all(
            r.action == "delete" and r.when_changed is None and r.redelete == rules[0].redelete
            for r in rules
        )

    def keys(self, record: dict[str, Any], kind: str) -> list[tuple[str, str]] | None:
        """The (pool, key) deletes for ``record`` (deduplicated, rule order), or None."""
        if kind not in self.kinds:
            return None
        rows: tuple[dict[str, Any], ...]
        try:
            if kind == "insert":
                rows = (_row(record["columns"]),)
            elif kind == "delete":
                rows = (_row(record["identity"]),)
            else:
                old = _row(record["identity"])
                new = _row(record["columns"])
                if not old.keys() <= new.keys():
                    return None  # unchanged TOAST columns: the general path merges rows
                rows = (old, new)
        except (KeyError, TypeError):
            return None
        result: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for pool, render in self.renderers:
            for row in rows:
                key = render(row)
                if key is None:
                    return None
                pair = (pool, key)
                if pair in seen:
                    continue
                if (
                    len(key) > MAX_KEY_BYTES
                    or not key.isascii()
                    or not key.isprintable()
                    or " " in key
                ):
                    return None
                seen.add(pair)
                result.append(pair)
        return result


def fast_planners(rules: RuleSet) -> dict[TableName, FastPlanner]:
    """A FastPlanner for every table (and partition alias) whose rules are plain deletes."""
    planners: dict[TableName, FastPlanner] = {}
    for name in list(rules.by_table) + list(rules.aliases):
        table_rules = rules.rules_for(*name)
        if FastPlanner.eligible(table_rules):
            planners[name] = FastPlanner(table_rules, ".".join(name))
    return planners
