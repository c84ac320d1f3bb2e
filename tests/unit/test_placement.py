"""Placement must agree with pymemcache's HashClient, the apps' own client."""

from __future__ import annotations

import random
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from pymemcache.client.hash import HashClient

from invalidator.core.placement import Broadcast, Rendezvous, node_name


def oracle(servers: list[str]) -> HashClient:
    return HashClient(servers, use_pooling=False)


def random_servers(rng: random.Random, count: int) -> list[str]:
    servers: set[str] = set()
    while len(servers) < count:
        kind = rng.randrange(3)
        port = rng.choice([11211, 11212, rng.randrange(1024, 65535)])
        if kind == 0:
            host = ".".join(str(rng.randrange(256)) for _ in range(4))
        elif kind == 1:
            host = f"memcached-{rng.randrange(64)}.memcached.caching.svc.cluster.local"
        else:
            host = "".join(rng.choice(string.ascii_lowercase + "-") for _ in range(8)) + ".internal"
        servers.add(f"{host}:{port}")
    return sorted(servers, key=lambda _: rng.random())


KEY_ALPHABET = string.ascii_letters + string.digits + ":_-./@|#" + "éüß€中"


def test_rendezvous_matches_hashclient_over_100k_keys() -> None:
    """Zero mismatches against HashClient for 100,000 keys over 1-16 node lists."""
    rng = random.Random(20261124)
    mismatches = 0
    total = 0
    for count in range(1, 17):
        servers = random_servers(rng, count)
        client = oracle(servers)
        ours = Rendezvous(servers)
        for _ in range(6250):
            key = "".join(rng.choice(KEY_ALPHABET) for _ in range(rng.randrange(1, 60)))
            total += 1
            if client.hasher.get_node(key) != ours.owner(key):
                mismatches += 1
    assert (total, mismatches) == (100_000, 0)


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(min_size=1, max_size=80),
    ports=st.lists(st.integers(1, 65535), min_size=1, max_size=16, unique=True),
)
def test_rendezvous_matches_hashclient_for_any_text_key(key: str, ports: list[int]) -> None:
    """Any str key, ASCII or not, lands where HashClient puts it."""
    servers = [f"10.1.{p % 256}.{p // 256}:{p}" for p in ports]
    assert oracle(servers).hasher.get_node(key) == Rendezvous(servers).owner(key)


def test_node_names_follow_pymemcache() -> None:
    """Server strings become pymemcache's node names: IPv6 brackets dropped, port defaulted."""
    servers = ["[::1]:11211", "cache-a", "10.0.0.7:11212"]
    client = oracle(servers)
    assert [node_name(s) for s in servers] == list(client.clients)


def test_ipv6_and_default_port_servers_place_like_hashclient() -> None:
    """Placement over IPv6 and port-less servers agrees with HashClient."""
    servers = ["[::1]:11211", "cache-a", "10.0.0.7:11212"]
    client = oracle(servers)
    ours = Rendezvous(servers)
    keys = [f"user:{i}" for i in range(2000)]
    assert [client.hasher.get_node(k) for k in keys] == [ours.owner(k) for k in keys]


def test_fallback_depth_adds_the_next_choices_in_rank_order() -> None:
    """With fallback_depth 1, the second owner is where HashClient goes once the first is gone."""
    servers = ["a:1", "b:2", "c:3", "d:4"]
    ours = Rendezvous(servers, fallback_depth=1)
    for i in range(500):
        key = f"k{i}"
        first, second = ours.owners(key)
        client = oracle(servers)
        client.hasher.remove_node(first)
        assert (first, second) == (Rendezvous(servers).owner(key), client.hasher.get_node(key))


def test_broadcast_sends_every_key_to_every_node() -> None:
    """Broadcast owners are all nodes, in configured order."""
    assert Broadcast(["a:1", "b:2"]).owners("x") == ("a:1", "b:2")
