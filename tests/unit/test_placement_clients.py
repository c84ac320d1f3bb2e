"""The other languages' clients (dalli, spymemcached, gomemcache, npm memcached, memjs) and
mcrouter: edge cases of each placement. Exactness is proven by test_placement_vectors.py
against the real libraries; these state the behaviours one at a time."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from invalidator.core.placement import node_name, placement_for
from invalidator.core.placement.java_string import hash_code, utf16_units
from invalidator.core.placement.servers import split_weight
from tests.placement_vectors import FIXTURES, corpus_keys, load

IPS = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11212"]
KEYS = corpus_keys()[:3000]

# Every client and option set of this family, as pools.NAME.client / behaviors.
CLIENTS: list[tuple[str, dict[str, Any]]] = [
    ("dalli", {}),
    ("gomemcache", {}),
    ("memjs", {}),
    ("node-memcached", {}),
    ("node-memcached", {"compatibility": "hash_ring", "algorithm": "sha1"}),
    ("spymemcached", {}),
    ("spymemcached", {"locator": "consistent", "hash": "ketama"}),
    ("spymemcached", {"locator": "consistent", "hash": "fnv1a_32"}),
]
IDS = [f"{c}{'-' + '-'.join(map(str, b.values())) if b else ''}" for c, b in CLIENTS]


@pytest.mark.parametrize(("client", "behaviors"), CLIENTS, ids=IDS)
def test_one_server_takes_every_key(client: str, behaviors: dict[str, Any]) -> None:
    """With one server, every key is that server's."""
    placement = placement_for(client, ["10.0.0.9:11300"], behaviors)
    assert {placement.owners(k) for k in KEYS} == {("10.0.0.9:11300",)}


@pytest.mark.parametrize(("client", "behaviors"), CLIENTS, ids=IDS)
def test_nodes_are_the_servers_names_in_order(client: str, behaviors: dict[str, Any]) -> None:
    """Node names are ``host:port`` of the configured strings, in their order."""
    servers = ["10.0.0.2:11211", "[fd00::2]:11212", "10.0.0.1"]
    placement = placement_for(client, servers, behaviors)
    assert placement.nodes == ("10.0.0.2:11211", "fd00::2:11212", "10.0.0.1:11211")


@pytest.mark.parametrize(("client", "behaviors"), CLIENTS, ids=IDS)
def test_each_key_has_one_owner_and_every_server_owns_keys(
    client: str, behaviors: dict[str, Any]
) -> None:
    """One owner per key (no Python-side fallback), and the keys spread over every node."""
    placement = placement_for(client, IPS, behaviors)
    owners = [placement.owners(k) for k in KEYS]
    assert {len(o) for o in owners} == {1}
    assert set(Counter(o[0] for o in owners)) == set(placement.nodes)


@pytest.mark.parametrize(("client", "behaviors"), CLIENTS, ids=IDS)
def test_an_unknown_behavior_is_refused_by_name(client: str, behaviors: dict[str, Any]) -> None:
    """An option this placement does not implement is a clear error, never ignored."""
    with pytest.raises(ValueError, match="redundancy"):
        placement_for(client, IPS, {**behaviors, "redundancy": 1})


@pytest.mark.parametrize(("client", "behaviors"), CLIENTS, ids=IDS)
def test_fallback_depth_is_refused(client: str, behaviors: dict[str, Any]) -> None:
    """fallback_depth (pymemcache's next rendezvous choices) means nothing here."""
    with pytest.raises(ValueError, match="fallback_depth"):
        placement_for(client, IPS, behaviors, fallback_depth=1)


# gomemcache (Debian's 2014 snapshot) refuses every non-ASCII key (legalKey: bytes > 0x7e),
# so its vectors hold none to compare.
MY_FILES = sorted(
    p
    for prefix in ("dalli", "memjs", "node-memcached", "spymemcached")
    for p in FIXTURES.glob(f"{prefix}*.json.gz")
)


@pytest.mark.parametrize("path", MY_FILES, ids=[p.name.removesuffix(".json.gz") for p in MY_FILES])
def test_non_ascii_keys_land_where_the_library_put_them(path: Any) -> None:
    """UTF-8 keys, astral characters (two UTF-16 units in Java and JavaScript) included, go
    where the library put them: each library's own encoding (UTF-8 bytes or UTF-16 units)."""
    vectors = load(path)
    case = max(vectors.cases, key=lambda c: len(c.servers))
    picked = [
        (i, k) for i, k in enumerate(corpus_keys()) if not k.isascii() and case.owners[i] >= 0
    ]
    astral = sum(1 for _, k in picked if any(ord(c) > 0xFFFF for c in k))
    assert len(picked) >= 3000 and astral >= 500
    placement = placement_for(vectors.client, case.servers, vectors.behaviors)
    names = [node_name(split_weight(s)[0]) for s in case.servers]
    wrong = [k for i, k in picked if placement.owners(k)[0] != names[case.owners[i]]]
    assert wrong == []


@pytest.mark.parametrize(
    ("client", "behaviors"),
    [
        ("dalli", {}),
        ("node-memcached", {}),
        ("spymemcached", {"locator": "consistent", "hash": "ketama"}),
        ("spymemcached", {"locator": "consistent", "hash": "crc"}),
    ],
)
def test_a_heavier_server_owns_more_keys(client: str, behaviors: dict[str, Any]) -> None:
    """Weights (``"host:port weight"``) shift keys towards the heavier server."""
    placement = placement_for(client, ["10.0.0.1:11211 1", "10.0.0.2:11211 9"], behaviors)
    counts = Counter(placement.owners(k)[0] for k in KEYS)
    assert counts["10.0.0.2:11211"] > 0.75 * len(KEYS)


