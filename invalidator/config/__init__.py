"""Configuration: the YAML file of SPEC plus ``INVALIDATOR_*`` environment overrides.

Models are immutable and reject unknown fields. ``load_config`` turns every problem into
one ``ConfigError`` whose lines each name the file, the rule (index and table) and the
field at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from invalidator.core.placement.servers import parse_server
from invalidator.core.templates import TemplateSyntaxError, compile_template
from invalidator.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/invalidator/config.yaml"
ChangeOp = Literal["insert", "update", "delete", "truncate"]
Action = Literal["delete", "refresh", "bump"]
Hashing = Literal["rendezvous", "ketama", "modula", "broadcast"]
SUPPORTED_HASHING = ("rendezvous", "broadcast")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``10``, ``"10s"``, ``"250ms"``, ``"2m"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s or 250ms")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 10s or 250ms, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("duration must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_template(source: str) -> str:
    try:
        compile_template(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{exc} in {source!r}") from None
    return source


KeyTemplate = Annotated[str, AfterValidator(_check_template)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceConfig(_Model):
    kind: Literal["wal2json", "notify"] = "wal2json"
    dsn: SecretStr | None = None
    slot: str = "cache_invalidator"
    create_slot: bool = True

    @field_validator("slot")
    @classmethod
    def _slot_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,63}", value):
            raise ValueError("slot names are 1-63 characters of a-z, 0-9 and _")
        return value


class DiscoverConfig(_Model):
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


class PoolConfig(_Model):
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


class ValueConfig(_Model):
    json_columns: tuple[str, ...] | None = Field(None, alias="json")
    query: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ValueConfig:
        if (self.json_columns is None) == (self.query is None):
            raise ValueError("give exactly one of 'json' or 'query'")
        if self.json_columns is not None and not self.json_columns:
            raise ValueError("'json' needs at least one column")
        return self


class RuleConfig(_Model):
    table: str = Field(min_length=1)
    schema_name: str = Field("public", alias="schema", min_length=1)
    on: tuple[ChangeOp, ...] = ("insert", "update", "delete")
    keys: tuple[KeyTemplate, ...] = Field(min_length=1)
    action: Action = "delete"
    when_changed: tuple[str, ...] | None = None
    value: ValueConfig | None = None
    ttl: int | str | None = None  # seconds, or the name of one of the pool's ttls
    pool: str = "default"
    redelete_after: Duration | None = None
    # What a TRUNCATE does (with "truncate" in on): flush the pool's nodes, bump the
    # counter (bump rules), or only warn. Default: flush for delete/refresh, bump for bump.
    truncate: Literal["flush", "bump", "warn"] | None = None

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("ttl must not be negative")
        return value

    @field_validator("on")
    @classmethod
    def _on(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("'on' needs at least one of insert, update, delete, truncate")
        return value

    @model_validator(mode="after")
    def _action_fields(self) -> RuleConfig:
        if self.action == "refresh" and self.value is None:
            raise ValueError("action 'refresh' needs 'value'")
        if self.action != "refresh" and self.value is not None:
            raise ValueError(f"'value' only applies to action 'refresh', not {self.action!r}")
        if self.when_changed is not None and "update" not in self.on:
            raise ValueError("'when_changed' applies to updates but 'on' has no 'update'")
        if self.truncate is not None and "truncate" not in self.on:
            raise ValueError("'truncate' applies to truncates but 'on' has no 'truncate'")
        if self.truncate == "bump" and self.action != "bump":
            raise ValueError("truncate: bump needs action: bump")
        return self

    @property
    def truncate_policy(self) -> str:
        if self.truncate is not None:
            return self.truncate
        return "bump" if self.action == "bump" else "flush"

    @property
    def qualified_table(self) -> str:
        return f"{self.schema_name}.{self.table}"


class WarmConfig(_Model):
    """One cache-warming query: every row it returns is written to ``key``."""

    name: str | None = None
    query: str = Field(min_length=1)
    key: KeyTemplate
    value: ValueConfig
    ttl: int | None = Field(None, ge=0)
    pool: str = "default"

    @model_validator(mode="after")
    def _json_value(self) -> WarmConfig:
        if self.value.json_columns is None:
            raise ValueError("warm values are built from the query's columns: use value.json")
        return self


class HttpConfig(_Model):
    listen: str = "0.0.0.0:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_server(value)
        return value


class LogConfig(_Model):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Config(_Model):
    source: SourceConfig = SourceConfig()
    pools: Mapping[str, PoolConfig]
    rules: tuple[RuleConfig, ...] = Field(min_length=1)
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    warm: tuple[WarmConfig, ...] = ()

    @model_validator(mode="after")
    def _pools_exist(self) -> Config:
        for i, entry in enumerate(self.warm):
            if entry.pool not in self.pools:
                raise ValueError(f"warm[{i}]: pool: unknown pool {entry.pool!r}")
        for i, rule in enumerate(self.rules):
            pool = self.pools.get(rule.pool)
            if isinstance(rule.ttl, str) and pool is not None and rule.ttl not in pool.ttls:
                known = ", ".join(sorted(pool.ttls)) or "none defined"
                raise ValueError(
                    f"rules[{i}] (table {rule.qualified_table}): ttl: unknown TTL policy "
                    f"{rule.ttl!r} of pool {rule.pool!r} ({known})"
                )
            if rule.pool not in self.pools:
                known = ", ".join(sorted(self.pools)) or "none"
                raise ValueError(
                    f"rules[{i}] (table {rule.qualified_table}): pool: "
                    f"unknown pool {rule.pool!r} (pools: {known})"
                )
        return self


ENV_PREFIX = "INVALIDATOR_"


class EnvOverrides(BaseModel):
    """The ``INVALIDATOR_*`` variables of SPEC (names case-insensitive). Read directly
    from the environment: pydantic-settings cost a tenth of a second of start-up."""

    model_config = ConfigDict(extra="ignore")

    config: str | None = None
    dsn: SecretStr | None = None
    memcached_servers: str | None = None
    slot: str | None = None
    http_listen: str | None = None
    log_format: str | None = None
    log_level: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> EnvOverrides:
        env = os.environ if environ is None else environ
        return cls.model_validate(
            {
                name[len(ENV_PREFIX) :].lower(): value
                for name, value in env.items()
                if name.upper().startswith(ENV_PREFIX)
            }
        )


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. Under YAML 1.1 rules ``on:`` (a rule field)
    would be read as the boolean True, and ``no``/``off`` values as False."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML with 1.2 booleans (see ``_Loader``)."""
    return yaml.load(text, Loader=_Loader)


