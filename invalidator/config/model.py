"""The configuration file's models (SPEC "Configuration"): source, rules, warm-up queries,
HTTP, logging and the whole ``Config``; pools are in ``pools``. Each validator raises a
``ValueError`` whose text ``load`` turns into one line naming file, rule and field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from invalidator.config.fields import Duration, KeyTemplate, StrictModel, read_dsn_file
from invalidator.config.pools import PoolConfig, check_node_tls
from invalidator.core.placement.servers import parse_server

ChangeOp = Literal["insert", "update", "delete", "truncate"]
Action = Literal["delete", "refresh", "bump"]


NO_DSN = "no database: set source.dsn or source.dsn_file (or INVALIDATOR_DSN, INVALIDATOR_DSN_FILE)"


class SourceConfig(StrictModel):
    kind: Literal["wal2json", "pgoutput", "notify"] = "wal2json"
    dsn: SecretStr | None = None
    # Read into ``dsn`` at load time; kept as the path it came from.
    dsn_file: str | None = Field(default=None, min_length=1)
    slot: str = "cache_invalidator"
    # pgoutput: the publication setup/run keep in step with the rules (default: the slot's name)
    publication: str | None = None
    create_slot: bool = True
    # What to do when changes may have been missed (slot gone or lost, another cluster, a
    # promoted standby): empty the pools, bump the bump rules' counters, or stay unready.
    on_gap: Literal["flush", "bump", "refuse"] = "flush"

    @model_validator(mode="before")
    @classmethod
    def _dsn_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("dsn_file") is None:
            return data
        if data.get("dsn") is not None:
            raise ValueError("give either dsn or dsn_file, not both")
        path = data["dsn_file"]
        if not isinstance(path, str) or not path:
            return data  # the field's own validation names the problem
        return {**data, "dsn": read_dsn_file(path)}

    @field_validator("slot")
    @classmethod
    def _slot_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,63}", value):
            raise ValueError("slot names are 1-63 characters of a-z, 0-9 and _")
        return value

    @field_validator("publication")
    @classmethod
    def _publication_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9_]{1,63}", value):
            raise ValueError("publication names are 1-63 characters of a-z, 0-9 and _")
        return value

    @property
    def publication_name(self) -> str:
        """The pgoutput publication: ``publication``, or the slot's name."""
        return self.publication or self.slot


class ValueConfig(StrictModel):
    json_columns: tuple[str, ...] | None = Field(None, alias="json")
    query: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ValueConfig:
        if (self.json_columns is None) == (self.query is None):
            raise ValueError("give exactly one of 'json' or 'query'")
        if self.json_columns is not None and not self.json_columns:
            raise ValueError("'json' needs at least one column")
        return self


class RuleConfig(StrictModel):
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
        problems = []
        if self.action == "refresh" and self.value is None:
            problems.append("action 'refresh' needs 'value'")
        if self.action == "bump" and self.value is not None:
            # On a delete rule, value says what the app stores (for `audit`); a bump
            # rule's keys hold counters.
            problems.append("'value' does not apply to action 'bump' (its keys hold counters)")
        if self.when_changed is not None and "update" not in self.on:
            problems.append("'when_changed' applies to updates but 'on' has no 'update'")
        if self.truncate is not None and "truncate" not in self.on:
            problems.append("'truncate' applies to truncates but 'on' has no 'truncate'")
        if self.truncate == "bump" and self.action != "bump":
            problems.append("truncate: bump needs action: bump")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def truncate_policy(self) -> str:
        if self.truncate is not None:
            return self.truncate
        return "bump" if self.action == "bump" else "flush"

    @property
    def qualified_table(self) -> str:
        return f"{self.schema_name}.{self.table}"


class WarmConfig(StrictModel):
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


HTTP_OFF = "off"


class HttpConfig(StrictModel):
    """``listen``: ``host:port`` of ``/metrics``, ``/healthz``, ``/readyz`` (port 0: any free
    port, logged at start), or ``off`` for no HTTP server at all (no port opened)."""

    listen: str = "0.0.0.0:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value.strip().lower() == HTTP_OFF:
            return HTTP_OFF
        parse_server(value, listen=True)
        return value

    @property
    def enabled(self) -> bool:
        return self.listen != HTTP_OFF


class LogConfig(StrictModel):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class AuditConfig(StrictModel):
    """The staleness probe inside ``run`` (SPEC ``audit:``): every ``every`` seconds, up to
    ``sample`` rows of each rule with a ``value`` are compared with their cached keys, at
    most ``rate`` rows per second (``invalidator audit`` does the same once)."""

    every: Duration = Field(10.0, gt=0)
    sample: int = Field(100, ge=1, le=100_000)
    rate: float = Field(200.0, gt=0)


class Config(StrictModel):
    source: SourceConfig = SourceConfig()
    pools: Mapping[str, PoolConfig]
    rules: tuple[RuleConfig, ...] = Field(min_length=1)
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    warm: tuple[WarmConfig, ...] = ()
    audit: AuditConfig | None = None

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Pools and TTL policies that rules and warm-up entries name exist; every
        problem, one per line."""
        problems: list[str] = []
        try:
            check_node_tls(self.pools)
        except ValueError as exc:
            problems.append(str(exc))
        if self.source.kind == "notify":
            problems += [
                f"pools.{name}.replicas: needs a logical replication source (wal2json or "
                "pgoutput): "
                "the notify source has no commit position to wait for"
                for name, pool in self.pools.items()
                if pool.replicas
            ]
        for i, entry in enumerate(self.warm):
            if entry.pool not in self.pools:
                problems.append(f"warm[{i}]: pool: unknown pool {entry.pool!r}")
        for i, rule in enumerate(self.rules):
            pool = self.pools.get(rule.pool)
            if isinstance(rule.ttl, str) and pool is not None and rule.ttl not in pool.ttls:
                known = ", ".join(sorted(pool.ttls)) or "none defined"
                problems.append(
                    f"rules[{i}] (table {rule.qualified_table}): ttl: unknown TTL policy "
                    f"{rule.ttl!r} of pool {rule.pool!r} ({known})"
                )
            if rule.pool not in self.pools:
                known = ", ".join(sorted(self.pools)) or "none"
                problems.append(
                    f"rules[{i}] (table {rule.qualified_table}): pool: "
                    f"unknown pool {rule.pool!r} (pools: {known})"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self
