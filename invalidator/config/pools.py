"""The memcached pools: their servers or DNS discovery, and how keys are placed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from invalidator.config.fields import Duration, StrictModel, read_dsn_file
from invalidator.core.placement import CLIENTS, placement_for
from invalidator.core.placement.servers import node_name, parse_server, split_weight

# The older `hashing:` names → the `client` and `behaviors` they mean (SPEC "Pools").
HASHING: dict[str, tuple[str, dict[str, Any]]] = {
    "rendezvous": ("pymemcache", {}),
    "ketama": ("pylibmc", {"ketama": True}),
    "modula": ("pylibmc", {}),
    "broadcast": ("broadcast", {}),
}


def _server(value: str) -> str:
    parse_server(split_weight(value)[0])
    return value


# A server string, checked where it stands (the error names ``servers[i]``).
Server = Annotated[str, AfterValidator(_server)]


def split_servers(value: Any) -> Any:
    """The apps' ``MEMCACHED_SERVERS`` form, ``"a:11211,b:11211"``, as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


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


def _server_entry(entry: Any) -> Any:
    """``{server: "host:port", weight: N}`` → ``"host:port N"``; strings stay as written."""
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"server", "weight"})
        if unknown or "server" not in entry:
            raise ValueError(
                "a server entry is 'host:port', 'host:port WEIGHT' or {server, weight}"
                + (f" (unknown field {', '.join(map(str, unknown))})" if unknown else "")
            )
        server, weight = entry["server"], entry.get("weight")
        if not isinstance(server, str) or (
            weight is not None and (isinstance(weight, bool) or not isinstance(weight, int))
        ):
            raise ValueError("a server entry is {server: 'host:port', weight: a whole number}")
        return server if weight is None else f"{server} {weight}"
    return entry


class PoolConfig(StrictModel):
    """A memcached pool. ``client``/``behaviors`` say whose placement to copy; the older
    ``hashing`` is read into them (and is then None)."""

    servers: tuple[Server, ...] = ()
    discover: DiscoverConfig | None = None
    client: str = "pymemcache"
    behaviors: Mapping[str, Any] = Field(default_factory=dict)
    hashing: str | None = None
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

    @field_validator("replicas", mode="before")
    @classmethod
    def _replica_files(cls, value: Any) -> Any:
        """``{dsn_file: PATH}`` entries (a mounted Secret) are read at load time."""
        if not isinstance(value, list | tuple):
            return value
        out = []
        for entry in value:
            if isinstance(entry, Mapping):
                if set(entry) != {"dsn_file"} or not isinstance(entry["dsn_file"], str):
                    raise ValueError("a replica is a DSN or {dsn_file: PATH}")
                entry = read_dsn_file(entry["dsn_file"])
            out.append(entry)
        return out

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        texts = [dsn.get_secret_value().strip() for dsn in value]
        if any(not text for text in texts):
            raise ValueError("a replica DSN is empty")
        if len(set(texts)) != len(texts):
            raise ValueError("a replica is listed twice")
        return value

    @model_validator(mode="before")
    @classmethod
    def _older_hashing(cls, data: Any) -> Any:
        """``hashing: ketama`` → ``client: pylibmc, behaviors: {ketama: true}``; giving
        ``client``/``behaviors`` too must say the same thing."""
        if not isinstance(data, Mapping) or data.get("hashing") is None:
            return data
        hashing = data["hashing"]
        if hashing not in HASHING:
            raise ValueError(
                f"hashing: unknown {hashing!r} (known: {', '.join(HASHING)}; "
                f"or write client: one of {', '.join(CLIENTS)})"
            )
        client, behaviors = HASHING[hashing]
        given_client = data.get("client", client)
        given_behaviors = data.get("behaviors", behaviors)
        if given_client != client or given_behaviors != behaviors:
            raise ValueError(
                f"hashing: {hashing} means client: {client}, behaviors: {behaviors or '{}'}, "
                f"which contradicts client: {given_client}, behaviors: "
                f"{given_behaviors or '{}'}; keep client/behaviors and drop hashing"
            )
        return {**data, "client": client, "behaviors": dict(behaviors), "hashing": None}

    @field_validator("servers", mode="before")
    @classmethod
    def _server_entries(cls, value: Any) -> Any:
        """The apps' comma-separated string, and ``{server, weight}`` entries."""
        value = split_servers(value)
        if isinstance(value, list | tuple):
            return tuple(_server_entry(entry) for entry in value)
        return value

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        nodes = [node_name(entry) for entry in value]
        if len(set(nodes)) != len(nodes):
            raise ValueError("a server is listed twice")
        return value

    @field_validator("client")
    @classmethod
    def _client(cls, value: str) -> str:
        if value not in CLIENTS:
            raise ValueError(f"unknown client {value!r} (known: {', '.join(CLIENTS)})")
        return value

    @model_validator(mode="after")
    def _has_servers(self) -> PoolConfig:
        if not self.servers and self.discover is None:
            raise ValueError("a pool needs 'servers' or 'discover'")
        return self

    @model_validator(mode="after")
    def _placement(self) -> PoolConfig:
        """The placement can be built: behaviors, weights and fallback_depth are ones the
        client takes and we reproduce (discovered pools: checked over a stand-in node)."""
        try:
            placement_for(
                self.client,
                self.servers or ("127.0.0.1:11211",),
                self.behaviors,
                self.fallback_depth,
            )
        except ValueError as exc:
            raise ValueError(str(exc)) from None
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
