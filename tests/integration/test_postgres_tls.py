"""PostgreSQL over TLS: the DSN's ``sslmode``, ``sslrootcert``, ``sslcert`` and ``sslkey``
reach libpq untouched, for the replication stream and every SQL connection.

The cluster here runs with ``ssl = on`` and accepts TCP connections only over TLS
(``hostssl``; plaintext is rejected), its certificate signed by a test CA (trustme) for
``localhost`` and ``127.0.0.1``. DSNs carry a password (trust auth accepts any): it must
never show in the log, ``/readyz``, ``/metrics`` or the CLI's output.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pymemcache.client.hash import HashClient

from tests.cache_aside import wait_gone, wait_until
from tests.conftest import running_postgres
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase, PostgresCluster

USER_RULES = [{"table": "users", "keys": ["user:{id}", "user_by_email:{email}"]}]
PASSWORD = "hunter2-tls"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[PostgresCluster]:
    """A cluster with ``ssl = on``, reachable over TLS only."""
    with running_postgres(tls=True) as cluster:
        yield cluster


@pytest.fixture
def tls_db(tls_cluster: PostgresCluster) -> Iterator[PgDatabase]:
    """``users`` (id, email, name), 100 rows, REPLICA IDENTITY FULL, in a fresh database."""
    db = tls_cluster.create_database(f"tls_{uuid.uuid4().hex[:12]}")
    db.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text)")
    db.execute("ALTER TABLE users REPLICA IDENTITY FULL")
    db.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.com', 'user ' || g"
        " FROM generate_series(1, 100) g"
    )
    try:
        yield db
    finally:
        tls_cluster.drop_database(db.name)


def tls_dsn(db: PgDatabase, **kwargs: Any) -> str:
    return db.cluster.tls_dsn(db.name, password=PASSWORD, **kwargs)


def wrong_ca(tmp_path: Path) -> Path:
    """The certificate of a CA that did not sign the server's."""
    path = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def connections(db: PgDatabase) -> list[tuple[str, bool, str | None]]:
    """(application/backend kind, ssl, client certificate DN) of every client connection to
    ``db``'s database and every walsender on its slots, other than this query's own."""
    return [
        (str(kind), bool(ssl), dn)
        for kind, ssl, dn in db.execute(
            "SELECT a.backend_type, s.ssl, s.client_dn FROM pg_stat_activity a"
            " JOIN pg_stat_ssl s ON s.pid = a.pid"
            " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
        )
    ]


def slot_active(db: PgDatabase, slot: str) -> bool:
    rows = db.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot])
    return bool(rows and rows[0][0])


