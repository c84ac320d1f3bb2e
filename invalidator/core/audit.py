"""Staleness, judged: what a rule's key should hold for a row, and what a cached copy is.

Pure logic for ``invalidator audit`` and the probe inside ``run``: the keys a row gives,
the value a rule's ``value:`` says the app stores, the verdict on one cached copy and the
tally of one rule. Reading rows and keys is the edges' work.

A copy is ``fresh`` when its bytes are the expected bytes, ``reformatted`` when they
differ but parse (JSON) to the same document (a harmless serialisation difference, e.g.
another client's spacing: never called stale), ``stale`` otherwise, and ``absent`` when
the node has no copy. When the row's value is unknown (``expected`` None: a ``query``
value that finds no row) any copy is stale: the app would not find it either.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from invalidator.core.changes import Change, Row
from invalidator.core.rules import CompiledRule, json_value
from invalidator.core.templates import Template, Unbuildable, key_problem

Verdict = Literal["fresh", "reformatted", "stale", "absent"]
Count = Verdict | Literal["rewritten"]
MAX_EXAMPLES = 10
EXAMPLE_CHARS = 120


def row_keys(rule: CompiledRule, row: Row) -> tuple[tuple[str, Template], ...]:
    """The keys ``rule`` gives ``row``, each with its template, in template order. Left
    out: keys it cannot build (a NULL column, a key memcached would refuse: the daemon
    never writes those either) and constant templates (every row shares that key, so no
    row says what it holds)."""
    keys: list[tuple[str, Template]] = []
    for template in rule.templates:
        if not template.columns:
            continue
        key = template.render(row)
        if isinstance(key, Unbuildable) or key_problem(key) is not None:
            continue
        if all(key != seen for seen, _ in keys):
            keys.append((key, template))
    return tuple(keys)


def expected_json(rule: CompiledRule, row: Row) -> bytes | None:
    """The bytes a ``value: {json}`` key holds for ``row``; None when the row lacks a
    column (the edge selected too little) or the rule's value is a query."""
    columns = rule.json_columns
    if columns is None or any(c not in row for c in columns):
        return None
    return json_value(columns, row)


def _parsed(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return _UNPARSABLE


_UNPARSABLE = object()


def judge(cached: bytes | None, expected: bytes | None) -> Verdict:
    """The verdict on one cached copy against the value the row gives now."""
    if cached is None:
        return "absent"
    if expected is None:
        return "stale"
    if cached == expected:
        return "fresh"
    document = _parsed(cached)
    if document is not _UNPARSABLE and document == _parsed(expected):
        return "reformatted"
    return "stale"


def shorten(data: bytes | None, limit: int = EXAMPLE_CHARS) -> str | None:
    """``data`` as text for a report, cut to ``limit`` characters (marked with …)."""
    if data is None:
        return None
    text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class StaleCopy:
    """One stale copy, for the report: where it is, what it holds, what it should."""

    key: str
    node: str
    cached: str | None
    expected: str | None


@dataclass(slots=True)
class RuleTally:
    """What the audit of one rule found. ``copies`` counts the (key, node) reads,
    ``cached`` those that found a value; ``stale`` the copies still stale when re-read."""

    rule: int
    pool: str
    table: str
    rows: int = 0
    recent: int = 0  # of ``rows``, those the stream changed lately
    copies: int = 0
    cached: int = 0
    fresh: int = 0
    reformatted: int = 0
    stale: int = 0
    rechecked: int = 0  # first read stale, re-read after a delay (racing writes are fine)
    rewritten: int = 0  # of those, rewritten at every re-read: no verdict
    examples: list[StaleCopy] = field(default_factory=list)
    error: str | None = None

    def count(self, verdict: Count) -> None:
        """Count a copy's final verdict (``stale`` only once it has been re-checked)."""
        self.copies += 1
        if verdict == "absent":
            return
        if verdict == "rewritten":
            self.rewritten += 1
            return
        self.cached += 1
        if verdict == "fresh":
            self.fresh += 1
        elif verdict == "reformatted":
            self.reformatted += 1
        else:
            self.stale += 1

    def example(self, key: str, node: str, cached: bytes | None, expected: bytes | None) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(StaleCopy(key, node, shorten(cached), shorten(expected)))

    def record(self) -> dict[str, Any]:
        """The JSON object ``audit --format json`` prints for the rule."""
        return {
            "rule": self.rule,
            "pool": self.pool,
            "table": self.table,
            "rows": self.rows,
            "recent": self.recent,
            "copies": self.copies,
            "cached": self.cached,
            "fresh": self.fresh,
            "reformatted": self.reformatted,
            "stale": self.stale,
            "rechecked": self.rechecked,
            "rewritten": self.rewritten,
            "examples": [
                {"key": e.key, "node": e.node, "cached": e.cached, "expected": e.expected}
                for e in self.examples
            ],
            "error": self.error,
        }


def audited_rules(rules: Sequence[CompiledRule], only: int | None = None) -> list[CompiledRule]:
    """The rules ``audit`` can judge (``value`` given, not a bump), or just rule ``only``."""
    return [r for r in rules if r.audited and (only is None or r.index == only)]


class RecentRows:
    """Rows the stream changed lately, per audited rule: the columns of its keys (enough
    to read the row again), at most ``size`` per rule, the oldest dropped first. Written
    by the daemon's loop (``note``), taken by the audit probe's thread (``take``); deque
    appends and pops are atomic. Changes the C hot path takes never pass here."""

    def __init__(self, rules: Sequence[CompiledRule], size: int = 1_000):
        self._by_table: dict[tuple[str, str], list[tuple[int, tuple[str, ...]]]] = {}
        self._rows: dict[int, deque[dict[str, Any]]] = {}
        for rule in audited_rules(rules):
            columns = tuple(dict.fromkeys(c for t in rule.templates for c in t.columns))
            if columns:
                self._by_table.setdefault((rule.schema, rule.table), []).append(
                    (rule.index, columns)
                )
                self._rows[rule.index] = deque(maxlen=size)

    def note(self, change: Change) -> None:
        """Remember ``change``'s row (the new one; the old one of a delete) for its rules."""
        wanted = self._by_table.get((change.schema, change.table))
        if wanted is None:
            return
        row = change.new if change.new is not None else change.old
        if row is None:
            return
        for index, columns in wanted:
            if all(row.get(c) is not None for c in columns):
                self._rows[index].append({c: row[c] for c in columns})

    def take(self, rule: int, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` remembered rows of ``rule``, oldest first, removed."""
        rows = self._rows.get(rule)
        taken: list[dict[str, Any]] = []
        while rows and len(taken) < n:
            taken.append(rows.popleft())
        return taken
