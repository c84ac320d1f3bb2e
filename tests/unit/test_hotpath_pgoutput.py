"""The C delete hot path reading pgoutput (``HotPath(..., pgoutput=True)``) must do exactly
what the Python engine does: for every change message it consumes, the keys per (pool,
node), in order, are the deletes ``plan(PgOutputDecoder().decode(payload), rules)`` gives,
routed by ``Router``; a message it declines leaves no trace, and it never consumes one the
Python decoder rejects. Checked on every real capture, generated tuples and corrupted
bytes (the wal2json counterpart is test_hotpath.py)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invalidator.config import Config, load_config, parse_config
from invalidator.config.build import compile_rules, static_router
from invalidator.core.changes import Change
from invalidator.core.rules import plan
from invalidator.errors import DecodeError
from invalidator.hotpath import HotPath, Slot
from invalidator.sources.pgoutput import PgOutputDecoder
from tests.pgoutput_bytes import U, begin, commit, delete, insert, relation, update

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURES = sorted(FIXTURES.glob("*.pgoutput"))
CHANGES = (b"I", b"U", b"D")

Grouped = dict[tuple[str, str], list[str]]


def xlog(payload: bytes, start: int = 0x1000, end: int = 0x2000) -> bytes:
    return b"w" + struct.pack("!QQq", start, end, 0) + payload


def messages(path: Path) -> list[bytes]:
    lines = path.read_text().splitlines()
    return [bytes.fromhex(line.split(" ")[1]) for line in lines if not line.startswith("#")]


def group(pairs: Iterable[tuple[str, str, str]]) -> Grouped:
    grouped: Grouped = {}
    for pool, node, key in pairs:
        grouped.setdefault((pool, node), []).append(key)
    return grouped


def requests_to_keys(slots: list[Slot], requests: list[tuple[int, bytes, int]]) -> Grouped:
    keys: Grouped = {}
    for index, blob, count in requests:
        lines = blob.decode().split("\r\n")[:-1]
        assert len(lines) == count
        keys[(slots[index].pool, slots[index].node)] = [line[len("delete ") :] for line in lines]
    return keys


class Harness:
    """The pgoutput C decoder next to the Python decoder and engine it must agree with.
    The Python decoder sees every message (as in a session it sees every Relation)."""

    def __init__(self, cfg: Config):
        self.rules = compile_rules(cfg)
        self.router = static_router(cfg)
        self.hot = HotPath(self.rules, self.router.placements, pgoutput=True)
        self.decoder = self.hot.decoder
        self.python_decoder = PgOutputDecoder()

    def python(self, payload: bytes) -> Grouped | DecodeError | None:
        """The Python engine's deletes; None when it would not plan them cleanly."""
        try:
            events = self.python_decoder.decode(payload)
        except DecodeError as exc:
            return exc
        if len(events) != 1 or not isinstance(events[0], Change):
            return None
        result = plan(events[0], self.rules)
        if result.skipped or any(op.op != "delete" for op in result.operations):
            return None
        return group(
            (r.operation.pool, r.node, r.operation.key)
            for r in self.router.route(result.operations)
        )

    def take(self) -> Grouped:
        requests, _, _ = self.decoder.harvest()
        return requests_to_keys(self.hot.slots, requests)

    def check(self, payload: bytes) -> bool:
        """Feed one message to both; consumed => Python's exact answer. Declined?"""
        declined = self.decoder.feed(xlog(payload))
        emitted = self.take()
        self.decoder.counts()
        expected = self.python(payload)
        if declined:
            assert emitted == {}, payload
            return True
        assert not isinstance(expected, DecodeError), f"C consumed what Python rejects: {expected}"
        if payload[:1] in CHANGES:
            assert emitted == expected, payload
        else:
            assert emitted == {}, payload
        return False


def fixture_harness() -> Harness:
    return Harness(load_config(FIXTURES / "rules.yaml"))


# --- Real pgoutput captures -------------------------------------------------------------


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_consumed_capture_change_matches_the_python_engine(path: Path) -> None:
    """Same keys, same order, same nodes as plan() + Router; B and C are consumed; every
    Relation message is declined (the Python decoder must learn it too)."""
    harness = fixture_harness()
    for payload in messages(path):
        declined = harness.check(payload)
        if payload[:1] in (b"B", b"C"):
            assert not declined
        if payload[:1] == b"R":
            assert declined


