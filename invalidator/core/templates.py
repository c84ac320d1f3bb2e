"""Key templates (``"user:{id}"``) and memcached's key rules.

A template is compiled once into literal parts and column names; rendering is a join.
``{name}`` takes any characters but ``}`` (so ``{e-mail}`` and ``{na me}`` work);
``{{`` and ``}}`` are literal braces. Values are formatted the way an app's f-string
formats what psycopg returns for the common key types: ``str``, ``int``, ``Decimal``,
``bool`` (``True``/``False``); other types are wal2json's text form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_KEY_BYTES = 250


class TemplateSyntaxError(ValueError):
    """A key template cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled key template."""

    source: str
    literals: tuple[str, ...]  # len(columns) + 1 pieces around the columns
    columns: tuple[str, ...]

    @property
    def constant(self) -> str | None:
        """The key itself when the template uses no column (a bump rule's counter)."""
        return None if self.columns else self.literals[0]

    def render(self, row: Mapping[str, Any]) -> str | Unbuildable:
        """The key for ``row``, or why it cannot be built."""
        literals = self.literals
        parts = [literals[0]]
        for i, column in enumerate(self.columns):
            if column not in row:
                return Unbuildable(column, "absent")
            value = row[column]
            if value is None:
                return Unbuildable(column, "null")
            parts.append(value if type(value) is str else str(value))
            parts.append(literals[i + 1])
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class Unbuildable:
    """Why a key could not be built: the ``column`` was ``absent`` from the change or ``null``."""

    column: str
    reason: str


def compile_template(source: str) -> Template:
    """Parse ``source`` once; raises ``TemplateSyntaxError`` with the position at fault."""
    literals: list[str] = []
    columns: list[str] = []
    buf: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "{":
            if source.startswith("{{", i):
                buf.append("{")
                i += 2
                continue
            end = source.find("}", i + 1)
            if end < 0:
                raise TemplateSyntaxError(f"unclosed '{{' at position {i}")
            name = source[i + 1 : end]
            if not name:
                raise TemplateSyntaxError(f"empty column name at position {i}")
            if "{" in name:
                raise TemplateSyntaxError(f"'{{' inside a column name at position {i}")
            literals.append("".join(buf))
            buf.clear()
            columns.append(name)
            i = end + 1
        elif ch == "}":
            if source.startswith("}}", i):
                buf.append("}")
                i += 2
                continue
            raise TemplateSyntaxError(f"single '}}' at position {i} (write '}}}}')")
        else:
            buf.append(ch)
            i += 1
    literals.append("".join(buf))
    return Template(source, tuple(literals), tuple(columns))


def key_problem(key: str) -> str | None:
    """Why memcached would refuse ``key`` (text protocol rules), or ``None`` if it is fine."""
    if not key:
        return "empty key"
    try:
        data = key.encode("utf-8")
    except UnicodeEncodeError:
        return "key is not valid Unicode"
    if len(data) > MAX_KEY_BYTES:
        return f"key is {len(data)} bytes, memcached allows {MAX_KEY_BYTES}"
    if key.isprintable() and " " not in key:
        return None
    # The protocol splits on ASCII whitespace; other control bytes confuse servers and proxies.
    for byte in data:
        if byte in (0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D):
            return "key contains whitespace"
        if byte < 0x20 or byte == 0x7F:
            return "key contains a control character"
    return None
