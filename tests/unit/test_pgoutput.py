"""Decoding pgoutput messages (protocol 1/2, built byte by byte from the documented
layouts): every message type, values as the wal2json path yields them, clear errors."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest

from invalidator.core.changes import Begin, Change, Commit, Message
from invalidator.errors import DecodeError
from invalidator.hotpath._hotpath import parse_timestamp
from invalidator.sources.pgoutput import PgOutputDecoder, text_value
from invalidator.sources.wal2json import decode_v2
from tests.pgoutput_bytes import U, cstr, insert, relation, tupledata

TEXT, INT4, INT8, BOOL, BYTEA, FLOAT8, NUMERIC, JSONB, TIMESTAMPTZ = (
    25,
    23,
    20,
    16,
    17,
    701,
    1700,
    3802,
    1184,
)


BIG = "123456789012345678901234567890.123456789"
USERS = relation(16384, "public", "users", [("id", INT4, True), ("email", TEXT, False)])


def decoded(*messages: bytes) -> list[object]:
    decoder = PgOutputDecoder()
    events: list[object] = []
    for message in messages:
        events.extend(decoder.decode(message, 0x16B3748))
    return events


def test_begin_and_commit_carry_xid_positions_and_timestamp() -> None:
    """B gives the xid, the commit's LSN and time; C the same xid and its end LSN."""
    when = 5_000_123_400  # µs since 2000-01-01: 1 h 23 min 20.1234 s
    begin = b"B" + struct.pack("!QqI", 0x16B3700, when, 734)
    commit = b"C" + struct.pack("!BQQq", 0, 0x16B3700, 0x16B3748, when)
    assert decoded(begin, commit) == [
        Begin(734, "0/16B3700", "2000-01-01 01:23:20.1234+00"),
        Commit(734, "0/16B3700", "0/16B3748", "2000-01-01 01:23:20.1234+00"),
    ]


def test_commit_timestamp_reads_as_wal2json_prints_it() -> None:
    """The timestamp text parses to the commit time the session acknowledges with."""
    decoder = PgOutputDecoder()
    decoder.decode(b"B" + struct.pack("!QqI", 1, 5_000_000, 1))
    (commit,) = decoder.decode(b"C" + struct.pack("!BQQq", 0, 1, 2, 5_000_000))
    assert isinstance(commit, Commit) and commit.timestamp == "2000-01-01 00:00:05+00"
    assert parse_timestamp(commit.timestamp) == decoder.commit_time == 946_684_805.0
    assert decoder.commit_end == 2 and not decoder.in_transaction


def test_insert_gives_the_new_row_with_typed_values() -> None:
    """I → new row, values converted by the column types of the Relation message."""
    assert decoded(USERS, insert(16384, "7", "a@example.com")) == [
        Change("insert", "public", "users", {"id": 7, "email": "a@example.com"}, None, "0/16B3748")
    ]


def test_update_without_old_tuple_takes_the_identity_from_the_new_row() -> None:
    """The key did not change: old = identity columns of the new row (as wal2json)."""
    update = b"U" + struct.pack("!I", 16384) + b"N" + tupledata("7", "b@example.com")
    (change,) = decoded(USERS, update)
    assert (change.new, change.old) == ({"id": 7, "email": "b@example.com"}, {"id": 7})


def test_update_with_key_tuple_keeps_only_identity_columns() -> None:
    """K: the old identity; the other columns arrive as NULL and are not the old row's."""
    update = (
        b"U" + struct.pack("!I", 16384) + b"K" + tupledata("1", None) + b"N" + tupledata("10", "x")
    )
    (change,) = decoded(USERS, update)
    assert (change.old, change.new) == ({"id": 1}, {"id": 10, "email": "x"})


def test_update_with_old_tuple_keeps_every_old_column_nulls_included() -> None:
    """O (REPLICA IDENTITY FULL): the whole old row."""
    full = relation(9, "public", "t", [("id", INT4, True), ("e", TEXT, True)], "f")
    update = b"U" + struct.pack("!I", 9) + b"O" + tupledata("1", None) + b"N" + tupledata("1", "y")
    (change,) = decoded(full, update)
    assert (change.old, change.new) == ({"id": 1, "e": None}, {"id": 1, "e": "y"})


def test_delete_with_key_and_with_old_tuple() -> None:
    """D: K gives the identity columns only, O every column."""
    key = b"D" + struct.pack("!I", 16384) + b"K" + tupledata("3", None)
    full = relation(9, "public", "t", [("id", INT4, True), ("e", TEXT, True)], "f")
    old = b"D" + struct.pack("!I", 9) + b"O" + tupledata("4", "z")
    assert [c.old for c in decoded(USERS, key, full, old) if isinstance(c, Change)] == [
        {"id": 3},
        {"id": 4, "e": "z"},
    ]


def test_unchanged_toast_is_absent_like_wal2json() -> None:
    """'u' leaves the column out of the row (never None): plan() takes it from the old row."""
    update = b"U" + struct.pack("!I", 16384) + b"N" + tupledata("7", U)
    (change,) = decoded(USERS, update)
    assert change.new == {"id": 7}