def consumed_changes(name: str) -> dict[str, int]:
    """How many I/U/D messages of capture ``name`` C consumed, per kind."""
    harness = fixture_harness()
    counts = {"I": 0, "U": 0, "D": 0}
    for payload in messages(FIXTURES / name):
        if not harness.check(payload) and payload[:1] in CHANGES:
            counts[payload[:1].decode()] += 1
    return counts


def test_rows_whose_keys_python_builds_cleanly_take_the_c_path() -> None:
    """Inserts, updates and deletes under every usable replica identity and of partitions
    are consumed (what is declined is what Python reports: absent old columns, NULLs,
    spaces, fractions; the check above is not vacuous)."""
    assert consumed_changes("replica_identity.pgoutput") == {"I": 8, "U": 4, "D": 2}
    assert consumed_changes("partitions.pgoutput") == {"I": 4, "U": 1, "D": 2}
    assert consumed_changes("multi_tx.pgoutput") == {"I": 20, "U": 0, "D": 0}


def test_commits_are_reported_with_end_position_and_time() -> None:
    """C records (end LSN, commit time in Unix seconds); B/C track the open transaction."""
    harness = fixture_harness()
    assert not harness.decoder.feed(xlog(begin()))
    assert harness.hot.in_transaction
    assert not harness.decoder.feed(xlog(commit(end_lsn=0x16B3748, when=5_000_000)))
    assert not harness.hot.in_transaction
    _, commits, _ = harness.decoder.harvest()
    assert commits == [(0x16B3748, 946_684_805.0)]


# --- Generated relations and tuples -----------------------------------------------------

INT4, TEXT, BOOL, BYTEA, FLOAT8, NUMERIC, INT8, UUID = 23, 25, 16, 17, 701, 1700, 20, 2950
RULES = [
    {"table": "t", "keys": ["t:{a}", "t_b:{b}:{c}"]},
    {"table": "t", "keys": ["t_d:{d}"]},
]
PROPERTY_CONFIG = parse_config(
    {"pools": {"default": {"servers": ["10.0.0.1:11211", "10.0.0.2:11211"]}}, "rules": RULES},
    "test",
)
TYPES = [INT4, TEXT, BOOL, BYTEA, FLOAT8, NUMERIC, INT8, UUID]
TEXTS = {
    INT4: st.integers(-(2**31), 2**31 - 1).map(str) | st.sampled_from(["007", "-0", "+1", "x"]),
    INT8: st.integers(-(2**63), 2**63 - 1).map(str),
    TEXT: st.text(max_size=12) | st.sampled_from(["a b", "é", "x" * 251, ""]),
    BOOL: st.sampled_from(["t", "f", "x"]),
    BYTEA: st.binary(max_size=6).map(lambda b: "\\x" + b.hex()),
    FLOAT8: st.sampled_from(["1", "-0", "1.5", "1e+20", "NaN", "Infinity", "-Infinity", "0"])
    | st.floats(allow_nan=False).map(repr),
    NUMERIC: st.sampled_from(["5", "1.10", "0.000", "12345678901234567890", "NaN", "-3", "1x"]),
    UUID: st.uuids().map(str),
}
NAMES = ["a", "b", "c", "d", "e"]


@st.composite
def relations(draw: st.DrawFn) -> tuple[bytes, list[int], list[bool]]:
    names = draw(st.permutations(NAMES))[: draw(st.integers(1, 5))]
    types = [draw(st.sampled_from(TYPES)) for _ in names]
    identity = [draw(st.booleans()) for _ in names]
    schema, table = draw(st.sampled_from([("public", "t"), ("public", "other"), ("s", "t")]))
    columns = list(zip(names, types, identity, strict=True))
    return relation(77, schema, table, columns), types, identity


@st.composite
def tuples(draw: st.DrawFn, types: list[int]) -> tuple[str | bytes | None, ...]:
    values: list[str | bytes | None] = []
    for type_oid in types:
        choice = draw(st.integers(0, 9))
        values.append(None if choice == 0 else U if choice == 1 else draw(TEXTS[type_oid]))
    return tuple(values)


@st.composite
def changes(draw: st.DrawFn) -> tuple[bytes, bytes]:
    rel, types, identity = draw(relations())
    new = draw(tuples(types))
    old = draw(tuples(types))
    kind = draw(st.sampled_from("IUD"))
    marker = draw(st.sampled_from([b"K", b"O"]))
    if marker == b"K":  # a key tuple: NULL placeholders outside the identity
        old = tuple(v if ident else None for v, ident in zip(old, identity, strict=True))
    if kind == "I":
        return rel, insert(77, *new)
    if kind == "D":
        return rel, delete(77, old, marker)
    return rel, update(77, new, old if draw(st.booleans()) else None, marker)


