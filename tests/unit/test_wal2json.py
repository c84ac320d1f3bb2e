"""Decoding wal2json records: every action, exact values, clear errors."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from invalidator.core.changes import Begin, Change, Commit, Message
from invalidator.errors import DecodeError
from invalidator.sources.wal2json import decode_v2, read_stream

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def events(name: str) -> list[object]:
    with open(FIXTURES / name, encoding="utf-8") as handle:
        return list(read_stream(handle, name))


def first_change(name: str, kind: str) -> Change:
    return next(e for e in events(name) if isinstance(e, Change) and e.kind == kind)


def test_begin_and_commit_carry_xid_lsns_and_timestamp() -> None:
    """B/C records keep xid, lsn, nextlsn and the commit timestamp."""
    begin, *_, commit = events("basic_users.jsonl")[:5]
    assert isinstance(begin, Begin) and isinstance(commit, Commit)
    assert begin.xid == commit.xid and commit.nextlsn is not None and commit.timestamp


def test_insert_has_new_row_only() -> None:
    """I → new row with typed values, no old row."""
    change = first_change("basic_users.jsonl", "insert")
    assert (change.new, change.old) == (
        {"id": 1, "email": "alice@example.com", "name": "Alice"},
        None,
    )


def test_update_has_new_row_and_identity() -> None:
    """U → new row plus the identity as old row."""
    change = first_change("basic_users.jsonl", "update")
    assert change.old == {"id": 1} and change.new is not None and change.new["id"] == 1


def test_delete_has_identity_only() -> None:
    """D → old row only."""
    change = first_change("basic_users.jsonl", "delete")
    assert (change.new, change.old) == (None, {"id": 3})


def test_truncate_names_each_table() -> None:
    """One T record per truncated table."""
    truncated = [
        e.table for e in events("truncate.jsonl") if isinstance(e, Change) and e.kind == "truncate"
    ]
    assert truncated == ["users", "orders"]


def test_messages_decode_with_prefix_and_content() -> None:
    """M records become Message events (transactional flag kept)."""
    messages = [e for e in events("messages.jsonl") if isinstance(e, Message)]
    assert [(m.transactional, m.prefix, m.content) for m in messages] == [
        (True, "inval", "payload-tx"),
        (False, "inval", "payload-nontx"),
    ]


def test_numeric_values_stay_exact() -> None:
    """numeric keeps scale and digits; bigint stays an exact int; NaN float is None."""
    row = first_change("types.jsonl", "insert").new
    assert row is not None
    assert row["n"] == Decimal("1.10") and str(row["n"]) == "1.10"
    assert row["big"] == Decimal("123456789012345678901234567890.123456789")
    assert row["id"] == 9223372036854775807
    assert row["f"] is None


def test_other_types_keep_wal2json_text() -> None:
    """bool is bool; json, arrays, bytea (hex) and timestamps are PostgreSQL's text."""
    row = first_change("types.jsonl", "insert").new
    assert row is not None
    assert (row["b"], row["j"], row["arr"], row["by"]) == (
        True,
        '{"a":[1,2]}',
        "{1,2,3}",
        "deadbeef",
    )
    assert row["ts"] == "2024-01-02 03:04:05.123456+00"


def test_integers_beyond_64_bits_stay_exact() -> None:
    """A line with a huge integer falls back to the exact parser."""
    line = (
        '{"action":"I","schema":"public","table":"t","columns":'
        '[{"name":"id","type":"int8","value":123456789012345678901234567890}]}'
    )
    change = decode_v2(line)
    assert isinstance(change, Change) and change.new == {"id": 123456789012345678901234567890}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"action":"I","schema":"public","table":"t"', "invalid JSON"),
        ('{"action":"X"}', "unknown action 'X'"),
        ('{"action":"I","schema":"public","table":"t"}', "'I' record has no 'columns'"),
        ('{"action":"D","schema":"public","table":"t"}', "'D' record has no 'identity'"),
        ('{"action":"I","table":"t","columns":[]}', "record has no string 'schema'"),
        ("[1, 2]", "format-version 1 document has no 'change' list"),
    ],
)
def test_malformed_lines_are_located(text: str, reason: str) -> None:
    """Errors name FILE:LINE and the reason."""
    good = (FIXTURES / "basic_users.jsonl").read_text().splitlines()[0]
    with pytest.raises(DecodeError) as info:
        list(read_stream(io.StringIO(good + "\n" + text + "\n"), "in.jsonl"))
    assert str(info.value).startswith(f"in.jsonl:2: {reason}")


def test_v1_document_over_several_lines_is_read() -> None:
    """A pretty-printed format-version 1 document is accumulated until complete."""
    doc = (FIXTURES / "basic_users.v1.json").read_text().splitlines()[0]
    pretty = doc.replace(',"change":[', ',\n"change":[\n').replace("},{", "},\n{")
    assert list(read_stream(io.StringIO(pretty), "p")) == list(read_stream(io.StringIO(doc), "p"))
