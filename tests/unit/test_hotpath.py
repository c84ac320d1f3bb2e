"""The C delete hot path (``invalidator._hotpath``) must do exactly what the Python engine does.

For every row record the decoder consumes, the keys it emits per (pool, node) — in order —
are the deletes ``plan(decode_v2(payload), rules)`` gives, routed by ``Router``. A record
it declines leaves no trace. Placement is checked against pymemcache itself.
"""

from __future__ import annotations

import json
import random
import string
import struct
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymemcache.client.hash import HashClient
from pymemcache.client.rendezvous import RendezvousHash

from invalidator.config import Config, load_config, parse_config
from invalidator.config.build import compile_rules, static_router
from invalidator.core.changes import Change
from invalidator.core.placement import Rendezvous
from invalidator.core.rules import TableName, plan
from invalidator.errors import DecodeError
from invalidator.hotpath import HotPath, Slot, _hotpath, feed_all
from invalidator.sources.wal2json import decode_v2

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("*.jsonl"))  # format-version 2 (not the .v1.json file)
KINDS = {b"I": "insert", b"U": "update", b"D": "delete"}

Grouped = dict[tuple[str, str], list[str]]  # (pool, node) -> keys deleted there, in order


def xlog(payload: bytes, start: int = 0x1000, end: int = 0x2000) -> bytes:
    """An XLogData CopyData message carrying one wal2json record."""
    return b"w" + struct.pack("!QQq", start, end, 0) + payload


def keepalive(wal_end: int, reply: bool) -> bytes:
    return b"k" + struct.pack("!QqB", wal_end, 0, 1 if reply else 0)


def record(action: str, table: str = "t", schema: str = "public", **rows: Any) -> bytes:
    """A wal2json v2 row record; ``rows`` maps "columns"/"identity" to {name: value}."""
    doc: dict[str, Any] = {"action": action, "schema": schema, "table": table}
    for field, values in rows.items():
        doc[field] = [{"name": n, "type": "text", "value": v} for n, v in values.items()]
    return json.dumps(doc, separators=(",", ":")).encode()


def row_with(raw_value: bytes, extra: bytes = b"") -> bytes:
    """An INSERT into public.t whose column id is the JSON text ``raw_value``."""
    return (
        b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":%s}%s]}'
        % (raw_value, extra)
    )


def begin() -> bytes:
    return b'{"action":"B","xid":7}'


def commit(timestamp: str | None = "2026-11-24 05:05:01.307451+00") -> bytes:
    doc: dict[str, Any] = {"action": "C", "xid": 7}
    if timestamp is not None:
        doc["timestamp"] = timestamp
    return json.dumps(doc).encode()


def config(pools: Mapping[str, Any], rules: list[dict[str, Any]]) -> Config:
    return parse_config({"pools": dict(pools), "rules": rules}, "test")


def one_pool(servers: list[str], **rule: Any) -> Config:
    return config({"default": {"servers": servers}}, [{"table": "t", **rule}])


def group(pairs: Iterable[tuple[str, str, str]]) -> Grouped:
    """(pool, node, key) triples grouped per (pool, node), order kept."""
    grouped: Grouped = {}
    for pool, node, key in pairs:
        grouped.setdefault((pool, node), []).append(key)
    return grouped


class Harness:
    """A HotPath for a config next to the Python engine it must agree with."""

    def __init__(self, cfg: Config, partitions: Mapping[TableName, TableName] | None = None):
        rules = compile_rules(cfg)
        self.rules = rules.with_partitions(partitions) if partitions else rules
        self.router = static_router(cfg)
        self.hot = HotPath(self.rules, self.router.placements)
        self.decoder = self.hot.decoder

    def python(self, payload: bytes) -> Grouped | None:
        """The Python engine's deletes, or None when it would not plan them cleanly."""
        try:
            event = decode_v2(payload)
        except DecodeError:
            return None
        if not isinstance(event, Change) or event.kind == "truncate":
            return None
        result = plan(event, self.rules)
        if result.skipped or any(op.op != "delete" for op in result.operations):
            return None
        return group(
            (r.operation.pool, r.node, r.operation.key)
            for r in self.router.route(result.operations)
        )

    def take(self) -> Grouped:
        """Harvest the decoder's request buffers as keys per (pool, node)."""
        requests, _, _ = self.decoder.harvest()
        return requests_to_keys(self.hot.slots, requests)

    def feed(self, payload: bytes) -> tuple[bool, Grouped]:
        declined = self.decoder.feed(xlog(payload))
        return declined, self.take()

    def check(self, payload: bytes) -> bool:
        """Feed one record; consumed => Python's exact answer, declined => nothing. Declined?"""
        declined, emitted = self.feed(payload)
        if declined:
            assert emitted == {}, payload
            return True
        assert emitted == self.python(payload), payload
        return False


def requests_to_keys(slots: list[Slot], requests: list[tuple[int, bytes, int]]) -> Grouped:
    keys: Grouped = {}
    for slot, blob, count in requests:
        assert blob.endswith(b"\r\n")
        lines = blob[:-2].split(b"\r\n")
        assert count == len(lines)
        assert all(line.startswith(b"delete ") for line in lines)
        target = slots[slot]
        keys[(target.pool, target.node)] = [line[7:].decode("ascii") for line in lines]
    return keys


@pytest.fixture(scope="module")
def fixture_rules() -> Harness:
    """tests/fixtures/rules.yaml: the rules the captures were made for."""
    return Harness(load_config(FIXTURES / "rules.yaml"))


# --- Real wal2json captures ---------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_every_consumed_fixture_row_matches_the_python_engine(
    fixture_rules: Harness, path: Path
) -> None:
    """Same keys, same order, same nodes as plan() + Router; declined rows emit nothing."""
    for raw in path.read_bytes().splitlines():
        if raw[11:12] in KINDS:
            fixture_rules.check(raw)
        else:
            declined, emitted = fixture_rules.feed(raw)
            assert emitted == {}
            if raw[11:12] in (b"B", b"C"):
                assert not declined, raw[:80]
    fixture_rules.decoder.counts()


def consumed_lines(harness: Harness, name: str, action: bytes) -> tuple[int, int]:
    """(consumed, total) of the records of ``action`` in fixture ``name``."""
    lines = [r for r in (FIXTURES / name).read_bytes().splitlines() if r[11:12] == action]
    consumed = sum(not harness.check(raw) for raw in lines)
    harness.decoder.counts()
    return consumed, len(lines)


def test_plain_fixture_inserts_are_consumed(fixture_rules: Harness) -> None:
    """All users INSERTs of basic_users and orders INSERTs of truncate take the C path."""
    assert consumed_lines(fixture_rules, "basic_users.jsonl", b"I") == (3, 3)
    assert consumed_lines(fixture_rules, "basic_users.minimal.jsonl", b"I") == (3, 3)
    consumed, total = consumed_lines(fixture_rules, "truncate.jsonl", b"I")
    assert consumed == total == 4