@settings(max_examples=500, deadline=None)
@given(changes())
def test_generated_changes_are_consumed_only_with_pythons_exact_answer(
    change: tuple[bytes, bytes],
) -> None:
    """Any relation, types, NULLs, unchanged TOAST, K/O tuples: consumed => Python's keys
    per node in order; declined => no output; never what Python rejects."""
    rel, payload = change
    harness = Harness(PROPERTY_CONFIG)
    assert harness.check(rel)  # declined: Python learns it
    harness.check(payload)


def test_plain_generated_rows_are_consumed() -> None:
    """Ordinary rows of the property's table (REPLICA IDENTITY FULL: O tuples, or none
    when an UPDATE leaves the identity alone) do take the C path."""
    harness = Harness(PROPERTY_CONFIG)
    columns = [("a", INT4, True), ("b", TEXT, True), ("c", BOOL, True), ("d", NUMERIC, True)]
    assert harness.check(relation(77, "public", "t", columns, "f"))
    consumed = 0
    for i in range(100):
        row = (str(i), f"v{i}", "t", "12")
        consumed += not harness.check(insert(77, *row))
        consumed += not harness.check(update(77, row))
        consumed += not harness.check(update(77, row, (str(i), "w", "f", "-3"), b"O"))
        consumed += not harness.check(delete(77, row, b"O"))
    assert consumed == 400


def test_a_relation_sent_again_replaces_the_old_one() -> None:
    """After ALTER TABLE the new column order applies to later tuples."""
    harness = Harness(PROPERTY_CONFIG)
    first = [("a", INT4, True), ("b", TEXT, False), ("c", TEXT, False), ("d", TEXT, False)]
    harness.check(relation(77, "public", "t", first))
    assert not harness.check(insert(77, "1", "x", "y", "z"))
    harness.check(relation(77, "public", "t", [*first[::-1], ("e", TEXT, False)]))
    assert not harness.check(insert(77, "z", "y", "x", "2", "e"))


# --- Corrupted bytes --------------------------------------------------------------------

BASIC = messages(FIXTURES / "basic_users.pgoutput")
RELATIONS = [m for m in BASIC if m[:1] == b"R"]
ROWS = [m for m in BASIC if m[:1] in CHANGES]


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_corrupted_messages_never_crash_nor_contradict_python(data: st.DataObject) -> None:
    """Bytes flipped and cut in real messages: a bool back, never an exception; a message C
    consumes is one Python reads, and is planned as Python plans it."""
    harness = fixture_harness()
    for rel in RELATIONS:
        harness.check(rel)
    raw = bytearray(data.draw(st.sampled_from([*ROWS, *RELATIONS, begin(), commit()])))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from([0, 1, 0x6E, 0x74, 0x75, 0x4B, 0x4E, 0xFF, 0x80]))
    payload = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    harness.check(payload)
    if payload[:1] == b"R":  # a corrupted relation, then its rows
        for row in ROWS:
            harness.check(row)


@pytest.mark.parametrize(
    "message",
    [b"", b"w", b"w" + b"\0" * 24, b"k" + b"\0" * 5, b"x" + b"\0" * 30],
    ids=["empty", "w", "w-no-payload", "short-keepalive", "unknown"],
)
def test_short_and_unknown_messages_are_declined(message: bytes) -> None:
    """Nothing to read: declined, no exception."""
    harness = fixture_harness()
    assert harness.decoder.feed(message) is True
    assert harness.take() == {}


def test_a_rebuilt_decoder_primed_with_the_stored_relations_consumes_again() -> None:
    """Rules or pool members change mid-session: the new C decoder gets the Relation
    messages the Python decoder kept (the server does not resend them) and takes rows."""
    harness = fixture_harness()
    rows = []
    for payload in messages(FIXTURES / "multi_tx.pgoutput"):
        harness.check(payload)
        if payload[:1] == b"I":
            rows.append(payload)
    rebuilt = fixture_harness()
    assert rebuilt.decoder.feed(xlog(rows[0])) is True  # no relation known yet
    for stored in harness.python_decoder.relation_messages.values():
        rebuilt.decoder.feed(b"w" + bytes(24) + stored)
    rebuilt.python_decoder = harness.python_decoder
    assert [rebuilt.check(row) for row in rows] == [False] * len(rows)
