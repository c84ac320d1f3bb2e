"""`pools.NAME.tls` end to end: the daemon against memcached ``-Z`` nodes, the apps' own
``HashClient(tls_context=...)``, and SQL writes behind their back. Refusals (wrong CA,
wrong host, plaintext node, client certificate missing) are the node's error with a clear
reason, never a plaintext fallback and never a position confirmed past the work."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.hash import HashClient

from tests.cache_aside import NodeCopies, app_client, get_user, wait_gone, wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedNode, MemcachedPool, PgDatabase, ServiceError, TlsFiles

USER_RULES = [{"table": "users", "keys": ["user:{id}"]}]


@pytest.fixture(scope="module")
def tls_files() -> Iterator[TlsFiles]:
    try:
        files = TlsFiles()
    except ServiceError as err:
        pytest.fail(str(err), pytrace=False)
    yield files
    files.cleanup()


@pytest.fixture(scope="module")
def tls_pool_started(tls_files: TlsFiles) -> Iterator[MemcachedPool]:
    pool = MemcachedPool(3, tls=tls_files)
    try:
        pool.start()
    except ServiceError as err:
        pytest.fail(f"memcached -Z did not start: {err}", pytrace=False)
    yield pool
    pool.stop()


@pytest.fixture
def tls_pool(tls_pool_started: MemcachedPool) -> MemcachedPool:
    try:
        tls_pool_started.reset()
    except ServiceError as err:
        pytest.fail(str(err), pytrace=False)
    return tls_pool_started


def tls_app(servers: list[str], files: TlsFiles, **options: Any) -> HashClient:
    return app_client(servers, tls_context=files.client_context(), **options)


def start_node(node: MemcachedNode) -> MemcachedNode:
    try:
        return node.start()
    except ServiceError as err:
        pytest.fail(f"memcached did not start: {err}", pytrace=False)


def daemon_for(
    tmp_path: Path, db: PgDatabase, servers: list[str], tls: dict[str, Any], name: str = "daemon"
) -> DaemonProcess:
    return DaemonProcess.create(
        tmp_path,
        name,
        dsn=db.dsn,
        slot=f"tls_{name}",
        servers=servers,
        rules=USER_RULES,
        pool={"tls": tls},
    )


def end_lsn(db: PgDatabase) -> str:
    return str(db.execute("SELECT pg_current_wal_lsn()::text")[0][0])


def confirmed_at_least(db: PgDatabase, slot: str, lsn: str) -> bool:
    rows = db.execute(
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (lsn, slot),
    )
    return bool(rows and rows[0][0])


def error_lines(daemon: DaemonProcess) -> list[str]:
    return [line for line in daemon.log_lines() if "memcached node error" in line]


class RecordingListener:
    """A TCP server that records every byte each connection sends and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.received: list[bytearray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def server(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        conns: list[tuple[socket.socket, bytearray]] = []
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.sock.accept()
                conn.settimeout(0.01)
                buf = bytearray()
                self.received.append(buf)
                conns.append((conn, buf))
            for conn, buf in conns:
                with contextlib.suppress(TimeoutError, OSError):
                    buf += conn.recv(65536)
        for conn, _ in conns:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# ----------------------------------------------------------------------------- it works


def test_tls_pool_invalidates_the_owner_and_apps_read_fresh_rows(
    tmp_path: Path, users_db: PgDatabase, tls_pool: MemcachedPool, tls_files: TlsFiles
) -> None:
    """Three -Z nodes, apps on HashClient(tls_context): after UPDATEs behind their back the
    apps read the new rows; each key left its owner only (copies on every node stay);
    no node error; the slot is confirmed past the work; `check` says every node answers."""
    daemon = daemon_for(tmp_path, users_db, tls_pool.servers, tls_files.pool_tls())
    app = tls_app(tls_pool.servers, tls_files)
    try:
        with NodeCopies(tls_pool.servers, tls_context=tls_files.client_context()) as copies:
            daemon.start()
            ids = list(range(1, 41))
            for i in ids:
                get_user(app, users_db, i)
            copies.plant([f"user:{i}" for i in range(41, 61)])
            users_db.execute("UPDATE users SET name = 'tls ' || id WHERE id <= 40")
            lsn = end_lsn(users_db)
            assert wait_gone(app, [f"user:{i}" for i in ids]) == []
            for i in ids:
                assert get_user(app, users_db, i) == {
                    "id": i,
                    "email": f"u{i}@example.com",
                    "name": f"tls {i}",
                }
            # Precision: a key on every node, changed: gone from its owner only.
            users_db.execute("UPDATE users SET name = name WHERE id BETWEEN 41 AND 50")
            copies.assert_exact(
                [f"user:{i}" for i in range(41, 51)], [f"user:{i}" for i in range(51, 61)]
            )
            assert wait_until(lambda: confirmed_at_least(users_db, "tls_daemon", lsn), 10)
            assert daemon.metric("invalidator_memcached_errors_total") == 0, daemon.log_tail()
        check = daemon.cli("check")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        app.close()
        daemon.stop()


def test_replay_apply_deletes_over_tls(
    tmp_path: Path, users_db: PgDatabase, tls_pool: MemcachedPool, tls_files: TlsFiles
) -> None:
    """The commands' blocking client (`replay --apply`) uses the pool's TLS connector."""
    daemon = daemon_for(tmp_path, users_db, tls_pool.servers, tls_files.pool_tls())
    app = tls_app(tls_pool.servers, tls_files)
    fixture = tmp_path / "changes.jsonl"
    fixture.write_text(
        '{"action":"U","schema":"public","table":"users",'
        '"columns":[{"name":"id","type":"integer","value":7}]}\n'
    )
    try:
        app.set("user:7", "cached")
        done = daemon.cli("replay", str(fixture), "--apply")
        assert done.returncode == 0, done.stdout + done.stderr
        assert app.get("user:7") is None
    finally:
        app.close()


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_host", "plaintext_node", "silent_listener"])
def test_a_node_that_fails_tls_is_refused_never_sent_clear_text_and_holds_the_position(
    case: str,
    tmp_path: Path,
    users_db: PgDatabase,
    tls_pool: MemcachedPool,
    tls_files: TlsFiles,
) -> None:
    """One bad node in a one-node TLS pool: its error is logged with the reason and counted
    in memcached_errors_total; the slot is not confirmed past the change meant for it; the
    node never sees a plaintext `delete`. For the wrong CA, writing the right CA bundle
    over the configured file is then picked up (rotation) and the work is delivered."""
    node: MemcachedNode | None = None
    listener: RecordingListener | None = None
    tls = tls_files.pool_tls()
    other = None
    if case == "wrong_ca":
        other = TlsFiles()
        wrong_ca = tmp_path / "wrong-ca.pem"
        wrong_ca.write_bytes(other.ca_file.read_bytes())
        tls["ca_file"] = str(wrong_ca)
        server = tls_pool.servers[0]
        reason = "TLS handshake failed: certificate verify failed: unable to get local issuer"
    elif case == "wrong_host":
        tls["server_name"] = "cache.wrong.example"
        server = tls_pool.servers[0]
        reason = "TLS handshake failed: certificate verify failed: Hostname mismatch"
    elif case == "plaintext_node":
        node = start_node(MemcachedNode(args=["-vv"]))
        server = node.server
        reason = "TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number"
    else:
        listener = RecordingListener()
        server = listener.server
        reason = "no reply for 2s (connecting)"
    daemon = daemon_for(tmp_path, users_db, [server], tls, name=case)
    app = tls_app([tls_pool.servers[0]], tls_files)  # the daemon's one node, when TLS
    try:
        daemon.start()
        if case in ("wrong_ca", "wrong_host"):
            app.set("user:5", "cached")  # on the only node of the daemon's pool
        users_db.execute("UPDATE users SET name = 'refused' WHERE id = 5")
        lsn = end_lsn(users_db)
        assert wait_until(
            lambda: any(reason in line for line in error_lines(daemon)), timeout=15
        ), daemon.log_tail()
        assert daemon.metric("invalidator_memcached_errors_total", node=server) >= 1
        time.sleep(1.0)  # the daemon had every chance to confirm
        assert not confirmed_at_least(users_db, f"tls_{case}", lsn)
        if case in ("wrong_ca", "wrong_host"):
            assert app.get("user:5") == b"cached"  # not deleted: never reached the node
        if node is not None:
            assert "delete" not in node.output(), node.output()
            assert "\\x16\\x03" in repr(node.output())  # it saw a TLS ClientHello
        if listener is not None:
            assert listener.received, "the daemon never connected"
            for data in listener.received:
                assert data[:1] == b"\x16" and data[1:2] == b"\x03", bytes(data[:16])
                assert b"delete" not in data and b"stats" not in data
        check = daemon.cli("check")
        assert check.returncode == 1
        assert f"memcached node {server}" in check.stdout, check.stdout
        if case != "silent_listener":
            assert reason in check.stdout, check.stdout
        if case == "wrong_ca":
            # Rotation: the right bundle written over the configured file is picked up.
            Path(tls["ca_file"]).write_bytes(tls_files.ca_file.read_bytes())
            assert wait_gone(app, ["user:5"], timeout=15) == [], daemon.log_tail()
            assert wait_until(lambda: confirmed_at_least(users_db, "tls_wrong_ca", lsn), 15)
            assert any("tls certificates reloaded" in line for line in daemon.log_lines())
    finally:
        app.close()
        daemon.stop()
        if node is not None:
            node.stop()
        if listener is not None:
            listener.close()
        if other is not None:
            other.cleanup()


# ----------------------------------------------------------------------------- client certs


def test_a_node_requiring_client_certificates_works_with_cert_file_and_refuses_without(
    tmp_path: Path, users_db: PgDatabase
) -> None:
    """ssl_verify_mode=2: with cert_file/key_file the key is deleted; without, the node's
    refusal is logged and counted and the key stays."""
    files = TlsFiles(require_client_cert=True)
    pool = MemcachedPool(1, tls=files)
    try:
        pool.start()
    except ServiceError as err:
        files.cleanup()
        pytest.fail(f"memcached -Z with ssl_verify_mode=2 did not start: {err}", pytrace=False)
    app = tls_app(pool.servers, files)
    good = daemon_for(tmp_path, users_db, pool.servers, files.pool_tls(), name="withcert")
    bad = daemon_for(
        tmp_path, users_db, pool.servers, files.pool_tls(client_cert=False), name="nocert"
    )
    try:
        bad.start()
        app.set("user:9", "cached")
        users_db.execute("UPDATE users SET name = 'x' WHERE id = 9")
        assert wait_until(lambda: error_lines(bad), timeout=15), bad.log_tail()
        assert bad.metric("invalidator_memcached_errors_total") >= 1
        assert any("certificate required" in line for line in error_lines(bad)), bad.log_tail()
        assert app.get("user:9") == b"cached"
        bad.stop()
        good.start()  # its own slot starts now: change the row again
        users_db.execute("UPDATE users SET name = 'y' WHERE id = 9")
        assert wait_gone(app, ["user:9"]) == [], good.log_tail()
        assert good.metric("invalidator_memcached_errors_total") == 0
    finally:
        app.close()
        good.stop()
        bad.stop()
        pool.stop()
        files.cleanup()


# ----------------------------------------------------------------------------- rotation


def test_certificates_rotated_while_streaming_are_picked_up_with_nothing_lost(
    tmp_path: Path, users_db: PgDatabase
) -> None:
    """New CA, certificates and keys are written over the mounted files while rows keep
    changing. Open connections keep working (the nodes still have the old certificate);
    each node is then restarted with the new certificate: the daemon reconnects with the
    re-read files, and every change made after that is invalidated; the slot catches up."""
    files = TlsFiles()
    pool = MemcachedPool(3, tls=files)
    try:
        pool.start()
    except ServiceError as err:
        files.cleanup()
        pytest.fail(f"memcached -Z did not start: {err}", pytrace=False)
    daemon = daemon_for(tmp_path, users_db, pool.servers, files.pool_tls(), name="rotate")
    app = tls_app(pool.servers, files)
    try:
        daemon.start()
        for i in range(1, 31):
            get_user(app, users_db, i)
        users_db.execute("UPDATE users SET name = 'before' WHERE id <= 30")
        assert wait_gone(app, [f"user:{i}" for i in range(1, 31)]) == []

        files.rotate()  # the Secret changes; the nodes still serve the old certificate
        for i in range(31, 61):
            get_user(app, users_db, i)
        users_db.execute("UPDATE users SET name = 'rotated files' WHERE id BETWEEN 31 AND 60")
        assert wait_gone(app, [f"user:{i}" for i in range(31, 61)]) == [], daemon.log_tail()
        app.close()

        for node in pool:  # the nodes load the new certificate
            node.restart()
        app = tls_app(pool.servers, files)  # apps trust the new CA
        for i in range(61, 121):
            get_user(app, users_db, i)
        users_db.execute("UPDATE users SET name = 'new cert' WHERE id BETWEEN 61 AND 120")
        lsn = end_lsn(users_db)
        assert wait_gone(app, [f"user:{i}" for i in range(61, 121)], timeout=20) == [], (
            daemon.log_tail()
        )
        assert wait_until(lambda: confirmed_at_least(users_db, "tls_rotate", lsn), 15)
        assert any("tls certificates reloaded" in line for line in daemon.log_lines())
        assert get_user(app, users_db, 99) == {
            "id": 99,
            "email": "u99@example.com",
            "name": "new cert",
        }
    finally:
        app.close()
        daemon.stop()
        pool.stop()
        files.cleanup()