def test_dalli_weight_one_everywhere_is_the_unweighted_ring() -> None:
    """dalli gives ``servers * 160 * weight / total`` points: all weights 1 is the default."""
    plain = placement_for("dalli", IPS)
    weighted = placement_for("dalli", [f"{s} 1" for s in IPS])
    assert [plain.owners(k) for k in KEYS] == [weighted.owners(k) for k in KEYS]


@pytest.mark.parametrize("client", ["gomemcache", "memjs"])
def test_modulo_clients_take_no_weights(client: str) -> None:
    """gomemcache and memjs only count servers: a weight is not theirs to take."""
    with pytest.raises(ValueError):
        placement_for(client, ["10.0.0.1:11211 2", "10.0.0.2:11211"])


@pytest.mark.parametrize("client", ["gomemcache", "memjs", "spymemcached"])
def test_modulo_placement_ignores_the_names(client: str) -> None:
    """Modulo placements follow the order only: renaming servers moves no key."""
    one = placement_for(client, IPS)
    other = placement_for(client, ["cache-a:1", "cache-b:2", "cache-c:3"])
    index_one = [one.nodes.index(one.owners(k)[0]) for k in KEYS]
    index_other = [other.nodes.index(other.owners(k)[0]) for k in KEYS]
    assert index_one == index_other


def test_spymemcached_accepts_the_java_names() -> None:
    """``CONSISTENT`` / ``KETAMA_HASH`` (the Java enum names) mean consistent / ketama."""
    java = placement_for("spymemcached", IPS, {"locator": "CONSISTENT", "hash": "KETAMA_HASH"})
    ours = placement_for("spymemcached", IPS, {"locator": "consistent", "hash": "ketama"})
    assert [java.owners(k) for k in KEYS] == [ours.owners(k) for k in KEYS]


def test_spymemcached_consistent_refuses_a_hostname() -> None:
    """The continuum hashes ``host/<IP from DNS>:port``: a name cannot be placed exactly."""
    with pytest.raises(ValueError, match="by IP"):
        placement_for("spymemcached", ["cache-a:11211"], {"locator": "consistent"})


def test_spymemcached_weights_need_the_consistent_locator() -> None:
    """Weights are KetamaConnectionFactory's; ARRAY_MOD has none."""
    with pytest.raises(ValueError, match="consistent"):
        placement_for("spymemcached", ["10.0.0.1:11211 2", "10.0.0.2:11211 1"])


def test_spymemcached_weights_are_all_or_none() -> None:
    """The library's weight map must hold every node."""
    with pytest.raises(ValueError, match="every server"):
        placement_for(
            "spymemcached", ["10.0.0.1:11211 2", "10.0.0.2:11211"], {"locator": "consistent"}
        )


def test_spymemcached_refuses_an_unknown_hash() -> None:
    """A hash name outside DefaultHashAlgorithm is named in the error."""
    with pytest.raises(ValueError, match="murmur"):
        placement_for("spymemcached", IPS, {"hash": "murmur"})


def test_node_memcached_ketama_hashes_the_default_port_by_host() -> None:
    """With ``compatibility: ketama`` a server on 11211 is hashed by its host alone, so
    ``host`` and ``host:11211`` place alike; ``hash_ring`` hashes the strings as written."""
    bare = ["memcached-0", "memcached-1", "memcached-2"]
    ported = [f"{s}:11211" for s in bare]
    for behaviors, same in (({}, True), ({"compatibility": "hash_ring"}, False)):
        one = placement_for("node-memcached", bare, behaviors)
        other = placement_for("node-memcached", ported, behaviors)
        assert ([one.owners(k) for k in KEYS] == [other.owners(k) for k in KEYS]) is same


def test_mcrouter_sends_every_key_to_every_router() -> None:
    """The router places keys itself: every operation goes to each router listed."""
    placement = placement_for("mcrouter", ["10.0.0.5:5000", "[fd00::5]:5000"])
    assert placement.nodes == ("10.0.0.5:5000", "fd00::5:5000")
    assert {placement.owners(k) for k in KEYS} == {placement.nodes}


def test_mcrouter_takes_no_behaviors() -> None:
    """mcrouter's routing is the router's config, not the invalidator's."""
    with pytest.raises(ValueError, match="no behaviors"):
        placement_for("mcrouter", ["10.0.0.5:5000"], {"ketama": True})


def test_split_weight_reads_a_trailing_whole_number() -> None:
    """``"host:port weight"`` → (server, weight); without one → (server, None)."""
    assert split_weight(" 10.0.0.1:11211 3 ") == ("10.0.0.1:11211", 3)
    assert split_weight("[::1]:11211") == ("[::1]:11211", None)


@pytest.mark.parametrize("bad", ["10.0.0.1:11211 0", "10.0.0.1:11211 x", "10.0.0.1:11211 -2"])
def test_split_weight_refuses_a_weight_that_is_not_positive(bad: str) -> None:
    """A weight is a whole number of at least 1, named in the error."""
    with pytest.raises(ValueError, match="weight"):
        split_weight(bad)


@pytest.mark.parametrize("length", [0, 1, 1023, 1024, 1025, 3000])
def test_java_string_hash_composes_like_java_for_any_length(length: int) -> None:
    """``(a + b).hashCode() == a.hashCode() * 31**len(b) + b.hashCode()`` (mod 2**32), on
    both sides of the precomputed powers' size and for astral characters (2 units)."""
    a = ("k€🙂" * length)[:length]
    b = "user:42:é🚀"
    composed = (hash_code(a) * pow(31, len(utf16_units(b)), 1 << 32) + hash_code(b)) % (1 << 32)
    assert hash_code(a + b) == composed
