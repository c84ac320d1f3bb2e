"""The memcached pools: their servers or DNS discovery, and how keys are placed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from invalidator.config.fields import Duration, StrictModel
from invalidator.core.placement.servers import node_name, parse_server

Hashing = Literal["rendezvous", "ketama", "modula", "broadcast"]
SUPPORTED_HASHING = ("rendezvous", "broadcast")


class DiscoverConfig(StrictModel):
    srv: str
    every: Duration = 10.0
    # After a membership change, delete on old and new owners for this long.
    grace: Duration = 60.0
    # DNS servers as host:port; default: the system's (/etc/resolv.conf).
    nameservers: tuple[str, ...] | None = None

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for server in value or ():
            parse_server(server)
        return value


def _readable(path: str | None, field: str) -> str | None:
    """``path`` if it can be opened and read; the error names the path, never the content."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None
    return path


class TlsConfig(StrictModel):
    """Verified TLS to every node of the pool (never a plaintext fallback). Certificates
    are verified against ``ca_file`` (default: the system's trust store) and the host of
    the server string, or ``server_name``; ``cert_file``/``key_file`` give a client
    certificate to nodes that require one. Files are re-read when they change."""

    ca_file: str | None = Field(None, min_length=1)
    cert_file: str | None = Field(None, min_length=1)
    key_file: str | None = Field(None, min_length=1)
    server_name: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _files(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file (a client certificate), or neither")
        _readable(self.ca_file, "ca_file")
        _readable(self.cert_file, "cert_file")
        _readable(self.key_file, "key_file")
        return self


class PoolConfig(StrictModel):
    servers: tuple[str, ...] = ()
    discover: DiscoverConfig | None = None
    hashing: Hashing = "rendezvous"
    fallback_depth: int = Field(0, ge=0, le=8)
    # Operations queued for an unreachable node before they are replaced by one flush_all
    # (sent when it answers again): bounds memory and never stalls the stream.
    max_queue: int = Field(100_000, ge=100)
    # TTL policies by data type (as in the seed guide), used as `ttl: <name>` in rules.
    ttls: Mapping[str, int] = Field(default_factory=dict)
    redelete_after: Duration | None = None
    tls: TlsConfig | None = None
    # The read replicas this pool's apps read on a cache miss (DSNs: secrets). An operation
    # takes effect once every one of them has replayed its commit; ``replica_wait_max``
    # bounds the wait for one that is down or far behind (then: apply now, and again when
    # it catches up).
    replicas: tuple[SecretStr, ...] = ()
    replica_wait_max: Duration = 30.0

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        texts = [dsn.get_secret_value().strip() for dsn in value]
        if any(not text for text in texts):
            raise ValueError("a replica DSN is empty")
        if len(set(texts)) != len(texts):
            raise ValueError("a replica is listed twice")
        return value

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            parse_server(server)
        if len(set(value)) != len(value):
            raise ValueError("a server is listed twice")
        return value

    @field_validator("hashing")
    @classmethod
    def _hashing(cls, value: str) -> str:
        if value not in SUPPORTED_HASHING:
            raise ValueError(f"{value!r} is not supported yet (supported: rendezvous, broadcast)")
        return value

    @model_validator(mode="after")
    def _has_servers(self) -> PoolConfig:
        if not self.servers and self.discover is None:
            raise ValueError("a pool needs 'servers' or 'discover'")
        return self


def check_node_tls(pools: Mapping[str, PoolConfig]) -> None:
    """A node listed in two pools must be reached the same way from both."""
    seen: dict[str, tuple[str, TlsConfig | None]] = {}
    for name, pool in pools.items():
        for server in pool.servers:
            node = node_name(server)
            first = seen.setdefault(node, (name, pool.tls))
            if first[1] != pool.tls:
                raise ValueError(
                    f"pools: node {node} is in pools {first[0]!r} and {name!r} "
                    "with different tls settings"
                )