def test_full_replica_identity_updates_are_consumed(fixture_rules: Harness) -> None:
    """ri_full UPDATEs carry every old column: both images' keys, in the C path."""
    lines = [
        raw
        for raw in (FIXTURES / "replica_identity.jsonl").read_bytes().splitlines()
        if raw[11:12] == b"U" and b'"table":"ri_full"' in raw
    ]
    assert len(lines) == 2
    assert [fixture_rules.check(raw) for raw in lines] == [False, False]


def test_partition_rows_are_all_consumed(fixture_rules: Harness) -> None:
    """Every row change of the partitions capture (I, U, D) is decided in C."""
    for action in (b"I", b"U", b"D"):
        consumed, total = consumed_lines(fixture_rules, "partitions.jsonl", action)
        assert consumed == total > 0


def test_fixture_commits_are_reported_with_position_and_time(fixture_rules: Harness) -> None:
    """Each C record of a capture: (its data_start, fromisoformat(timestamp).timestamp())."""
    decoder = fixture_rules.decoder
    decoder.harvest()
    expected = []
    for i, raw in enumerate((FIXTURES / "multi_tx.jsonl").read_bytes().splitlines()):
        decoder.feed(xlog(raw, start=0x5000 + i, end=0x9000 + i))
        if raw[11:12] == b"C":
            stamp = json.loads(raw)["timestamp"]
            expected.append((0x5000 + i, datetime.fromisoformat(stamp).timestamp()))
    _, commits, open_work = decoder.harvest()
    decoder.counts()
    assert len(expected) == 20
    assert commits == expected
    assert open_work is False


def test_commits_without_timestamp_have_no_time(fixture_rules: Harness) -> None:
    """basic_users.minimal has no include-timestamp: commit times are None."""
    decoder = fixture_rules.decoder
    decoder.harvest()
    for raw in (FIXTURES / "basic_users.minimal.jsonl").read_bytes().splitlines():
        decoder.feed(xlog(raw))
    _, commits, _ = decoder.harvest()
    decoder.counts()
    assert [when for _, when in commits] == [None] * 5


def test_fixture_tables_with_when_changed_rules_are_left_to_python(
    fixture_rules: Harness,
) -> None:
    """items (when_changed) has no C table; its bulk updates are declined."""
    assert "public.items" not in fixture_rules.hot.tables
    assert "public.users" in fixture_rules.hot.tables
    lines = (FIXTURES / "bulk.jsonl").read_bytes().splitlines()
    assert feed_all(fixture_rules.decoder, [xlog(raw) for raw in lines]) == list(
        range(1, len(lines) - 1)
    )
    assert fixture_rules.take() == {}


# --- Placement ----------------------------------------------------------------------------

SERVER_LISTS = {
    "1": ["10.0.0.7:11211"],
    "2": ["a:1", "b:2"],
    "3": [
        "10.0.0.7:11211",
        "10.0.0.8:11211",
        "memcached-2.memcached.caching.svc.cluster.local:11211",
    ],
    "7": [
        "[::1]:11211",
        "cache-a",
        "a:1",
        "a:11",
        "a:111",
        "10.0.0.1:11211",
        "memcached-0.memcached.svc:11212",
    ],
}
KEY_CHARS = string.ascii_letters + string.digits + string.punctuation


