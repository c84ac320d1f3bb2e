"""The ``INVALIDATOR_*`` environment overrides of SPEC's table, and how they are laid over
the file's data before validation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

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


def apply_env(data: dict[str, Any], env: EnvOverrides) -> dict[str, Any]:
    """``data`` (the file's top-level mapping) with the environment's values laid over it."""

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