def _apply_env(data: dict[str, Any], env: EnvOverrides) -> dict[str, Any]:
    def section(name: str) -> dict[str, Any]:
        value = data.get(name)
        if not isinstance(value, dict):
            value = {} if value is None else value
            data[name] = value
        return value

    if env.dsn is not None:
        section("source")["dsn"] = env.dsn.get_secret_value()
    if env.slot is not None:
        section("source")["slot"] = env.slot
    if env.memcached_servers is not None:
        pools = section("pools")
        default = pools.get("default") if isinstance(pools, dict) else None
        default = dict(default) if isinstance(default, dict) else {}
        default["servers"] = [s.strip() for s in env.memcached_servers.split(",") if s.strip()]
        default.pop("discover", None)
        pools["default"] = default
    if env.http_listen is not None:
        section("http")["listen"] = env.http_listen
    if env.log_format is not None:
        section("log")["format"] = env.log_format
    if env.log_level is not None:
        section("log")["level"] = env.log_level
    return data


def _where(loc: Sequence[int | str], data: Any) -> str:
    """Render a pydantic location, naming rules by index and table."""
    parts: list[str] = []
    node = data
    i = 0
    while i < len(loc):
        item = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(item, str) and isinstance(nxt, int):
            label = f"{item}[{nxt}]"
            container = node.get(item) if isinstance(node, dict) else None
            element = (
                container[nxt]
                if isinstance(container, list) and 0 <= nxt < len(container)
                else None
            )
            if item == "rules" and isinstance(element, dict):
                table = element.get("table", "?")
                schema = element.get("schema", "public")
                label += f" (table {schema}.{table})"
            parts.append(label)
            node = element
            i += 2
            continue
        if isinstance(item, str) and item.startswith(("function-", "tagged-union")):
            i += 1
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else str(item))
        node = node.get(item) if isinstance(node, dict) else None
        i += 1
    text = ".".join(parts).replace(".[", "[")
    # A rule's label ends with ')'; what follows is the field inside the rule.
    return text.replace(").", "): ")


def config_path(explicit: str | None, env: EnvOverrides | None = None) -> str:
    """``--config`` wins, then ``INVALIDATOR_CONFIG``, then the default path."""
    env = env or EnvOverrides.from_environ()
    return explicit or env.config or DEFAULT_CONFIG_PATH


def parse_config(data: Any, source: str, env: EnvOverrides | None = None) -> Config:
    """Validate already-loaded YAML data (after environment overrides)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    data = _apply_env(data, env if env is not None else EnvOverrides.from_environ())
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        errors = exc.errors(include_url=False)
        locs = [tuple(e["loc"]) for e in errors]
        for err in errors:
            loc = tuple(err["loc"])
            if err["type"] == "too_short" and any(
                len(other) > len(loc) and other[: len(loc)] == loc for other in locs
            ):
                continue  # the item's own error says more than "too short after validation"
            where = _where(err["loc"], data)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            lines.append(f"{source}: {where}: {msg}" if where else f"{source}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, override from the environment and validate the configuration file."""
    env = EnvOverrides.from_environ()
    source = config_path(str(path) if path is not None else None, env)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file (give --config or INVALIDATOR_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark is not None:
            raise ConfigError(
                f"{source}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
            ) from None
        raise ConfigError(f"{source}: invalid YAML: {problem}") from None
    return parse_config(data, source, env)