def random_keys(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    keys: set[str] = set()
    while len(keys) < count:
        length = rng.choice([1, 2, 3, 4, 5, 8, 17, 40, rng.randrange(1, 251), 250])
        keys.add("".join(rng.choice(KEY_CHARS) for _ in range(length)))
    return sorted(keys)


@pytest.mark.parametrize("servers", SERVER_LISTS.values(), ids=SERVER_LISTS.keys())
def test_rendezvous_placement_matches_pymemcache(servers: list[str]) -> None:
    """Every key lands on the node Rendezvous and pymemcache's HashClient choose."""
    harness = Harness(one_pool(servers, keys=["{k}"]))
    keys = random_keys(len(servers), 3000)
    messages = [xlog(record("I", columns={"k": key})) for key in keys]
    assert feed_all(harness.decoder, messages) == []
    placed = {key: node for (_, node), ks in harness.take().items() for key in ks}
    assert sorted(placed) == keys
    ours = Rendezvous(servers)
    client = HashClient(servers, use_pooling=False)
    assert placed == {key: ours.owner(key) for key in keys}
    assert placed == {key: client.hasher.get_node(key) for key in keys}


@pytest.mark.parametrize("names", [[b"a", b"b"], [b"b", b"a"], [b"b", b"c", b"a"]])
def test_rendezvous_tie_goes_to_the_greatest_node_name(names: list[bytes]) -> None:
    """Equal scores (same hashed prefix): pymemcache's max(node) rule picks the winner."""
    pools = [(_hotpath.RENDEZVOUS, [(b"n-", name, i) for i, name in enumerate(names)])]
    table = (b"public", b"t", _hotpath.INSERT, [b"k"], [(0, [b"", b""], [0])])
    decoder = _hotpath.Decoder([table], pools, len(names))
    assert not decoder.feed(xlog(record("I", columns={"k": "key"})))
    requests, _, _ = decoder.harvest()
    winner = names.index(max(names))
    assert requests == [(winner, b"delete key\r\n", 1)]
    tied = RendezvousHash([n.decode() for n in names], hash_function=lambda _data, _seed: 7)
    assert tied.get_node("key") == max(names).decode()


def test_broadcast_pool_sends_every_key_to_every_node() -> None:
    """hashing: broadcast — each node gets all keys, in change order."""
    servers = ["a:1", "b:2", "c:3"]
    harness = Harness(
        config(
            {"default": {"servers": servers, "hashing": "broadcast"}},
            [{"table": "t", "keys": ["t:{id}", "t_code:{code}"]}],
        )
    )
    assert len(harness.hot.tables) == 1
    for i in range(20):
        assert not harness.decoder.feed(xlog(record("I", columns={"id": i, "code": f"c{i}"})))
    emitted = harness.take()
    keys = [k for i in range(20) for k in (f"t:{i}", f"t_code:c{i}")]
    assert emitted == {("default", node): keys for node in servers}


def test_rules_on_two_pools_fill_each_pools_nodes() -> None:
    """A table with a rendezvous and a broadcast rule: each key goes to its own pool only."""
    harness = Harness(
        config(
            {
                "default": {"servers": ["a:1", "b:2", "c:3"]},
                "all": {"servers": ["x:1", "y:2"], "hashing": "broadcast"},
            },
            [
                {"table": "t", "keys": ["t:{id}"]},
                {"table": "t", "keys": ["t:{id}", "list"], "pool": "all"},
            ],
        )
    )
    for i in range(30):
        assert not harness.check(record("D", identity={"id": i}))
    assert {slot.pool for slot in harness.hot.slots} == {"default", "all"}


# Every client whose placement C reproduces from the Python placement's tables (HotSpec).
CLIENT_POOLS: list[tuple[str, dict[str, Any]]] = [
    ("pylibmc", {}),
    ("pylibmc", {"ketama": True}),
    ("pylibmc", {"ketama_weighted": True}),
    ("pylibmc", {"hash": "murmur"}),
    ("php-memcached", {"libketama_compatible": True}),
    ("php-memcached", {"distribution": "consistent", "sort_hosts": True}),
    ("python-memcached", {}),
    ("dalli", {}),
    ("spymemcached", {}),
    ("spymemcached", {"locator": "consistent", "hash": "ketama"}),
    ("spymemcached", {"locator": "consistent", "hash": "fnv1a_64"}),
    ("gomemcache", {}),
    ("node-memcached", {}),
    ("node-memcached", {"algorithm": "sha1", "compatibility": "hash_ring"}),
    ("memjs", {}),
]


@pytest.mark.parametrize(
    ("client", "behaviors"), CLIENT_POOLS, ids=[f"{c}-{b}" for c, b in CLIENT_POOLS]
)
def test_pools_of_every_client_are_placed_in_c_as_plan_and_router_place_them(
    client: str, behaviors: dict[str, Any]
) -> None:
    """Inserts, updates and deletes: each key on the node the client's placement names."""
    servers = ["10.0.0.7:11211", "10.0.0.8:11212 2", "10.0.0.9:11211"]
    if client not in ("pylibmc", "php-memcached", "python-memcached", "dalli", "node-memcached"):
        servers = [s.split()[0] for s in servers]  # no weights, or all of them (spymemcached)
    pool = {"servers": servers, "client": client, "behaviors": behaviors}
    harness = Harness(
        config({"default": pool}, [{"table": "t", "keys": ["t:{id}", "t_name:{name}"]}])
    )
    assert harness.hot.tables == ["public.t"]
    for i, name in enumerate(random_keys(len(behaviors), 300)):
        key = name[:240]  # "t_name:<key>" within memcached's 250 bytes
        assert not harness.check(record("I", columns={"id": i, "name": key}))
        assert not harness.check(
            record("U", columns={"id": i, "name": key}, identity={"id": i + 1, "name": "x"})
        )
        assert not harness.check(record("D", identity={"id": i, "name": key}))


# --- What HotPath hands to C --------------------------------------------------------------


def tables_for(pools: Mapping[str, Any], rules: list[dict[str, Any]]) -> list[str]:
    return Harness(config(pools, rules)).hot.tables


PLAIN = {"default": {"servers": ["a:1", "b:2"]}}


def test_plain_delete_rules_get_a_c_table() -> None:
    assert tables_for(PLAIN, [{"table": "t", "keys": ["t:{id}"]}]) == ["public.t"]


def test_tables_on_pools_that_redelete_are_left_to_python() -> None:
    pools = {**PLAIN, "slow": {"servers": ["c:3"], "redelete_after": "2s"}}
    rules = [{"table": "t", "keys": ["t:{id}"]}, {"table": "u", "keys": ["u"], "pool": "slow"}]
    assert tables_for(pools, rules) == ["public.t"]


def test_rules_with_their_own_redelete_after_are_left_to_python() -> None:
    rules = [{"table": "t", "keys": ["t:{id}"], "redelete_after": "500ms"}]
    assert tables_for(PLAIN, rules) == []


def test_when_changed_rules_are_left_to_python() -> None:
    rules = [
        {"table": "t", "keys": ["t:{id}"]},
        {"table": "t", "keys": ["t2:{id}"], "when_changed": ["name"]},
        {"table": "u", "keys": ["u:{id}"]},
    ]
    assert tables_for(PLAIN, rules) == ["public.u"]


def test_refresh_and_bump_rules_are_left_to_python() -> None:
    rules = [
        {"table": "r", "keys": ["r:{id}"], "action": "refresh", "value": {"json": ["id"]}},
        {"table": "b", "keys": ["gen:b"], "action": "bump"},
        {"table": "d", "keys": ["d:{id}"]},
    ]
    assert tables_for(PLAIN, rules) == ["public.d"]


def test_broadcast_pools_are_hashed_in_c_but_fallback_depth_is_not() -> None:
    pools = {
        "default": {"servers": ["a:1", "b:2"], "fallback_depth": 1},
        "all": {"servers": ["c:3", "d:4"], "hashing": "broadcast"},
        "plain": {"servers": ["e:5", "f:6"]},
    }
    rules = [
        {"table": "fallback", "keys": ["f:{id}"]},
        {"table": "broadcast", "keys": ["b:{id}"], "pool": "all"},
        {"table": "rendezvous", "keys": ["r:{id}"], "pool": "plain"},
        {"table": "mixed", "keys": ["m:{id}"], "pool": "plain"},
        {"table": "mixed", "keys": ["m:{id}"]},
    ]
    harness = Harness(config(pools, rules))
    assert harness.hot.tables == ["public.broadcast", "public.rendezvous"]
    assert [(s.pool, s.node) for s in harness.hot.slots] == [
        ("all", "c:3"),
        ("all", "d:4"),
        ("plain", "e:5"),
        ("plain", "f:6"),
    ]
    assert harness.decoder.feed(xlog(record("I", "fallback", columns={"id": 1})))
    assert harness.decoder.feed(xlog(record("I", "mixed", columns={"id": 1})))


def test_pools_with_non_ascii_node_names_are_left_to_python() -> None:
    pools = {"default": {"servers": ["cachë:11211", "b:2"]}}
    assert tables_for(pools, [{"table": "t", "keys": ["t:{id}"]}]) == []


def test_pools_with_node_names_longer_than_c_keeps_are_left_to_python() -> None:
    long_name = "a" * 190 + ".example:11211"
    for client in ("pymemcache", "spymemcached"):
        pools = {"default": {"servers": [long_name, "b:2"], "client": client}}
        assert tables_for(pools, [{"table": "t", "keys": ["t:{id}"]}]) == [], client


def test_discovered_pools_are_left_to_python() -> None:
    pools = {**PLAIN, "found": {"discover": {"srv": "_memcache._tcp.example"}}}
    rules = [{"table": "t", "keys": ["t:{id}"]}, {"table": "u", "keys": ["u"], "pool": "found"}]
    assert tables_for(pools, rules) == ["public.t"]


@pytest.mark.parametrize("literal", ["a b:{id}", "é:{id}", "tab\t{id}"])
def test_templates_whose_literals_never_make_a_valid_key_are_left_to_python(
    literal: str,
) -> None:
    rules = [{"table": "t", "keys": [literal]}, {"table": "u", "keys": ["u:{id}"]}]
    assert tables_for(PLAIN, rules) == ["public.u"]


def test_tables_reading_more_than_64_columns_are_left_to_python() -> None:
    wide = "".join(f"{{c{i}}}" for i in range(65))
    narrow = "".join(f"{{c{i}}}" for i in range(64))
    rules = [{"table": "wide", "keys": [wide]}, {"table": "narrow", "keys": [narrow]}]
    assert tables_for(PLAIN, rules) == ["public.narrow"]


def test_truncate_only_rules_are_left_to_python() -> None:
    rules = [
        {"table": "t", "keys": ["t"], "on": ["truncate"]},
        {"table": "u", "keys": ["u:{id}"], "on": ["insert", "truncate"]},
    ]
    assert tables_for(PLAIN, rules) == ["public.u"]


def test_partitions_of_a_parent_table_get_its_rules() -> None:
    """A partition alias is a C table of its own, rendering the parent's templates."""
    harness = Harness(
        one_pool(["a:1", "b:2"], keys=["m:{region}:{id}"]),
        partitions={("public", "t_eu"): ("public", "t")},
    )
    assert sorted(harness.hot.tables) == ["public.t", "public.t_eu"]
    assert not harness.check(record("I", "t_eu", columns={"id": 1, "region": "eu"}))


def test_a_kind_missing_from_one_rules_on_is_declined() -> None:
    """Two rules on a table, one only on insert: updates and deletes go to Python."""
    harness = Harness(
        config(
            PLAIN,
            [
                {"table": "t", "keys": ["t:{id}"]},
                {"table": "t", "keys": ["t_new:{id}"], "on": ["insert"]},
            ],
        )
    )
    assert not harness.check(record("I", columns={"id": 1}))
    assert harness.check(record("U", columns={"id": 1}, identity={"id": 1}))
    assert harness.check(record("D", identity={"id": 1}))


# --- Rendering values and declining -------------------------------------------------------


@pytest.fixture(scope="module")
def single() -> Harness:
    """Table public.t with keys "t:{id}" and "{k}" (the value itself) on three nodes."""
    return Harness(one_pool(["a:1", "b:2", "c:3"], keys=["t:{id}", "{k}"]))


RAW_CONSUMED = {
    "int": b"7",
    "negative int": b"-7",
    "zero": b"0",
    "18 digits": b"123456789012345678",
    "negative 18 digits": b"-999999999999999999",
    "true": b"true",
    "false": b"false",
    "quote, backslash, slash escapes": b'"a\\"b\\\\c\\/d"',
    "printable punctuation": b'"!#$%&()*+,-.:;<=>?@[]^_`{|}~\'"',
    "250-byte key t:xxx...": b'"' + b"x" * 248 + b'"',
}


@pytest.mark.parametrize("raw", RAW_CONSUMED.values(), ids=RAW_CONSUMED.keys())
def test_plain_values_are_rendered_like_python(single: Harness, raw: bytes) -> None:
    assert not single.check(row_with(raw, b',{"name":"k","value":"k"}'))


def test_a_250_byte_key_is_consumed_and_251_is_declined(single: Harness) -> None:
    assert not single.check(record("I", columns={"id": 1, "k": "x" * 250}))
    assert single.check(record("I", columns={"id": 1, "k": "x" * 251}))


def test_keys_repeated_within_a_change_are_deleted_once(single: Harness) -> None:
    """An UPDATE not changing the key, or two templates giving one key: one delete."""
    payload = record("U", columns={"id": 1, "k": "t:1"}, identity={"id": 1, "k": "t:1"})
    assert not single.check(payload)
    declined, emitted = single.feed(payload)
    assert not declined
    assert sorted(k for keys in emitted.values() for k in keys) == ["t:1"]


RAW_DECLINED = {
    "null": b"null",
    "float": b"1.5",
    "exponent": b"1e3",
    "negative zero": b"-0",
    "19 digits": b"1234567890123456789",
    "newline escape": b'"a\\nb"',
    "unicode escape": b'"\\u00e9"',
    "ascii unicode escape": b'"\\u0041"',
    "tab escape": b'"a\\tb"',
    "raw non-ascii": '"é"'.encode(),
    "space": b'"a b"',
    "DEL": b'"a\x7fb"',
    "array": b"[1]",
    "object": b'{"a":1}',
}


@pytest.mark.parametrize("raw", RAW_DECLINED.values(), ids=RAW_DECLINED.keys())
def test_unusual_key_values_are_declined(single: Harness, raw: bytes) -> None:
    assert single.check(row_with(raw, b',{"name":"k","value":"k"}'))


def test_empty_key_is_declined(single: Harness) -> None:
    assert single.check(record("I", columns={"id": 1, "k": ""}))


def test_absent_key_column_is_declined(single: Harness) -> None:
    assert single.check(record("I", columns={"id": 1}))
    assert single.check(record("D", identity={"k": "x"}))


def test_update_whose_old_columns_are_not_all_new_is_declined(single: Harness) -> None:
    """Unchanged TOAST columns are absent from the new row: Python merges the rows."""
    assert single.check(record("U", columns={"id": 1}, identity={"id": 1, "k": "x"}))


def test_update_without_identity_is_declined(single: Harness) -> None:
    assert single.check(record("U", columns={"id": 1, "k": "x"}))


def test_other_tables_are_declined(single: Harness) -> None:
    assert single.check(record("I", "other", columns={"id": 1, "k": "x"}))
    assert single.check(record("I", "t", schema="other", columns={"id": 1, "k": "x"}))


def test_rows_before_the_table_name_are_declined(single: Harness) -> None:
    """wal2json names the table first; another member order is left to Python."""
    payload = b'{"columns":[{"name":"id","value":1},{"name":"k","value":"k"}],"action":"I",'
    assert single.check(payload + b'"schema":"public","table":"t"}')


def test_truncate_and_logical_messages_are_declined(single: Harness) -> None:
    truncate = b'{"action":"T","schema":"public","table":"t"}'
    message = b'{"action":"M","transactional":false,"prefix":"p","content":"c"}'
    assert single.decoder.feed(xlog(truncate))
    assert single.decoder.feed(xlog(message))
    assert single.take() == {}


def test_more_than_64_keys_in_one_change_is_declined() -> None:
    templates = [f"k{i}:{{id}}" for i in range(65)]
    harness = Harness(one_pool(["a:1"], keys=templates))
    assert harness.check(record("I", columns={"id": 1}))
    harness = Harness(one_pool(["a:1"], keys=templates[:64]))
    assert not harness.check(record("I", columns={"id": 1}))


def test_a_declined_record_leaves_no_trace(single: Harness) -> None:
    """Nothing appended, no commit, no count, wal_end and the transaction state unchanged."""
    decoder = single.decoder
    decoder.harvest()
    decoder.counts()
    assert not decoder.feed(xlog(begin(), end=0x100))
    wal_end = decoder.wal_end
    for payload in (
        record("I", columns={"id": 1, "k": "ok"}, identity={"k": None})[:-1] + b",",
        record("I", columns={"id": 1, "k": None}),
        b'{"action":"T","schema":"public","table":"t"}',
    ):
        assert decoder.feed(xlog(payload, end=wal_end + 0x1000))
    assert decoder.wal_end == wal_end
    assert decoder.in_transaction
    assert decoder.harvest() == ([], [], False)
    assert decoder.counts() == []


# --- The property: generated records ------------------------------------------------------

PROPERTY_CONFIG = config(
    {
        "default": {"servers": ["a:1", "b:2", "c:3"]},
        "all": {"servers": ["x:1", "y:2"], "hashing": "broadcast"},
        "ketama": {
            "servers": ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"],
            "client": "spymemcached",
            "behaviors": {"locator": "consistent", "hash": "ketama"},
        },
        "modula": {"servers": ["p:1", "q:2 3", "r:3"], "client": "pylibmc"},
    },
    [
        {"table": "t1", "keys": ["t1:{id}", "t1_name:{name}"]},
        {"table": "t5", "keys": ["t5:{id}", "t5_name:{name}"], "pool": "ketama"},
        {"table": "t5", "keys": ["t5:{code}"], "pool": "modula"},
        {"table": "t2", "keys": ["t2:{id}:{code}"], "pool": "all"},
        {"table": "t2", "keys": ["t2:{id}:{code}", "t2_list"]},
        {"schema": "s", "table": "t3", "keys": ["{name}"], "on": ["insert", "delete"]},
        {"table": "t4", "keys": ["t4:{id}"]},
        {"table": "t4", "keys": ["t4b:{code}"], "on": ["insert"]},
    ],
)
PROPERTY = Harness(PROPERTY_CONFIG)
TABLES = [("public", "t1"), ("public", "t2"), ("s", "t3"), ("public", "t4"), ("public", "t5")]
COLUMNS = ["id", "name", "code", "other"]
RAW_NUMBERS = ["-0", "0", "1e3", "1E+2", "-0.0", "1.0", "12345678901234567890", "-5"]
TYPES = [None, "integer", "text", "double precision", "numeric", "boolean"]


class Raw:
    """A number literal spliced into the JSON text as is."""

    def __init__(self, text: str):
        self.text = text


KEY_TEXT = string.ascii_letters + string.digits + "!#$%&()*+,-.:;<=>?@[]^_`{|}~'" + '"\\/'
plain_values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.text(alphabet=KEY_TEXT, min_size=1, max_size=10),
    st.booleans(),
)
odd_values = st.one_of(
    st.integers(-(10**20), 10**20),
    st.sampled_from([10**17, 10**18 - 1, 10**18, -(10**18) + 1, 2**63 - 1, -(2**63), 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(
        alphabet=st.one_of(
            st.sampled_from(list('abZ09:-_"\\/ \n\té€\x7f{}')), st.characters(codec="utf-8")
        ),
        max_size=12,
    ),
    st.sampled_from(["x" * 245, "x" * 260, ""]),
    st.none(),
    st.sampled_from(RAW_NUMBERS).map(Raw),
    st.lists(st.integers(), max_size=2),
)
values = st.one_of(plain_values, plain_values, plain_values, odd_values)  # mostly renderable
present = st.sampled_from([True, True, True, False])  # a column is usually there

Column = tuple[str, Any, "str | None"]


@st.composite
def rows(draw: st.DrawFn) -> list[Column]:
    """Columns in attribute order (sometimes shuffled or with a repeated name)."""
    row = [(name, draw(values), draw(st.sampled_from(TYPES))) for name in COLUMNS if draw(present)]
    if row and draw(st.sampled_from([False] * 9 + [True])):
        row.append((row[0][0], draw(values), None))
    if draw(st.sampled_from([False] * 9 + [True])):
        row = draw(st.permutations(row))
    return row


@st.composite
def identities(draw: st.DrawFn, new: list[Column]) -> list[Column]:
    """An UPDATE's old row: mostly a subset of the new columns, values kept or changed."""
    if draw(st.sampled_from([False] * 4 + [True])):
        return draw(rows())  # may name columns the new row lacks (unchanged TOAST)
    return [
        (name, draw(st.one_of(st.just(value), values)), type_name)
        for name, value, type_name in new
        if draw(present)
    ]


def column_entries(row: list[Column], raws: list[str]) -> list[Any]:
    entries = []
    for name, value, type_name in row:
        if isinstance(value, Raw):
            raws.append(value.text)
            value = f"@@RAW{len(raws) - 1}@@"
        entry: dict[str, Any] = {"name": name}
        if type_name is not None:
            entry["type"] = type_name
        entry["value"] = value
        entries.append(entry)
    return entries


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """A wal2json v2 I/U/D record of one of TABLES, serialized in one of json.dumps' ways."""
    action = draw(st.sampled_from(["I", "U", "D"]))
    schema, table = draw(st.sampled_from([*TABLES, *TABLES[:2]]))
    new = draw(rows())
    old = draw(identities(new)) if action == "U" else draw(rows())
    raws: list[str] = []
    doc: dict[str, Any] = {"action": action, "xid": 9, "schema": schema, "table": table}
    if action != "D" or not draw(present):
        doc["columns"] = column_entries(new, raws)
    if action == "D" or (action == "U" and draw(present)) or not draw(present):
        doc["identity"] = column_entries(old, raws)
    doc["pk"] = [{"name": "id", "type": "integer"}]
    text = json.dumps(
        doc,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
        indent=draw(st.sampled_from([None, None, None, 1])),
    )
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw)
    if draw(st.booleans()):
        text = text.replace("/", "\\/")  # "/" only occurs inside strings
    return text.encode()


@settings(max_examples=300, deadline=None)
@given(records())
def test_generated_records_are_consumed_only_with_pythons_exact_answer(payload: bytes) -> None:
    """Consumed => the Python engine's keys per node, in order; declined => no output."""
    PROPERTY.check(payload)
    PROPERTY.decoder.counts()


def test_plain_records_of_the_generated_tables_are_consumed() -> None:
    """The property's tables do take the C path for ordinary rows."""
    consumed = 0
    for i in range(200):
        key = f"v{i}"
        consumed += not PROPERTY.check(record("I", "t1", columns={"id": i, "name": key}))
        consumed += not PROPERTY.check(
            record("U", "t2", columns={"id": i, "code": key}, identity={"id": i, "code": "c"})
        )
        consumed += not PROPERTY.check(record("D", "t3", "s", identity={"name": key}))
        consumed += not PROPERTY.check(  # a ketama pool and a modula pool
            record("I", "t5", columns={"id": i, "name": key, "code": f"c{i}"})
        )
    PROPERTY.decoder.counts()
    assert consumed == 800


# --- Transactions, commits and keepalives -------------------------------------------------


@pytest.fixture
def fresh() -> Harness:
    return Harness(one_pool(["a:1", "b:2"], keys=["t:{id}"]))


def test_in_transaction_from_begin_until_commit(fresh: Harness) -> None:
    decoder = fresh.decoder
    assert not decoder.in_transaction
    assert not decoder.feed(xlog(begin()))
    assert decoder.in_transaction
    assert not decoder.feed(xlog(record("I", columns={"id": 1})))
    assert decoder.in_transaction
    assert not decoder.feed(xlog(commit()))
    assert not decoder.in_transaction


def test_open_transaction_can_be_carried_to_a_rebuilt_decoder() -> None:
    """The daemon rebuilds the decoder mid-transaction; the commit then closes it."""
    rebuilt = Harness(one_pool(["a:1", "b:2"], keys=["t:{id}"])).decoder
    rebuilt.in_transaction = True
    assert rebuilt.in_transaction
    assert not rebuilt.feed(xlog(commit()))
    assert not rebuilt.in_transaction


def test_an_uninitialised_decoder_refuses_to_feed() -> None:
    decoder = _hotpath.Decoder.__new__(_hotpath.Decoder)
    with pytest.raises(ValueError, match="not initialised"):
        decoder.feed(xlog(begin()))
    with pytest.raises(ValueError, match="not initialised"):
        decoder.feed_many([xlog(begin())])


def test_open_work_when_keys_were_appended_after_the_last_commit(fresh: Harness) -> None:
    decoder = fresh.decoder
    row = xlog(record("I", columns={"id": 1}))
    assert decoder.feed_many([xlog(begin()), row]) == 2
    assert decoder.harvest()[2] is True
    assert decoder.feed_many([xlog(commit())]) == 1
    assert decoder.harvest()[2] is False
    assert decoder.feed_many([xlog(begin()), row, xlog(commit()), xlog(begin()), row]) == 5
    _, commits, open_work = decoder.harvest()
    assert (len(commits), open_work) == (1, True)
    assert decoder.feed_many([xlog(begin()), row, xlog(commit())]) == 3
    assert decoder.harvest()[2] is False


def test_a_transaction_without_keys_is_not_open_work(fresh: Harness) -> None:
    decoder = fresh.decoder
    assert not decoder.feed(xlog(begin()))
    assert decoder.feed(xlog(record("I", "other", columns={"id": 1})))
    assert decoder.harvest() == ([], [], False)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-24 05:05:01.307451+00",
        "2026-11-24 05:05:01+00",
        "2026-11-24 05:05:01.3+05:30",
        "2026-11-24 05:05:01.30745-08",
        "1999-12-31 23:59:59.999999+00",
        "1969-12-31 23:59:59.5+00",
        "2024-02-29 12:00:00.000001+14",
    ],
)
def test_commit_time_is_fromisoformat_of_the_timestamp(fresh: Harness, stamp: str) -> None:
    assert not fresh.decoder.feed(xlog(commit(stamp), start=0xABC))
    _, commits, _ = fresh.decoder.harvest()
    assert commits == [(0xABC, datetime.fromisoformat(stamp).timestamp())]


