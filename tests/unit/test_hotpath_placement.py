"""C placement (``invalidator/hotpath/placement.c``) is an accelerator, never a second
meaning: for every client whose placement it takes, its owner equals the Python placement's
(the specification) and the real library's recorded vector, key for key; each key hash
equals the Python function it copies."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invalidator.core.placement import (
    hashkit,
    hot_spec,
    java_string,
    memjs,
    node_name,
    placement_for,
    python_memcached,
    split_weight,
    spymemcached,
)
from invalidator.hotpath import _hotpath, placer
from tests.placement_vectors import VectorSet, corpus_keys, load, vector_files

FILES = vector_files()


@pytest.mark.parametrize("path", FILES, ids=[p.name.removesuffix(".json.gz") for p in FILES])
def test_c_owner_is_the_python_owner_and_the_librarys_on_every_vector(path: object) -> None:
    vectors: VectorSet = load(path)  # type: ignore[arg-type]
    keys = corpus_keys()
    checked = 0
    for case in vectors.cases:
        placement = placement_for(vectors.client, case.servers, vectors.behaviors)
        fast = placer(placement)
        assert fast is not None, f"{vectors.id}/{case.name}: not placed in C"
        names = [node_name(split_weight(s)[0]) for s in case.servers]
        mismatches = [
            (key, want, fast.owner(key), placement.owners(key)[0])
            for key, want in zip(keys, case.owners, strict=True)
            if fast.owner(key) != placement.owners(key)[0]
            or (want >= 0 and fast.owner(key) != names[want])
        ]
        assert not mismatches, f"{vectors.id}/{case.name}: e.g. {mismatches[:3]}"
        checked += sum(1 for w in case.owners if w >= 0)
    assert checked >= 100_000


# --- Each key hash against the Python function it copies ---------------------------------


def _le32(digest: bytes) -> int:
    return int.from_bytes(digest[:4], "little")


def _libmemcached(number: int) -> Callable[[str], int]:
    return lambda key: hashkit.BY_NUMBER[number](key.encode())


SPECIFICATION: dict[str, Callable[[str], int]] = {
    "crc32": lambda key: zlib.crc32(key.encode()),
    "crc32_hi15": lambda key: python_memcached.server_hash(key.encode()),
    "java_hashcode": java_string.hash_code,
    "java_hashcode_abs": memjs.string_hash,
    "fnv1_32_utf16": spymemcached.HASHES["fnv1_32"],
    "fnv1a_32_utf16": spymemcached.HASHES["fnv1a_32"],
    "fnv1_64_utf16": spymemcached.HASHES["fnv1_64"],
    "fnv1a_64_utf16": spymemcached.HASHES["fnv1a_64"],
    "md5_le32": spymemcached.HASHES["ketama"],
    "sha1_le32": lambda key: _le32(hashlib.sha1(key.encode()).digest()),
    **{name: _libmemcached(number) for number, name in hashkit.HOT_NAME.items()},
}

ascii_keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
utf8_keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1)
keys = st.one_of(ascii_keys, utf8_keys).filter(lambda k: len(k.encode()) <= 250)


def test_c_and_python_name_the_same_key_hashes() -> None:
    assert ("", *hot_spec.KEY_HASHES) == _hotpath.KEY_HASHES
    assert set(SPECIFICATION) == set(hot_spec.KEY_HASHES)


def test_spymemcached_crc_is_the_same_function_as_python_memcacheds() -> None:
    """crc32_hi15 stands for both: one Python function per C hash is tested above."""
    for key in ("a", "user:1", "é€", "x" * 250):
        assert spymemcached.HASHES["crc"](key) == python_memcached.server_hash(key.encode())
        assert hashkit.crc(key.encode()) == python_memcached.server_hash(key.encode())


@settings(max_examples=300, deadline=None)
@given(key=keys, name=st.sampled_from(hot_spec.KEY_HASHES))
def test_every_key_hash_equals_its_python_specification(key: str, name: str) -> None:
    number = _hotpath.KEY_HASHES.index(name)
    assert _hotpath.key_hash(number, key.encode()) == SPECIFICATION[name](key)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 11, 12, 13, 55, 56, 63, 64, 65, 119, 120, 250])
def test_key_hashes_at_block_boundaries(length: int) -> None:
    """MD5/SHA-1 padding, murmur and jenkins tails: every length around a block edge."""
    key = "".join(chr(0x61 + i % 26) for i in range(length))
    for name in hot_spec.KEY_HASHES:
        number = _hotpath.KEY_HASHES.index(name)
        assert _hotpath.key_hash(number, key.encode()) == SPECIFICATION[name](key), name


# --- Generated server lists and keys, every client and option set -------------------------

OPTION_SETS: list[tuple[str, dict[str, Any]]] = sorted(
    {(v.client, repr(v.behaviors)): (v.client, v.behaviors) for v in map(load, FILES)}.values(),
    key=repr,
)
WEIGHTED = {"pylibmc", "php-memcached", "python-memcached", "dalli", "node-memcached"}


@st.composite
def server_lists(draw: st.DrawFn, client: str, behaviors: dict[str, Any]) -> list[str]:
    """1-16 distinct servers: IPv4, IPv6 or hostnames, with or without a port (always
    with one when weighted)."""
    count = draw(st.integers(1, 16))
    numbers = draw(st.lists(st.integers(1, 254), min_size=count, max_size=count, unique=True))
    consistent_spy = client == "spymemcached" and behaviors.get("locator") == "consistent"
    kinds = ["ipv4", "ipv6"] if consistent_spy else ["ipv4", "ipv6", "name"]
    weighted = (client in WEIGHTED or consistent_spy) and draw(st.booleans())
    ports = [11211, 11212, 22122, 1] if weighted else [11211, 11212, 22122, 1, None]
    servers = []
    for n in numbers:
        kind = draw(st.sampled_from(kinds))
        host = {"ipv4": f"10.0.{n // 7}.{n}", "ipv6": f"[fd00::{n:x}]", "name": f"cache-{n}.svc"}
        port = draw(st.sampled_from(ports))
        server = host[kind] if port is None else f"{host[kind]}:{port}"
        servers.append(f"{server} {draw(st.integers(1, 5))}" if weighted else server)
    return servers


@st.composite
def placed(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[str], list[str]]:
    client, behaviors = draw(st.sampled_from(OPTION_SETS))
    servers = draw(server_lists(client, behaviors))
    return client, behaviors, servers, draw(st.lists(keys, min_size=1, max_size=20))


@settings(max_examples=300, deadline=None)
@given(placed())
def test_generated_servers_and_keys_are_placed_in_c_as_in_python(
    case: tuple[str, dict[str, Any], list[str], list[str]],
) -> None:
    client, behaviors, servers, generated = case
    placement = placement_for(client, servers, behaviors)
    fast = placer(placement)
    assert fast is not None
    for key in generated:
        assert fast.owner(key) == placement.owners(key)[0], (client, behaviors, servers, key)


# --- Which placements C takes --------------------------------------------------------------


def test_every_client_with_a_single_owner_is_placed_in_c() -> None:
    servers = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    for client in ("pymemcache", "pylibmc", "php-memcached", "python-memcached", "dalli"):
        assert placer(placement_for(client, servers)) is not None, client
    for client in ("spymemcached", "gomemcache", "node-memcached", "memjs"):
        assert placer(placement_for(client, servers)) is not None, client


def test_node_memcached_sha2_digests_stay_in_python() -> None:
    placement = placement_for("node-memcached", ["a:1", "b:2"], {"algorithm": "sha256"})
    assert placement.hot_mode is None
    assert placer(placement) is None


def test_fallback_depth_stays_in_python() -> None:
    for client in ("pymemcache", "python-memcached"):
        placement = placement_for(client, ["a:1", "b:2"], fallback_depth=1)
        assert placer(placement) is None, client


def test_broadcast_has_no_single_owner_in_c() -> None:
    assert placer(placement_for("mcrouter", ["a:1", "b:2"])) is None


def test_a_placer_refuses_tables_that_do_not_fit_its_mode() -> None:
    """Specs the Python placements would never build are refused, not trusted."""
    crc = _hotpath.KEY_HASHES.index("crc32")
    with pytest.raises(ValueError):
        _hotpath.Placer(_hotpath.CONTINUUM, crc, ["a", "b"], [], [])
    with pytest.raises(ValueError):
        _hotpath.Placer(_hotpath.CONTINUUM, crc, ["a", "b"], [5, 1], [0, 1])
    with pytest.raises(ValueError):
        _hotpath.Placer(_hotpath.MODULA, crc, ["a", "b"], [], [0, 2])
    with pytest.raises(ValueError):
        _hotpath.Placer(_hotpath.MODULA, 0, ["a", "b"], [], [0, 1])
    with pytest.raises(ValueError):
        _hotpath.Placer(_hotpath.RENDEZVOUS, crc, ["a", "b"], [], [])