def test_null_is_none() -> None:
    """'n' → None."""
    (change,) = decoded(USERS, insert(16384, "7", None))
    assert change.new == {"id": 7, "email": None}


def test_truncate_names_each_table() -> None:
    """One T message, one truncate change per relation, in order."""
    orders = relation(16390, "public", "orders", [("id", INT4, True)])
    truncate = b"T" + struct.pack("!IB", 2, 0) + struct.pack("!II", 16384, 16390)
    changes = [c for c in decoded(USERS, orders, truncate) if isinstance(c, Change)]
    assert [(c.kind, c.table) for c in changes] == [
        ("truncate", "users"),
        ("truncate", "orders"),
    ]


def test_message_transactional_flag_prefix_and_content() -> None:
    """M → Message (flag bit 1 = transactional)."""
    message = b"M" + struct.pack("!BQ", 1, 5) + cstr("inval") + struct.pack("!I", 3) + b"abc"
    assert decoded(message) == [Message(True, "inval", "abc", "0/16B3748")]


def test_type_and_origin_messages_produce_nothing() -> None:
    """Y and O only inform: no event."""
    type_message = b"Y" + struct.pack("!I", 70000) + cstr("public") + cstr("mood")
    origin = b"O" + struct.pack("!Q", 5) + cstr("node_a")
    assert decoded(type_message, origin) == []


def test_empty_namespace_is_pg_catalog() -> None:
    """The Relation message's empty namespace means pg_catalog."""
    rel = relation(5, "", "pg_thing", [("id", INT4, True)])
    (change,) = decoded(rel, insert(5, "1"))
    assert isinstance(change, Change) and change.schema == "pg_catalog"


def test_a_relation_sent_again_replaces_the_old_one() -> None:
    """ALTER TABLE while streaming: the new Relation message's columns apply from then on."""
    altered = relation(
        16384, "public", "users", [("id", INT4, True), ("email", TEXT, False), ("age", INT4, False)]
    )
    events = decoded(USERS, insert(16384, "1", "a"), altered, insert(16384, "2", "b", "30"))
    assert [c.new for c in events if isinstance(c, Change)] == [
        {"id": 1, "email": "a"},
        {"id": 2, "email": "b", "age": 30},
    ]


@pytest.mark.parametrize(
    ("text", "type_oid", "wal2json_value"),
    [
        ("9223372036854775807", INT8, "9223372036854775807"),
        ("1.10", NUMERIC, "1.10"),
        (BIG, NUMERIC, BIG),
        ("12345678901234567890", NUMERIC, "12345678901234567890"),
        ("NaN", NUMERIC, "null"),
        ("-Infinity", FLOAT8, "null"),
        ("1", FLOAT8, "1"),
        ("0.1", FLOAT8, "0.1"),
        ("1e+20", FLOAT8, "1e+20"),
        ("t", BOOL, "true"),
        ("f", BOOL, "false"),
        ("\\xdeadbeef", BYTEA, '"deadbeef"'),
        ('{"k": "v"}', JSONB, '"{\\"k\\": \\"v\\"}"'),
        ("2024-01-02 03:04:05.123456+00", TIMESTAMPTZ, '"2024-01-02 03:04:05.123456+00"'),
    ],
)
def test_values_equal_what_the_wal2json_decoder_yields(
    text: str, type_oid: int, wal2json_value: str
) -> None:
    """The same column text → the same Python value (and type) as wal2json's JSON of it."""
    type_name = {NUMERIC: "numeric", FLOAT8: "double precision"}.get(type_oid, "text")
    record = (
        '{"action":"I","schema":"s","table":"t","columns":[{"name":"c","type":"'
        + type_name
        + '","value":'
        + wal2json_value
        + "}]}"
    )
    change = decode_v2(record)
    assert isinstance(change, Change) and change.new is not None
    expected = change.new["c"]
    actual = text_value(text, type_oid)
    assert (type(actual), actual) == (type(expected), expected)
    assert isinstance(actual, Decimal) == (type_oid == NUMERIC and "." in text)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([insert(1, "1")], "before its Relation message"),
        ([USERS, insert(16384, "1")], "has 1 columns"),
        ([USERS, insert(16384, "1", "a")[:-1]], "truncated"),
        ([USERS, insert(16384, "1", "a") + b"x"], "trailing bytes"),
        ([USERS, insert(16384, "x", "a")], "bad value of users.id"),
        ([b"S" + struct.pack("!IB", 1, 1)], "streaming was not requested"),
        ([b"Z"], "unknown pgoutput message type"),
        ([b""], "empty"),
        ([USERS, b"I" + struct.pack("!I", 16384) + b"N" + struct.pack("!H", 2) + b"b"], "binary"),
    ],
)
def test_malformed_messages_raise_a_decode_error(messages: list[bytes], reason: str) -> None:
    """Bad input is one DecodeError saying why, never another exception."""
    with pytest.raises(DecodeError, match=reason):
        decoded(*messages)