@pytest.mark.parametrize("stamp", [None, "garbage", "2026-11-24"])
def test_commit_with_unknown_time_reports_none(fresh: Harness, stamp: str | None) -> None:
    assert not fresh.decoder.feed(xlog(commit(stamp), start=0xABC))
    assert fresh.decoder.harvest()[1] == [(0xABC, None)]


def test_harvest_resets_requests_and_commits(fresh: Harness) -> None:
    decoder = fresh.decoder
    batch = [xlog(begin()), xlog(record("I", columns={"id": 1})), xlog(commit(), start=9)]
    assert decoder.feed_many(batch) == 3
    requests, commits, _ = decoder.harvest()
    assert sum(count for _, _, count in requests) == 1 and len(commits) == 1
    assert decoder.harvest() == ([], [], False)


def test_keepalive_updates_wal_end_and_asks_for_a_reply(fresh: Harness) -> None:
    decoder = fresh.decoder
    assert not decoder.feed(keepalive(0x5000, reply=False))
    assert (decoder.wal_end, decoder.take_reply_requested()) == (0x5000, False)
    assert not decoder.feed(keepalive(0x4000, reply=True))
    assert decoder.wal_end == 0x5000  # the highest end seen
    assert decoder.take_reply_requested() is True
    assert decoder.take_reply_requested() is False
    assert decoder.harvest() == ([], [], False)


