"""DSN passwords never leave the process."""

from __future__ import annotations

from invalidator.redact import redact


def test_url_password_is_masked() -> None:
    """postgresql://user:secret@host keeps the user, hides the password."""
    assert redact("postgresql://app:s3cr%40t@db:5432/app") == "postgresql://app:***@db:5432/app"


def test_keyword_password_is_masked() -> None:
    """libpq key=value DSNs hide password=..., quoted or not."""
    assert redact("host=db password='a b' user=x") == "host=db password=*** user=x"
    assert redact("host=db password=hunter2") == "host=db password=***"


def test_text_without_secrets_is_unchanged() -> None:
    """Ordinary messages pass through."""
    assert redact("postgresql://app@db/app failed") == "postgresql://app@db/app failed"
