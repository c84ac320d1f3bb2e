"""Key templates and memcached key rules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from invalidator.core.templates import (
    TemplateSyntaxError,
    Unbuildable,
    compile_template,
    key_problem,
)


def test_template_renders_columns_and_literals() -> None:
    """`{column}` is replaced by the row's value, literals kept."""
    assert compile_template("user:{id}:v2").render({"id": 42}) == "user:42:v2"


def test_template_accepts_column_names_with_punctuation_and_spaces() -> None:
    """Quoted PostgreSQL names such as `e-mail` or `na me` are usable."""
    assert compile_template("{e-mail}|{na me}").render({"e-mail": "a@b", "na me": "x"}) == "a@b|x"


def test_doubled_braces_are_literal() -> None:
    """`{{` and `}}` produce single braces."""
    assert compile_template("{{{id}}}").render({"id": 1}) == "{1}"


def test_values_format_like_an_app_f_string() -> None:
    """int, Decimal and bool render as Python's str() of what psycopg returns."""
    t = compile_template("{a}/{b}/{c}")
    assert t.render({"a": 10**30, "b": Decimal("1.10"), "c": True}) == f"{10**30}/1.10/True"


def test_null_column_makes_the_key_unbuildable() -> None:
    """A NULL value never becomes the text 'None'."""
    assert compile_template("u:{email}").render({"email": None}) == Unbuildable("email", "null")


def test_absent_column_makes_the_key_unbuildable() -> None:
    """A column missing from the change is reported, not guessed."""
    assert compile_template("u:{email}").render({"id": 1}) == Unbuildable("email", "absent")


@pytest.mark.parametrize("source", ["user:{id", "user:}", "user:{}", "{a{b}"])
def test_malformed_templates_are_rejected(source: str) -> None:
    """Unbalanced or empty braces are syntax errors."""
    with pytest.raises(TemplateSyntaxError):
        compile_template(source)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty key"),
        ("a b", "key contains whitespace"),
        ("a\tb", "key contains whitespace"),
        ("a\x01b", "key contains a control character"),
        ("k" * 251, "key is 251 bytes, memcached allows 250"),
        ("é" * 126, "key is 252 bytes, memcached allows 250"),
    ],
)
def test_keys_memcached_would_refuse_are_named(key: str, problem: str) -> None:
    """Length counts UTF-8 bytes; whitespace and control characters are refused."""
    assert key_problem(key) == problem


@pytest.mark.parametrize("key", ["user:42", "k" * 250, "usuário:ü", "a/b|c#d"])
def test_valid_keys_pass(key: str) -> None:
    """Printable keys up to 250 bytes, non-ASCII included, are fine."""
    assert key_problem(key) is None