def test_consumed_xlogdata_advances_wal_end(fresh: Harness) -> None:
    decoder = fresh.decoder
    assert not decoder.feed(xlog(begin(), end=0x10))
    assert not decoder.feed(xlog(record("I", columns={"id": 1}), end=0x20))
    assert decoder.wal_end == 0x20
    assert not decoder.feed(xlog(commit(), end=0x30))
    assert decoder.wal_end == 0x30
    assert decoder.feed(xlog(record("I", "other", columns={"id": 1}), end=0x40))
    assert decoder.wal_end == 0x30


# --- counts() -----------------------------------------------------------------------------


def test_counts_consumed_rows_per_table_and_kind() -> None:
    harness = Harness(
        config(PLAIN, [{"table": "t", "keys": ["t:{id}"]}, {"table": "u", "keys": ["u:{id}"]}])
    )
    assert harness.hot.tables == ["public.t", "public.u"]
    decoder = harness.decoder
    messages = [
        record("I", "t", columns={"id": 1}),
        record("I", "t", columns={"id": 2}),
        record("U", "t", columns={"id": 1}, identity={"id": 1}),
        record("D", "u", identity={"id": 1}),
        record("D", "u", identity={"id": None}),  # declined: not counted
        record("I", "other", columns={"id": 1}),  # declined: not counted
    ]
    assert feed_all(decoder, [xlog(m) for m in messages]) == [4, 5]
    assert sorted(decoder.counts()) == [(0, "insert", 2), (0, "update", 1), (1, "delete", 1)]
    assert decoder.counts() == []


