"""Reading the configuration: YAML with 1.2 booleans, environment overrides, validation,
and every problem rendered as one line naming the file, the rule (index and table) and
the field at fault."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from invalidator.config.env import EnvOverrides, apply_env
from invalidator.config.model import Config
from invalidator.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/invalidator/config.yaml"


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
    env = env if env is not None else EnvOverrides.from_environ()
    return explicit or env.config or DEFAULT_CONFIG_PATH


def parse_config(data: Any, source: str, env: EnvOverrides | None = None) -> Config:
    """Validate already-loaded YAML data (after environment overrides)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    data = apply_env(data, env if env is not None else EnvOverrides.from_environ())
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
