"""``http.listen: off`` (or ``INVALIDATOR_HTTP_LISTEN=off``): the daemon opens no port at
all and still streams; readiness is seen from PostgreSQL (the slot becomes active) and the
cache (keys invalidated)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.hash import HashClient

from tests.cache_aside import wait_gone, wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

USER_RULES = [{"table": "users", "keys": ["user:{id}"]}]


def listening_ports(pid: int) -> list[int]:
    """TCP ports the process (any thread) listens on, from its sockets' inodes and the
    kernel's tables of listening sockets (state 0A) in the process's network namespace."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def slot_active(db: PgDatabase, slot: str) -> bool:
    rows = db.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot])
    return bool(rows and rows[0][0])


@pytest.fixture(params=["file", "env"])
def daemon_without_http(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    users_db: PgDatabase,
    memcached: MemcachedPool,
) -> Iterator[DaemonProcess]:
    """A daemon whose HTTP server is off by its config file or by the environment."""
    proc = DaemonProcess.create(
        tmp_path, dsn=users_db.dsn, slot="nohttp", servers=memcached.servers, rules=USER_RULES
    )
    if request.param == "file":
        config = json.loads(proc.config.read_text())
        config["http"] = {"listen": "off"}
        proc.config.write_text(json.dumps(config))
    else:
        proc.env["INVALIDATOR_HTTP_LISTEN"] = "off"
    yield proc
    proc.stop()


def test_http_off_opens_no_port_and_still_streams(
    daemon_without_http: DaemonProcess, users_db: PgDatabase, app: HashClient
) -> None:
    """No listening socket in the daemon; it streams (slot active) and invalidates."""
    proc = daemon_without_http
    proc.start(wait=False)
    assert wait_until(lambda: slot_active(users_db, "nohttp"), timeout=30), proc.log_tail()
    proc.check_alive()
    assert listening_ports(proc.pid) == []
    assert not proc.ready()  # nothing answers on the port the file would have used
    app.set("user:5", "cached")
    users_db.execute("UPDATE users SET name = 'q' WHERE id = 5")
    assert wait_gone(app, ["user:5"]) == []
    proc.check_alive()
    starting = [json.loads(line) for line in proc.log_lines() if '"starting"' in line]
    assert starting and starting[0]["http"] == "off"


def test_http_on_listens_on_the_configured_port_only(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """The contrast that makes the test above meaningful: with a loopback listen address
    the same probe finds exactly that port."""
    proc = DaemonProcess.create(
        tmp_path, dsn=users_db.dsn, slot="withhttp", servers=memcached.servers, rules=USER_RULES
    )
    try:
        proc.start()
        assert listening_ports(proc.pid) == [proc.port]
    finally:
        proc.stop()