# --- scan_deletes -------------------------------------------------------------------------


def test_scan_deletes_counts_deleted_and_not_found_lines() -> None:
    buffer = b"DELETED\r\nNOT_FOUND\r\nDELETED\r\n"
    assert _hotpath.scan_deletes(buffer, 0, 100) == (3, 2, len(buffer))


def test_scan_deletes_stops_before_a_partial_line() -> None:
    buffer = b"DELETED\r\nNOT_FOUND\r\nDELE"
    assert _hotpath.scan_deletes(buffer, 0, 100) == (2, 1, 20)
    assert _hotpath.scan_deletes(b"DELETED\r", 0, 100) == (0, 0, 0)
    assert _hotpath.scan_deletes(b"NOT_FOUND\r\nNOT_FOUND", 0, 100) == (1, 0, 11)


def test_scan_deletes_reads_at_most_limit_lines() -> None:
    buffer = b"DELETED\r\n" * 5
    assert _hotpath.scan_deletes(buffer, 0, 3) == (3, 3, 27)
    assert _hotpath.scan_deletes(buffer, 27, 3) == (2, 2, 45)
    assert _hotpath.scan_deletes(buffer, 0, 0) == (0, 0, 0)


def test_scan_deletes_stops_at_another_reply() -> None:
    buffer = b"DELETED\r\nSERVER_ERROR out of memory\r\nDELETED\r\n"
    assert _hotpath.scan_deletes(buffer, 0, 100) == (1, 1, 9)
    assert _hotpath.scan_deletes(b"ERROR\r\n", 0, 100) == (0, 0, 0)
    assert _hotpath.scan_deletes(b"deleted\r\n", 0, 100) == (0, 0, 0)


