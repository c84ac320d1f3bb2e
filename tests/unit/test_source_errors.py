"""PostgreSQL errors as the daemon reports them: one line, the server named, no secret."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from invalidator.errors import SourceError
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


# -- the DSN reaches libpq untouched --------------------------------------------------------

TLS_PARAMS = {
    "sslmode": "verify-full",
    "sslrootcert": "/etc/invalidator/pg-ca/ca.crt",
    "sslcert": "/etc/invalidator/pg-client/tls.crt",
    "sslkey": "/etc/invalidator/pg-client/tls.key",
}


def connectors() -> dict[str, Any]:
    """Each place that opens a PostgreSQL connection, as a call on a DSN."""
    from invalidator.sources import notify
    from invalidator.sources.catalog import Admin
    from invalidator.sources.postgres import ReplicationStream, ValueQueries, WalPosition

    return {
        "replication": lambda dsn: ReplicationStream(dsn, "slot", {}).open(),
        "admin": lambda dsn: Admin(dsn).wal_level(),
        "wal position": lambda dsn: WalPosition(dsn).current(),
        "value queries": lambda dsn: ValueQueries(dsn).value("SELECT 1", {}),
        "notify": notify.connect,
        "warm": warm_with,
    }


def warm_with(dsn: str) -> None:
    from invalidator.commands.warm import warm
    from invalidator.config import parse_config

    config = parse_config(
        {
            "source": {"dsn": dsn},
            "pools": {"default": {"servers": ["127.0.0.1:1"]}},
            "rules": [{"table": "users", "keys": ["user:{id}"]}],
            "warm": [{"query": "SELECT 1 AS id", "key": "user:{id}", "value": {"json": ["id"]}}],
        },
        "test",
    )
    warm(config, progress=lambda _: None)


@pytest.mark.parametrize("name", list(connectors()))
def test_every_connection_passes_the_dsns_tls_settings_to_libpq(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replication, admin, WAL position, refresh values, notify and warm hand libpq the DSN
    as given: sslmode, sslrootcert, sslcert and sslkey arrive unchanged (nothing strips or
    overrides them), in both DSN forms; the failure names the server, not the password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    seen: list[dict[str, Any]] = []

    def fake_connect(conninfo: str = "", **kwargs: Any) -> Any:
        # What psycopg hands libpq: the DSN merged with the keyword arguments that are
        # connection parameters (autocommit, row_factory, ... are psycopg's own).
        libpq = {k: v for k, v in kwargs.items() if k not in ("autocommit", "row_factory")}
        seen.append(conninfo_to_dict(make_conninfo(conninfo, **libpq)))
        raise psycopg.OperationalError("no server in a unit test")

    monkeypatch.setattr(psycopg, "connect", fake_connect)
    url = "postgresql://app:hunter2@db.example:6432/app?" + "&".join(
        f"{k}={v}" for k, v in TLS_PARAMS.items()
    )
    keywords = "host=db.example port=6432 user=app password=hunter2 " + " ".join(
        f"{k}={v}" for k, v in TLS_PARAMS.items()
    )
    for dsn in (url, keywords):
        with pytest.raises(SourceError) as info:
            connectors()[name](dsn)
        assert "db.example:6432" in str(info.value) and "hunter2" not in str(info.value)
    assert len(seen) == 2
    for params in seen:
        assert {k: params.get(k) for k in TLS_PARAMS} == TLS_PARAMS
        assert params["host"] == "db.example" and params["password"] == "hunter2"
