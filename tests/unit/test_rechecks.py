"""A query refresh is read again a moment later and rewritten when it changed
(runtime/rechecks.py): the commit-to-visible gap and the cache-aside race, closed."""

from __future__ import annotations

from typing import Any

import structlog

from invalidator.core.operations import Operation
from invalidator.errors import SourceError
from invalidator.runtime.rechecks import RECHECK_AFTER, RefreshRechecks, recheck_delay

QUERY = "SELECT id, name FROM products WHERE id = %(id)s"


class Values:
    """The database's answers to the value query, in turn."""

    def __init__(self, *answers: bytes | Exception | None):
        self.answers = list(answers)
        self.asked: list[dict[str, Any]] = []

    def value(self, query: str, row: dict[str, Any]) -> bytes | None:
        self.asked.append(row)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def refresh(value: bytes = b'{"id": 1, "name": "old"}') -> Operation:
    return Operation("refresh", "product:1", "default", "public.products", value=value, ttl=60)


def sent_once(values: Values, op: Operation) -> RefreshRechecks:
    rechecks = RefreshRechecks(values, structlog.get_logger())
    rechecks.remember(op, {"id": 1})
    assert rechecks.sent(op, QUERY, due=10.0) == []
    return rechecks


def test_nothing_is_rewritten_when_the_value_is_the_same() -> None:
    op = refresh()
    rechecks = sent_once(Values(op.value), op)
    assert rechecks.due(10.0) == []
    assert not rechecks


def test_a_value_read_before_the_commit_was_visible_is_rewritten() -> None:
    op = refresh(b'{"id": 1, "name": "old"}')
    rechecks = sent_once(Values(b'{"id": 1, "name": "new"}'), op)
    assert rechecks.due(9.9) == []  # not yet
    (again,) = rechecks.due(10.0)
    assert (again.op, again.key, again.value, again.ttl) == (
        "refresh",
        "product:1",
        b'{"id": 1, "name": "new"}',
        60,
    )


def test_a_row_gone_by_the_re_check_deletes_the_key() -> None:
    rechecks = sent_once(Values(None), refresh())
    (again,) = rechecks.due(10.0)
    assert (again.op, again.key, again.value) == ("delete", "product:1", None)


def test_a_failing_re_check_deletes_the_key() -> None:
    rechecks = sent_once(Values(SourceError("connection lost")), refresh())
    (again,) = rechecks.due(10.0)
    assert again.op == "delete"


def test_the_re_check_runs_with_the_changes_row() -> None:
    values = Values(refresh().value)
    sent_once(values, refresh()).due(10.0)
    assert values.asked == [{"id": 1}]


def test_an_operation_sent_to_two_nodes_is_re_checked_once() -> None:
    op = refresh()
    values = Values(b"new")
    rechecks = sent_once(values, op)
    assert rechecks.sent(op, QUERY, due=10.0) == []  # the second owner's copy
    assert len(rechecks.due(10.0)) == 1
    assert len(values.asked) == 1


def test_the_delay_is_redelete_after_when_the_rule_has_one() -> None:
    assert recheck_delay(None) == RECHECK_AFTER
    assert recheck_delay(0.5) == 0.5
