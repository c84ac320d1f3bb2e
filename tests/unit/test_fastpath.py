"""The delete fast path must agree with the general rules engine whenever it answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from invalidator.config import load_config, parse_config
from invalidator.config.rules import compile_rules
from invalidator.core.changes import Change
from invalidator.core.fastpath import FastPlanner, compile_renderer
from invalidator.core.rules import RuleSet, plan
from invalidator.core.templates import compile_template
from invalidator.sources.wal2json import decode_v2

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KINDS = {"I": "insert", "U": "update", "D": "delete"}


def general(rules: RuleSet, line: bytes) -> list[tuple[str, str]] | None:
    change = decode_v2(line)
    assert isinstance(change, Change)
    result = plan(change, rules)
    if result.skipped:
        return None
    return [(op.pool, op.key) for op in result.operations]


def fast(rules: RuleSet, line: bytes) -> list[tuple[str, str]] | None:
    record: dict[str, Any] = orjson.loads(line)
    name = (record["schema"], record["table"])
    matched = rules.rules_for(*name)
    if not FastPlanner.eligible(matched) or b'"type":"numeric' in line:
        return None
    return FastPlanner(matched, ".".join(name)).keys(record, KINDS[record["action"]])


def test_fast_path_matches_plan_on_every_fixture_record() -> None:
    """Every I/U/D record of every capture: same keys in the same order, or no answer."""
    rules = compile_rules(load_config(FIXTURES / "rules.yaml"))
    answered = 0
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            if raw[11:12] not in (b"I", b"U", b"D"):
                continue
            quick = fast(rules, raw)
            if quick is not None:
                answered += 1
                assert quick == general(rules, raw), (path.name, raw[:120])
    assert answered > 0


def test_plain_delete_rule_takes_the_fast_path_for_a_bulk_update() -> None:
    """All 1,000 rows of the bulk capture are answered by the fast path, identically."""
    rules = compile_rules(
        parse_config(
            {
                "pools": {"default": {"servers": ["a:1", "b:2"]}},
                "rules": [{"table": "items", "keys": ["item:{id}", "item_v2:{id}"]}],
            },
            "x",
        )
    )
    lines = [
        raw for raw in (FIXTURES / "bulk.jsonl").read_bytes().splitlines() if raw[11:12] == b"U"
    ]
    answers = [fast(rules, raw) for raw in lines]
    assert len(lines) == 1000 and None not in answers
    assert answers == [general(rules, raw) for raw in lines]


def test_fast_path_declines_what_it_cannot_decide() -> None:
    """NULL, space, non-ASCII and over-long keys go to the general path (which reports)."""
    rules = compile_rules(
        parse_config(
            {
                "pools": {"default": {"servers": ["a:1"]}},
                "rules": [{"table": "t", "keys": ["k:{v}"]}],
            },
            "x",
        )
    )
    for value in (None, "a b", "é", "x" * 300):
        line = orjson.dumps(
            {
                "action": "I",
                "schema": "public",
                "table": "t",
                "columns": [{"name": "v", "type": "text", "value": value}],
            }
        )
        assert fast(rules, line) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(), st.text(max_size=20), st.booleans()))
def test_compiled_renderer_formats_like_the_template(value: Any) -> None:
    """The generated f-string renders exactly what Template.render does."""
    template = compile_template('x{{"}}:{v}\\\\{w}')
    row = {"v": value, "w": 1}
    assert compile_renderer(template)(row) == template.render(row)
