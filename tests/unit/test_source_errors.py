"""PostgreSQL errors as the daemon reports them: one line, the server named, no secret."""

from __future__ import annotations

import psycopg
import pytest

from invalidator.sources.postgres import server_of, source_error

TLS_DSN = (
    "postgresql://app:hunter2@db.example:6432/app"
    "?sslmode=verify-full&sslrootcert=/etc/invalidator/pg-ca/ca.crt"
    "&sslcert=/etc/invalidator/pg-client/tls.crt&sslkey=/etc/invalidator/pg-client/tls.key"
)


@pytest.mark.parametrize(
    ("dsn", "server"),
    [
        (TLS_DSN, "db.example:6432"),
        ("host=db password=hunter2 sslmode=require", "db:5432"),
        ("postgresql://u@a:1,b:2/x", "a:1,b:2"),
        ("host=a,b port=7 password=hunter2", "a:7,b:7"),
        ("hostaddr=10.0.0.7 password=hunter2", "10.0.0.7:5432"),
        ("dbname=x", "localhost:5432"),
        ("postgresql://u:hunter2@[", None),  # unparsable: no server rather than a guess
    ],
)
def test_server_of_reads_host_and_port_only(dsn: str, server: str | None) -> None:
    """host:port of each host, libpq's defaults when absent; nothing else of the DSN."""
    assert server_of(dsn) == server


def test_error_without_the_server_gets_it_from_the_dsn() -> None:
    """A failure whose text does not name the server (after connecting, say) is told which
    server from the DSN's host and port; the password and the TLS paths stay out."""
    exc = psycopg.OperationalError("server closed the connection unexpectedly\n\tThis probably")
    text = str(source_error("replication connection failed", exc, TLS_DSN))
    assert text == (
        "replication connection failed (db.example:6432): server closed the connection"
        " unexpectedly This probably"
    )
    assert "hunter2" not in text and "/etc/invalidator" not in text


def test_server_is_named_as_configured_beside_libpqs_address() -> None:
    """libpq names the address it reached (psycopg resolved the name); the message also
    names the server as the DSN gives it. One line."""
    exc = psycopg.OperationalError(
        'connection failed: connection to server at "10.0.0.7", port 6432 failed:'
        " SSL error: certificate verify failed\n"
    )
    assert str(source_error("cannot open replication connection", exc, TLS_DSN)) == (
        "cannot open replication connection (db.example:6432): connection failed: connection"
        ' to server at "10.0.0.7", port 6432 failed: SSL error: certificate verify failed'
    )


def test_without_a_dsn_the_text_is_unchanged() -> None:
    """Callers without a DSN get the former message."""
    exc = psycopg.OperationalError("boom\n  again")
    assert str(source_error("warm query failed", exc)) == "warm query failed: boom again"


def test_password_in_the_error_text_is_redacted() -> None:
    """Whatever the driver echoes, a password never survives."""
    exc = psycopg.ProgrammingError("invalid dsn: postgresql://app:hunter2@db/app")
    text = str(source_error("cannot connect to PostgreSQL", exc, "host=db password=hunter2"))
    assert "hunter2" not in text
    assert text.startswith("cannot connect to PostgreSQL (db:5432): invalid dsn:")
