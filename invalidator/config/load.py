"""Reading the configuration: YAML with 1.2 booleans, environment overrides, validation,
and every problem rendered as one line naming the file, the rule (index and table) and
the field at fault."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

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


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose fields are valid at ``loc`` (a pydantic location), or None."""
    annotation: Any = Config
    for item in loc:
        if isinstance(item, str) and item.startswith(("function-", "tagged-union")):
            continue
        annotation = _step(annotation, item)
        if annotation is None:
            return None
    models = [a for a in _alternatives(annotation) if _is_model(a)]
    return models[0] if models else None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _alternatives(annotation: Any) -> list[Any]:
    """The members of a union (``X | None``), or the annotation itself."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    return [annotation]


def _step(annotation: Any, item: int | str) -> Any:
    """The annotation one location step below ``annotation``."""
    for option in _alternatives(annotation):
        if _is_model(option) and isinstance(item, str):
            for name, field in option.model_fields.items():
                if item in (name, field.alias):
                    return field.annotation
        origin = typing.get_origin(option)
        args = typing.get_args(option)
        if isinstance(item, int) and origin in (tuple, list) and args:
            return args[0]
        if isinstance(item, str) and isinstance(origin, type) and issubclass(origin, Mapping):
            return args[1] if len(args) == 2 else None
    return None


def _valid_fields(loc: Sequence[int | str]) -> list[str]:
    """The field names valid beside the (unknown) last element of ``loc``."""
    model = _model_at(loc[:-1])
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def suggestion(loc: Sequence[int | str]) -> str | None:
    """The valid field closest to the unknown one at ``loc``, if one is close."""
    name = loc[-1]
    if not isinstance(name, str):
        return None
    close = difflib.get_close_matches(name, _valid_fields(loc), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_field_message(loc: Sequence[int | str]) -> str:
    """``unknown field``, with the closest valid field of that place, or the valid ones."""
    close = suggestion(loc)
    if close is not None:
        return f"unknown field (did you mean {close!r}?)"
    valid = _valid_fields(loc)
    return "unknown field (valid: " + ", ".join(valid) + ")" if valid else "unknown field"


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
        raise ConfigError("\n".join(_error_lines(exc, data, source))) from None


def _error_lines(exc: ValidationError, data: Any, source: str) -> list[str]:
    """Every problem of ``exc``, one line each, naming file, rule and the full field path."""
    lines = []
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    # A misspelt field also makes the real one "missing": the suggestion says both.
    suggested = {
        (*loc[:-1], name)
        for loc, err in zip(locs, errors, strict=True)
        if err["type"] == "extra_forbidden" and (name := suggestion(loc)) is not None
    }
    for err, loc in zip(errors, locs, strict=True):
        if err["type"] == "too_short" and any(
            len(other) > len(loc) and other[: len(loc)] == loc for other in locs
        ):
            continue  # the item's own error says more than "too short after validation"
        if err["type"] == "missing" and loc in suggested:
            continue
        where = _where(loc, data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_field_message(loc)
        elif err["type"] == "missing":
            msg = "required field missing"
        for line in msg.splitlines():
            lines.append(f"{source}: {where}: {line}" if where else f"{source}: {line}")
    return lines


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
