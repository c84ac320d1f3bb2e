"""Server strings are read as the apps' clients read them, and anything else is refused at
load time (offline too), never discovered at the first change."""

from __future__ import annotations

import pytest

from invalidator.config import parse_config
from invalidator.core.placement import parse_server
from invalidator.errors import ConfigError


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("host:11211", ("host", 11211)),
        ("host", ("host", 11211)),
        ("10.0.0.7:11212", ("10.0.0.7", 11212)),
        ("[::1]:11211", ("::1", 11211)),
        ("[::1]", ("::1", 11211)),
        ("  host:1  ", ("host", 1)),
    ],
)
def test_host_port_forms_are_read_like_pymemcache(server: str, expected: tuple[str, int]) -> None:
    """host:port, a bare host (default port), bracketed IPv6, surrounding blanks."""
    assert parse_server(server) == expected


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("127.0.0.1 45381", r"separated by ':', not a space \(write 127.0.0.1:45381\)"),
        ("a b:1", "no spaces"),
        ("memcached://host:11211", "write 'host:11211', without a scheme"),
        ("host:port", "bad port 'port'"),
        ("host:0", r"port 0 is out of range \(1-65535\)"),
        ("host:70000", r"port 70000 is out of range \(1-65535\)"),
        ("h/x:1", "'h/x' is not a host name"),
        (":11211", "no host before the ':'"),
        ("unix:/tmp/mc.sock", "unix sockets"),
        ("", "empty"),
    ],
)
def test_malformed_servers_are_refused_with_the_reason(server: str, reason: str) -> None:
    """Each malformed string says what is wrong."""
    with pytest.raises(ValueError, match=reason):
        parse_server(server)


def test_a_malformed_server_is_a_config_error_naming_the_field() -> None:
    """Load time, offline: the file, the pool and the field, not a crash at the first change."""
    data = {
        "pools": {"default": {"servers": ["127.0.0.1:11211", "127.0.0.1 45381"]}},
        "rules": [{"table": "users", "keys": ["user:{id}"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "config.yaml")
    message = str(caught.value)
    assert message == (
        "config.yaml: pools.default.servers[1]: '127.0.0.1 45381': host and port are separated"
        " by ':', not a space (write 127.0.0.1:45381)"
    )


def test_the_apps_comma_separated_servers_string_is_a_list() -> None:
    """`servers: "a:1,b:2"` (MEMCACHED_SERVERS' format) reads as two servers, in order."""
    data = {
        "pools": {"default": {"servers": "10.0.0.7:11211, 10.0.0.8:11211"}},
        "rules": [{"table": "users", "keys": ["user:{id}"]}],
    }
    config = parse_config(data, "config.yaml")
    assert config.pools["default"].servers == ("10.0.0.7:11211", "10.0.0.8:11211")


def test_every_malformed_server_is_reported_with_its_index() -> None:
    """Two bad strings: two lines, each naming its own position."""
    data = {
        "pools": {"default": {"servers": ["memcached://h:1", "ok:1", "h:x"]}},
        "rules": [{"table": "users", "keys": ["user:{id}"]}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "config.yaml")
    assert str(caught.value).splitlines() == [
        "config.yaml: pools.default.servers[0]: 'memcached://h:1': write 'h:1', without a scheme",
        "config.yaml: pools.default.servers[2]: 'h:x': bad port 'x' (a number, 1-65535)",
    ]


def test_a_listen_address_may_ask_for_any_free_port() -> None:
    """Port 0 is refused for a memcached server, accepted for an address to bind."""
    assert parse_server("127.0.0.1:0", listen=True) == ("127.0.0.1", 0)