def test_scan_deletes_of_an_empty_buffer_or_at_its_end() -> None:
    assert _hotpath.scan_deletes(b"", 0, 100) == (0, 0, 0)
    assert _hotpath.scan_deletes(b"DELETED\r\n", 9, 100) == (0, 0, 9)


def test_scan_deletes_starts_at_pos_in_a_bytearray() -> None:
    buffer = bytearray(b"STORED\r\nNOT_FOUND\r\nDELETED\r\n")
    assert _hotpath.scan_deletes(buffer, 8, 100) == (2, 1, len(buffer))


# --- Malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["basic_users.jsonl", "replica_identity.jsonl", "partitions.jsonl"]
)
def test_truncated_row_and_commit_records_are_declined(fixture_rules: Harness, name: str) -> None:
    """Every prefix of a record (cut anywhere) is declined and leaves nothing behind."""
    decoder = fixture_rules.decoder
    for raw in (FIXTURES / name).read_bytes().splitlines()[:12]:
        if raw[11:12] not in (b"I", b"U", b"D", b"C"):
            continue
        for cut in range(len(raw)):
            assert decoder.feed(xlog(raw[:cut])), raw[:cut]
        assert decoder.harvest() == ([], [], False)


GARBAGE = [
    b"",
    b" ",
    b"x",
    b"{",
    b"}",
    b"[]",
    b"null",
    b'"action"',
    b"{}",
    b'{"action":"I"}',
    b'{"action":"X","schema":"public","table":"t"}',
    b'{"action":1}',
    b'{"action":"IU","schema":"public","table":"t"}',
    b'{"action":"I","schema":"public","table":"t","columns":{}}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"value":1}]}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":1,"value":1}]}',
    b'{"action":"I","schema":"public","table":"t","columns":[[]]}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":1},]}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":1}],}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":1}]}}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":1}]} x',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id" "value":1}]}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":nul}]}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":tru}]}',
    b'{"action":"I","schema":"public","table":"t","columns":[{"name":"id","value":"1}]}',
    b'{"action":"I","schema":"public","table":"t","columns":[' + b"[" * 100 + b"]" * 100 + b"]}",
    b"\xff\xfe\x00",
]


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_records_are_declined(single: Harness, payload: bytes) -> None:
    assert single.decoder.feed(xlog(payload))
    assert single.decoder.harvest() == ([], [], False)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"w",
        b"w" + bytes(23),
        b"k" + bytes(16),
        b"r" + bytes(40),
        b"z" + struct.pack("!QQq", 1, 2, 3) + commit(),
        b"W" + struct.pack("!QQq", 1, 2, 3) + commit(),
    ],
    ids=["empty", "w", "short xlogdata", "short keepalive", "status", "z", "W"],
)
def test_short_and_unknown_messages_are_declined(fresh: Harness, message: bytes) -> None:
    assert fresh.decoder.feed(message)
    assert fresh.decoder.wal_end == 0
    assert fresh.decoder.harvest() == ([], [], False)


