"""What each client's placement accepts and refuses: options that change placement and are
not reproduced are errors naming them, never ignored (the vectors prove the rest)."""

from __future__ import annotations

import memcache
import pytest

from invalidator.core.placement import CLIENTS, placement_for, split_weight
from invalidator.core.placement.php_memcached import settings as php_settings
from invalidator.core.placement.pylibmc import settings as pylibmc_settings

SERVERS = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]


def test_an_unknown_client_is_refused_naming_the_known_ones() -> None:
    """A typo in `client` lists every client the config accepts."""
    with pytest.raises(ValueError, match="unknown client 'pylibmc2'") as info:
        placement_for("pylibmc2", SERVERS)
    assert all(name in str(info.value) for name in CLIENTS)


def test_weights_are_refused_for_a_client_that_takes_none() -> None:
    """pymemcache's HashClient has no weights: a weighted entry is an error, not ignored."""
    with pytest.raises(ValueError, match="client pymemcache takes no server weights"):
        placement_for("pymemcache", ["10.0.0.1:11211 2", "10.0.0.2:11211"])


def test_a_weight_is_placement_input_only() -> None:
    """A weighted entry's node is still named host:port."""
    placement = placement_for("python-memcached", ["10.0.0.1:11211 3", "[::1]:11212"])
    assert placement.nodes == ("10.0.0.1:11211", "::1:11212")


@pytest.mark.parametrize("entry", ["a:1 0", "a:1 x", "a:1 70000", "127.0.0.1 45381", "[::1] 2"])
def test_a_bad_weight_is_refused(entry: str) -> None:
    """Weights are whole numbers from 1 to 65535."""
    with pytest.raises(ValueError, match="weight"):
        split_weight(entry)


@pytest.mark.parametrize(
    ("behaviors", "named"),
    [
        ({"distribution": "random"}, "random"),
        ({"distribution": "virtual bucket"}, "virtual bucket"),
        ({"num_replicas": 1}, "num_replicas"),
        ({"namespace": "app:"}, "namespace"),
        ({"hash": "hsieh"}, "hsieh"),
    ],
)
def test_pylibmc_options_that_are_not_reproduced_are_refused(
    behaviors: dict[str, object], named: str
) -> None:
    """Each refusal names the option."""
    with pytest.raises(ValueError, match=named):
        placement_for("pylibmc", SERVERS, behaviors)


def test_an_unknown_pylibmc_behavior_is_refused() -> None:
    """pylibmc itself refuses unknown names; so does the config."""
    with pytest.raises(ValueError, match="unknown pylibmc behavior ketamah"):
        placement_for("pylibmc", SERVERS, {"ketamah": True})


def test_pylibmc_options_that_do_not_place_are_accepted() -> None:
    """Timeouts and socket options leave placement as the defaults have it."""
    assert pylibmc_settings({"tcp_nodelay": True, "connect_timeout": 500}) == pylibmc_settings({})


def test_pylibmc_ketama_weighted_switches_the_key_hash_to_md5() -> None:
    """As libmemcached's KETAMA_WEIGHTED does, whatever `hash` said before it."""
    assert pylibmc_settings({"hash": "crc", "ketama_weighted": True}).key_hash == 1


def test_php_libketama_compatible_off_resets_hash_and_distribution() -> None:
    """php-memcached's own clean-up when the option is turned off."""
    on_then_off = php_settings({"libketama_compatible": True, "hash": "crc"})
    reset = php_settings({"hash": "crc", "libketama_compatible": False})
    assert on_then_off.key_hash == 2
    assert reset == php_settings({})


def test_fallback_depth_is_refused_for_libmemcached_clients() -> None:
    """libmemcached's failover is not reproduced: the error says so."""
    with pytest.raises(ValueError, match="fallback_depth is not available for client pylibmc"):
        placement_for("pylibmc", SERVERS, {"ketama": True}, fallback_depth=1)


def test_python_memcached_fallback_is_where_the_library_writes_while_the_owner_is_down() -> None:
    """python-memcached itself (its ``_get_server`` with the owner's connect failing) picks
    the second node of our ``fallback_depth: 1`` placement, for every key."""
    placement = placement_for("python-memcached", SERVERS, fallback_depth=1)
    client = memcache.Client(SERVERS)
    by_node = {f"{h.ip}:{h.port}": h for h in client.servers}
    down: set[str] = set()
    saved = memcache._Host.connect
    memcache._Host.connect = lambda host: 0 if f"{host.ip}:{host.port}" in down else 1
    try:
        wrong = []
        for key in (f"user:{i}" for i in range(2000)):
            owners = placement.owners(key)
            down.clear()
            down.add(owners[0])
            server, _ = client._get_server(key.encode())
            if len(owners) != 2 or server is not by_node[owners[1]]:
                wrong.append((key, owners, server))
    finally:
        memcache._Host.connect = saved
    assert wrong == []
