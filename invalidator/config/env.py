"""The ``INVALIDATOR_*`` environment overrides of SPEC's table, read with pydantic-settings,
and how they are laid over the file's data before validation.

Names are case-insensitive. A variable with the prefix that is not one of SPEC's settings
is an error naming the nearest valid one: a misspelt override is never silently ignored.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from invalidator.errors import ConfigError

ENV_PREFIX = "INVALIDATOR_"


class EnvOverrides(BaseSettings):
    """SPEC's environment table: ``INVALIDATOR_`` + a field name, any case."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",  # unknown INVALIDATOR_* names are reported by check_names()
        frozen=True,
        hide_input_in_errors=True,
    )

    config: str | None = None  # the YAML file's path
    dsn: SecretStr | None = None  # source.dsn
    dsn_file: str | None = None  # source.dsn_file
    memcached_servers: str | None = None  # pools.default.servers, "host:port,host:port"
    slot: str | None = None  # source.slot
    http_listen: str | None = None  # http.listen
    log_format: str | None = None  # log.format
    log_level: str | None = None  # log.level

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The process environment only: no .env file, no secrets directory.
        return (init_settings, env_settings)

    @classmethod
    def from_environ(cls) -> EnvOverrides:
        """The overrides in ``os.environ``; ``ConfigError`` for a name that is not one."""
        problems = check_names(os.environ)
        if problems:
            raise ConfigError("\n".join(problems))
        env = cls()
        if env.dsn is not None and env.dsn_file is not None:
            raise ConfigError(
                f"environment: {ENV_PREFIX}DSN and {ENV_PREFIX}DSN_FILE are both set (give one)"
            )
        return env


SETTINGS = tuple(ENV_PREFIX + name.upper() for name in EnvOverrides.model_fields)


def check_names(environ: Mapping[str, str]) -> list[str]:
    """One line per ``INVALIDATOR_*`` variable that is not a setting or is set twice
    (names differing only in case), naming the nearest setting. Values are never shown."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    suffixes = [name.removeprefix(ENV_PREFIX) for name in SETTINGS]
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        if upper in SETTINGS:
            if upper in seen:
                problems.append(f"environment: {seen[upper]} and {name} are both set (give one)")
            seen[upper] = name
            continue
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), suffixes, n=1)
        hint = (
            f"did you mean {ENV_PREFIX}{close[0]}?" if close else "settings: " + ", ".join(SETTINGS)
        )
        problems.append(f"environment: {name} is not a setting ({hint})")
    return problems


def _section(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None:
        value = data[name] = {}
    return value if isinstance(value, dict) else None  # not a mapping: validation says so


def apply_env(data: dict[str, Any], env: EnvOverrides) -> dict[str, Any]:
    """``data`` (the file's top-level mapping) with the environment's values laid over it.

    A DSN from the environment replaces the file's, whichever form each gives (``dsn`` or
    ``dsn_file``), as servers from the environment replace the default pool's discovery.
    """
    dsn = env.dsn.get_secret_value() if env.dsn is not None else None
    given = {
        "source": {"dsn": dsn, "dsn_file": env.dsn_file, "slot": env.slot},
        "http": {"listen": env.http_listen},
        "log": {"format": env.log_format, "level": env.log_level},
    }
    for name, fields in given.items():
        values = {field: value for field, value in fields.items() if value is not None}
        section = _section(data, name) if values else None
        if section is None:
            continue
        if "dsn" in values or "dsn_file" in values:
            section.pop("dsn", None)
            section.pop("dsn_file", None)
        section.update(values)
    pools = _section(data, "pools") if env.memcached_servers is not None else None
    if pools is not None and env.memcached_servers is not None:
        default = pools.get("default")
        default = dict(default) if isinstance(default, dict) else {}
        default["servers"] = [s.strip() for s in env.memcached_servers.split(",") if s.strip()]
        default.pop("discover", None)
        pools["default"] = default
    return data
