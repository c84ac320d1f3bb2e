"""The memcached pools: their servers or DNS discovery, and how keys are placed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator

from invalidator.config.fields import Duration, StrictModel
from invalidator.core.placement.servers import parse_server

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