def test_daemon_streams_over_verified_tls_and_invalidates(
    tmp_path: Path, tls_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """sslmode=verify-full against the test CA (host ``localhost``, as the certificate
    names it) plus a client certificate: the daemon becomes ready, a plain SQL UPDATE
    removes the row's keys, and every connection it holds, the walsender too, is TLS and
    presented the client certificate (so sslcert/sslkey were honoured, not just sslmode)."""
    cert, key = tls_db.cluster.issue_client_cert("postgres", tmp_path)
    dsn = tls_dsn(tls_db, sslcert=cert, sslkey=key)
    assert "sslmode=verify-full" in dsn and "@localhost:" in dsn
    proc = DaemonProcess.create(
        tmp_path, dsn=dsn, slot="tls", servers=memcached.servers, rules=USER_RULES
    )
    try:
        proc.start()
        keys = ["user:7", "user_by_email:u7@example.com", "user:8"]
        for key_name in keys:
            app.set(key_name, "cached")
        tls_db.execute("UPDATE users SET name = 'renamed' WHERE id = 7")
        assert wait_gone(app, keys[:2]) == []
        assert app.get("user:8") == b"cached"
        held = connections(tls_db)
        assert any(kind == "walsender" for kind, _, _ in held), held
        assert [c for c in held if not (c[1] and (c[2] or "").endswith("/CN=postgres"))] == [], held
    finally:
        proc.stop()
    assert PASSWORD not in proc.log_path.read_text()


def test_setup_status_check_work_over_tls(
    tmp_path: Path, tls_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """setup, status and check (online) over verify-full TLS, here to ``127.0.0.1`` (the
    certificate's IP address)."""
    proc = DaemonProcess.create(
        tmp_path,
        dsn=tls_dsn(tls_db, host="127.0.0.1"),
        slot="tls_admin",
        servers=memcached.servers,
        rules=USER_RULES,
    )
    setup = proc.cli("setup")
    assert (setup.returncode, setup.stdout) == (0, "slot tls_admin: created\n"), setup.stderr
    status = proc.cli("status")
    record = json.loads(status.stdout)
    assert (record["slot"], record["exists"], record["active"]) == ("tls_admin", True, False)
    check = proc.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    for result in (setup, status, check):
        assert PASSWORD not in result.stdout + result.stderr
    assert proc.cli("teardown").stdout == "slot tls_admin: dropped\n"


def test_wrong_root_certificate_is_one_clear_line_and_the_daemon_retries(
    tmp_path: Path, tls_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """sslrootcert of another CA: the log, /readyz and the CLI's stderr each say in one line
    which server (host and port) and why (certificate verify failed), the password hidden;
    the daemon keeps retrying and streams once it is given the right CA."""
    port = tls_db.cluster.port
    proc = DaemonProcess.create(
        tmp_path,
        dsn=tls_dsn(tls_db, sslrootcert=wrong_ca(tmp_path)),
        slot="tls_bad",
        servers=memcached.servers,
        rules=USER_RULES,
    )
    # The server as configured (localhost:port) and as libpq reached it (its address).
    configured, server = f"(localhost:{port})", f'server at "127.0.0.1", port {port}'

    def failures() -> list[str]:
        return [line for line in proc.log_lines() if "source unavailable" in line]

    try:
        proc.start(wait=False)
        assert wait_until(lambda: len(failures()) >= 2, timeout=30), proc.log_tail()
        proc.check_alive()  # retrying, not crashed
        logged = json.loads(failures()[0])["error"]
        assert configured in logged and server in logged, logged
        assert "certificate verify failed" in logged
        assert "\n" not in logged
        readyz = proc.get("/readyz")
        assert readyz[0] == 503 and configured in readyz[1] and server in readyz[1], readyz
        assert "certificate verify failed" in readyz[1]
        assert readyz[1].count("\n") == 1  # one line
        cli = proc.cli("status")
        assert cli.returncode == 1 and cli.stdout == ""
        assert len(cli.stderr.splitlines()) == 1, cli.stderr
        assert configured in cli.stderr and server in cli.stderr, cli.stderr
        assert "certificate verify failed" in cli.stderr
        outputs = [proc.log_path.read_text(), readyz[1], cli.stderr, proc.get("/metrics")[1]]
        assert [o for o in outputs if PASSWORD in o] == []
    finally:
        proc.stop()
    # The same daemon, the right CA: it streams (the failure was the certificate alone).
    good = DaemonProcess.create(
        tmp_path,
        name="good",
        dsn=tls_dsn(tls_db),
        slot="tls_bad",
        servers=memcached.servers,
        rules=USER_RULES,
    )
    try:
        good.start()
        assert slot_active(tls_db, "tls_bad")
    finally:
        good.stop()


def test_plaintext_is_refused_by_this_cluster(tls_db: PgDatabase, tmp_path: Path) -> None:
    """The harness's guarantee the tests above rely on: sslmode=disable cannot connect, so a
    daemon that streams here streamed over TLS."""
    proc = DaemonProcess.create(
        tmp_path,
        dsn=tls_db.cluster.dsn(tls_db.name, password=PASSWORD, sslmode="disable"),
        slot="tls_plain",
        servers=["127.0.0.1:1"],
        rules=USER_RULES,
    )
    status = proc.cli("status")
    assert status.returncode == 1
    assert "no encryption" in status.stderr and PASSWORD not in status.stderr


def test_endpoints_and_log_carry_no_secret_dsn_or_key_material(
    tmp_path: Path, tls_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """A password DSN with sslrootcert, sslcert and sslkey: /metrics, /readyz and the log
    (while streaming and after a failure) contain neither the password, the DSN, nor the
    key's or certificates' content."""
    cert, key = tls_db.cluster.issue_client_cert("postgres", tmp_path)
    dsn = tls_dsn(tls_db, sslcert=cert, sslkey=key)
    proc = DaemonProcess.create(
        tmp_path, dsn=dsn, slot="tls_secret", servers=memcached.servers, rules=USER_RULES
    )
    try:
        proc.start()
        app.set("user:3", "cached")
        tls_db.execute("UPDATE users SET name = 'z' WHERE id = 3")
        assert wait_gone(app, ["user:3"]) == []
        outputs = [proc.get("/metrics")[1], proc.get("/readyz")[1]]
        # A failure too: the server cuts the replication connection, the error is reported.
        tls_db.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE slot_name = 'tls_secret'"
        )
        assert wait_until(lambda: "source unavailable" in proc.log_path.read_text(), 30)
        outputs.append(proc.get("/readyz")[1])
        proc.wait_ready(timeout=30)
        outputs += [proc.get("/metrics")[1], proc.log_path.read_text()]
    finally:
        proc.stop()
    outputs.append(proc.log_path.read_text())
    secrets = {"password": PASSWORD, "dsn": dsn}
    for name, path in {"key": key, "cert": cert, "ca": tls_db.cluster.ca_file}.items():
        body = [line for line in path.read_text().splitlines() if "-----" not in line]
        secrets |= {f"{name} content": "\n".join(body), f"{name} line": body[len(body) // 2]}
    leaks = {name for name, secret in secrets.items() for text in outputs if secret in text}
    assert leaks == set()