BASIC_USERS = (FIXTURES / "basic_users.jsonl").read_bytes().splitlines()


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_corrupted_records_never_crash_nor_contradict_python(
    fixture_rules: Harness, data: st.DataObject
) -> None:
    """Bytes flipped and cut in real records: a bool back, never an exception; every
    record C consumes is one Python can read (C declines what Python rejects, as in
    test_records_python_cannot_read_are_declined), and is planned as Python plans it."""
    raw = bytearray(data.draw(st.sampled_from(BASIC_USERS)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from([*b'{}[]",:\\ -.0e', data.draw(st.integers(0, 255))]))
    payload = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    declined, emitted = fixture_rules.feed(payload)
    fixture_rules.decoder.counts()
    assert isinstance(declined, bool)
    assert fixture_rules.decoder.feed(memoryview(xlog(payload))) is declined
    fixture_rules.take()
    if declined:
        assert emitted == {}
        return
    try:
        event = decode_v2(payload)
    except DecodeError as exc:
        raise AssertionError(
            f"C consumed a record Python rejects ({exc}), emitting {emitted}: {payload!r}"
        ) from exc
    if isinstance(event, Change):
        assert emitted == fixture_rules.python(payload), payload
    else:
        assert emitted == {}


def test_feed_accepts_memoryviews(fresh: Harness) -> None:
    message = xlog(record("I", columns={"id": 1}))
    assert not fresh.decoder.feed(memoryview(message))
    assert fresh.decoder.feed_many([memoryview(message), memoryview(b"x")]) == 1
    assert sum(count for _, _, count in fresh.decoder.harvest()[0]) == 2


def test_feed_many_stops_at_the_first_declined_message_and_resumes_from_start(
    fresh: Harness,
) -> None:
    batch = [
        xlog(begin()),
        xlog(record("I", columns={"id": 1})),
        xlog(record("I", "other", columns={"id": 2})),
        xlog(record("I", columns={"id": 3})),
        xlog(commit()),
    ]
    assert fresh.decoder.feed_many(batch) == 2
    assert fresh.decoder.feed_many(batch, 3) == 5
    assert fresh.decoder.feed_many(batch, 5) == 5
    assert feed_all(fresh.decoder, batch) == [2]
    keys = [k for ks in fresh.take().values() for k in ks]
    assert sorted(keys) == ["t:1", "t:1", "t:3", "t:3"]


# --- Strict JSON: what Python cannot read must not be consumed ----------------------------


@pytest.mark.parametrize("raw", [b"007", b"-01", b"00"], ids=["007", "-01", "00"])
def test_numbers_with_leading_zeros_are_declined(fresh: Harness, raw: bytes) -> None:
    """JSON forbids leading zeros: Python raises DecodeError, so C must not emit a key."""
    payload = row_with(raw)
    with pytest.raises(DecodeError):
        decode_v2(payload)
    assert fresh.decoder.feed(xlog(payload)), f"consumed invalid JSON, emitted {fresh.take()}"


INVALID_JSON = {
    "control char in a string": row_with(b"1", b',{"name":"x","value":"a\tb"}'),
    "bad escape": row_with(b"1", b',{"name":"x","value":"a\\qb"}'),
    "bad utf-8": row_with(b"1", b',{"name":"x","value":"a\xffb"}'),
    "number 1.": row_with(b"1", b',{"name":"x","value":1.}'),
    "number 1-2": row_with(b"1", b',{"name":"x","value":1-2}'),
    "commit with bad escape": b'{"action":"C","xid":7,"timestamp":"2026-11-24 05:05:01\\q+00"}',
    "commit with bad utf-8": b'{"action":"C","xid":7,"lsn":"0/\xff"}',
}


@pytest.mark.parametrize("payload", INVALID_JSON.values(), ids=INVALID_JSON.keys())
def test_records_python_cannot_read_are_declined(fresh: Harness, payload: bytes) -> None:
    """The daemon never confirms past a record Python cannot read; C must decline it too."""
    with pytest.raises(DecodeError):
        decode_v2(payload)
    declined = fresh.decoder.feed(xlog(payload))
    assert declined, f"consumed invalid JSON: {fresh.decoder.harvest()}"


def test_duplicate_table_member_is_resolved_like_python_or_declined(fresh: Harness) -> None:
    """JSON objects with a repeated member: Python keeps the last one (here: no rules)."""
    payload = row_with(b"1")[:-1] + b',"table":"other"}'
    assert fresh.python(payload) == {}
    declined, emitted = fresh.feed(payload)
    assert declined or emitted == {}, f"keys of public.t emitted for public.other: {emitted}"


def test_duplicate_action_member_is_resolved_like_python_or_declined(fresh: Harness) -> None:
    """{"action":"B","action":"I",...} is an INSERT for Python: its key must not be lost."""
    payload = b'{"action":"B",' + row_with(b"1")[1:]
    expected = fresh.python(payload)
    assert expected is not None and expected != {}
    declined, emitted = fresh.feed(payload)
    assert declined or emitted == expected, f"INSERT consumed as a BEGIN: {emitted}"


# --- murmur3 and parse_timestamp ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_murmur3_matches_mmh3(data: bytes) -> None:
    assert _hotpath.murmur3(data) == mmh3.hash(data, 0, False)


def test_murmur3_of_every_tail_length() -> None:
    for n in range(17):
        data = bytes(range(0x80, 0x80 + n))
        assert _hotpath.murmur3(data) == mmh3.hash(data, 0, False)
        assert _hotpath.murmur3(bytearray(data)) == mmh3.hash(data, 0, False)


TIMESTAMPS = [
    "2026-11-24 05:05:01.307451+00",
    "2026-11-24 05:05:01+00",
    "2026-11-24 05:05:01.3+05:30",
    "2026-11-24 05:05:01.30745-08",
    "2026-11-24T05:05:01+00:00",
    "2026-11-24 05:05:01+0530",
    "1970-01-01 00:00:00+00",
    "1969-12-31 23:59:59.5+00",
    "2000-02-29 23:59:59.999999-12",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]


@pytest.mark.parametrize("text", TIMESTAMPS)
def test_parse_timestamp_matches_fromisoformat(text: str) -> None:
    assert _hotpath.parse_timestamp(text) == datetime.fromisoformat(text).timestamp()


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
    ),
    st.sampled_from(["+00", "+05:30", "-08", "+14", "-03:30", "+01"]),
)
def test_parse_timestamp_matches_fromisoformat_for_any_postgres_time(
    when: datetime, zone: str
) -> None:
    """PostgreSQL's form: up to 6 fraction digits without trailing zeros, +HH[:MM]."""
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}".rstrip("0")
    text += zone
    assert _hotpath.parse_timestamp(text) == datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-11-24",
        "2026/11/24 05:05:01+00",
        "2026-11-24 05:05:01+",
        "2026-11-24 05:05:01+5",
        "2026-11-24 05:05:01+00 BC",
        "2026-13-24 05:05:01+00",
        "2026-11-00 05:05:01+00",
        "2026-11-24 05:05:0x+00",
    ],
)
def test_parse_timestamp_returns_none_for_garbage(text: str) -> None:
    assert _hotpath.parse_timestamp(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30 00:00:00+00",
        "2026-11-24 25:00:00+00",
        "2026-11-24 05:61:00+00",
        "2026-11-24 05:05:61+00",
        "2026-11-24 05:05:01+24",
    ],
)
def test_parse_timestamp_rejects_out_of_range_fields(text: str) -> None:
    """fromisoformat refuses these; a timestamp that names no instant has no time."""
    with pytest.raises(ValueError):
        datetime.fromisoformat(text)
    assert _hotpath.parse_timestamp(text) is None


# --- Construction ------------------------------------------------------------------------


def test_decoder_rejects_inconsistent_specs() -> None:
    """Specs HotPath would never build are refused, not trusted."""
    table = (b"public", b"t", _hotpath.INSERT, [b"k"], [(0, [b"", b""], [0])])
    node = [(b"a:1-", b"a:1", 0)]
    with pytest.raises(ValueError):
        _hotpath.Decoder([table], [(_hotpath.RENDEZVOUS, [])], 1)
    with pytest.raises(ValueError):
        _hotpath.Decoder([table], [(_hotpath.RENDEZVOUS, [(b"a:1-", b"a:1", 5)])], 1)
    bad_template = (b"public", b"t", _hotpath.INSERT, [b"k"], [(0, [b""], [0])])
    with pytest.raises(ValueError):
        _hotpath.Decoder([bad_template], [(_hotpath.RENDEZVOUS, node)], 1)
    bad_column = (b"public", b"t", _hotpath.INSERT, [b"k"], [(0, [b"", b""], [3])])
    with pytest.raises(ValueError):
        _hotpath.Decoder([bad_column], [(_hotpath.RENDEZVOUS, node)], 1)
    assert _hotpath.Decoder([table], [(_hotpath.RENDEZVOUS, node)], 1).feed(xlog(b"{}"))
