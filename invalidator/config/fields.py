"""Building blocks shared by the configuration models: the strict base model, durations
(``10s``, ``250ms``) and key templates checked at load time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from invalidator.core.templates import TemplateSyntaxError, compile_template

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


class StrictModel(BaseModel):
    """Immutable, and an unknown field is an error (a typo never passes silently). Inputs
    stay out of a ``ValidationError``'s text: one of them may be the DSN."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True
    )


def read_dsn_file(path: str) -> str:
    """The DSN in ``path`` (a mounted Secret), surrounding whitespace and newline removed.
    Errors name the path and never quote the file's content."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"dsn_file: cannot read {path}: {exc.strerror}") from None
    try:
        dsn = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"dsn_file: {path} is not UTF-8 text") from None
    if not dsn:
        raise ValueError(f"dsn_file: {path} is empty")
    return dsn
