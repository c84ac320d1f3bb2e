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
        ("127.0.0.1 45381", "no spaces"),
        ("a b:1", "no spaces"),
        ("memcached://host:11211", "without a scheme"),
        ("host:port", "bad port"),
        ("host:0", "expected host:port"),
        ("host:70000", "expected host:port"),
        ("h/x:1", "expected host:port"),
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
    assert message.startswith("config.yaml: pools.default.servers")
    assert "no spaces" in message
