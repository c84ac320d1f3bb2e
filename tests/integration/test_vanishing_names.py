"""A node name that does not resolve (a StatefulSet pod being rescheduled, or a typo in
MEMCACHED_SERVERS): the daemon neither exits nor slows the other nodes down, and that
node's keys are deleted once its name resolves again.

The daemon runs with tests/shims on PYTHONPATH: its ``getaddrinfo`` reads names from a
file the test writes (``PGCI_HOSTS_FILE``), so the name can appear mid-test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pymemcache.client.base import Client

from invalidator.core.placement import Rendezvous
from tests.cache_aside import wait_until
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase

SHIMS = Path(__file__).resolve().parent.parent / "shims"
VANISHING = "memcached-2.memcached.invalid"
ROWS = range(1, 301)


@contextlib.contextmanager
def direct_clients(pool: MemcachedPool) -> Iterator[list[Client]]:
    clients = [
        Client(("127.0.0.1", node.port), no_delay=True, default_noreply=False, timeout=2)
        for node in pool.nodes
    ]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def test_an_unresolvable_node_holds_up_only_its_own_keys_until_it_resolves(
    tmp_path: Path, users_db: PgDatabase, memcached: MemcachedPool
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    ports = [node.port for node in memcached.nodes]
    servers = [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", f"{VANISHING}:{ports[2]}"]
    placement = Rendezvous(servers)
    proc = DaemonProcess.create(
        tmp_path,
        dsn=users_db.dsn,
        slot="vanishing",
        servers=servers,
        rules=[{"table": "users", "keys": ["user:{id}"]}],
    )
    proc.env = {"PYTHONPATH": str(SHIMS), "PGCI_HOSTS_FILE": str(hosts)}
    with direct_clients(memcached) as clients, proc.start():
        owner = {i: servers.index(placement.owner(f"user:{i}")) for i in ROWS}
        for i in ROWS:
            clients[owner[i]].set(f"user:{i}", b"cached")
        users_db.execute(f"UPDATE users SET name = 'new' WHERE id <= {ROWS[-1]}")

        def left(on: set[int]) -> list[int]:
            return [i for i in ROWS if owner[i] in on and clients[owner[i]].get(f"user:{i}")]

        assert sum(1 for i in ROWS if owner[i] == 2) > 0
        assert wait_until(lambda: not left({0, 1}), timeout=10), left({0, 1})[:5]
        assert proc.running
        assert len(left({2})) == sum(1 for i in ROWS if owner[i] == 2)  # not reachable yet
        assert wait_until(
            lambda: (
                proc.metric("invalidator_memcached_errors_total", node=f"{VANISHING}:{ports[2]}")
                > 0
            ),
            timeout=10,
        )
        # The pod is back: its name resolves again, and its keys are deleted.
        hosts.write_text(f"{VANISHING} 127.0.0.1\n")
        assert wait_until(lambda: not left({2}), timeout=30), left({2})[:5]
        assert proc.running
