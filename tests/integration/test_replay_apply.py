"""`invalidator replay --apply` against real memcached nodes, judged by the app's HashClient."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from invalidator.config import load_yaml
from tests.cache_aside import NodeCopies, owner_of
from tests.services import MemcachedPool, free_port

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def write_config(tmp_path: Path, servers: list[str]) -> Path:
    rules = load_yaml((FIXTURES / "rules.yaml").read_text())
    rules["pools"]["default"]["servers"] = servers
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def run_replay(config: Path, *files: str, apply: bool = True) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "invalidator", "replay", "--config", str(config), *files]
    return subprocess.run(
        args + (["--apply"] if apply else []),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def nodes(memcached: MemcachedPool) -> Iterator[dict[str, Client]]:
    """One direct client per node, to see exactly where copies live."""
    clients = {s: Client(s, no_delay=True, connect_timeout=2, timeout=2) for s in memcached.servers}
    yield clients
    for client in clients.values():
        client.close()


BASIC_USERS_KEYS = {
    "user:1",
    "user:2",
    "user:3",
    "user_by_email:alice@example.com",
    "user_by_email:bob@example.com",
    "user_by_email:carol@example.com",
    "user_by_email:robert@example.com",
}  # what basic_users.jsonl's rows make with rules.yaml (bob became robert)


def test_apply_removes_exactly_the_planned_keys(
    tmp_path: Path, memcached: MemcachedPool, app: HashClient
) -> None:
    """Planned keys - the fixture's, not merely whatever replay planned - vanish for the
    app; unrelated keys stay. With copies on every node: each planned key leaves its owner
    (per pymemcache's HashClient) only."""
    config = write_config(tmp_path, memcached.servers)
    planned = {
        json.loads(line)["key"]
        for line in run_replay(
            config, str(FIXTURES / "basic_users.jsonl"), apply=False
        ).stdout.splitlines()
    }
    assert planned == BASIC_USERS_KEYS
    unrelated = [f"user:{i}" for i in range(100, 150)] + ["user_by_email:zed@example.com"]
    for key in sorted(planned) + unrelated:
        app.set(key, b"cached", noreply=False)

    with NodeCopies(memcached.servers) as copies:
        copies.plant(sorted(planned) + unrelated)
        result = run_replay(config, str(FIXTURES / "basic_users.jsonl"))

        assert result.returncode == 0, result.stderr
        assert {k for k in planned if app.get(k) is not None} == set()
        assert [k for k in unrelated if app.get(k) != b"cached"] == []
        assert copies.misplaced(sorted(planned), unrelated) == {}


def test_apply_deletes_on_the_owning_node_only(
    tmp_path: Path, memcached: MemcachedPool, nodes: dict[str, Client]
) -> None:
    """A copy of a key on a node that does not own it is left alone: placement is exact.
    The owner is pymemcache's HashClient's choice; replay's planned node must equal it."""
    config = write_config(tmp_path, memcached.servers)
    records = [
        json.loads(line)
        for line in run_replay(
            config, str(FIXTURES / "replica_identity.jsonl"), apply=False
        ).stdout.splitlines()
    ]
    assert len(records) > 10
    owners = {r["key"]: owner_of(memcached.servers, r["key"]) for r in records}
    assert [r for r in records if r["node"] != owners[r["key"]]] == []
    assert len(set(owners.values())) > 1  # keys on several nodes: wrong ones are seen
    for record in records:
        for client in nodes.values():
            client.set(record["key"], b"v", noreply=False)

    assert run_replay(config, str(FIXTURES / "replica_identity.jsonl")).returncode == 0

    for record in records:
        present = {server for server, c in nodes.items() if c.get(record["key"]) is not None}
        assert present == set(memcached.servers) - {owners[record["key"]]}, record["key"]


def test_apply_handles_a_thousand_row_transaction(
    tmp_path: Path, memcached: MemcachedPool, app: HashClient
) -> None:
    """All 1,000 keys of the bulk update are removed (pipelined per node)."""
    config = write_config(tmp_path, memcached.servers)
    app.set_many({f"item:{i}": b"x" for i in range(1, 1001)}, noreply=False)

    result = run_replay(config, str(FIXTURES / "bulk.jsonl"))

    assert result.returncode == 0, result.stderr
    assert app.get_many([f"item:{i}" for i in range(1, 1001)]) == {}


def test_unreachable_node_fails_loudly_and_spares_the_others(
    tmp_path: Path, memcached: MemcachedPool, nodes: dict[str, Client]
) -> None:
    """A dead node: exit 1 naming it; keys owned by live nodes are still removed."""
    dead = f"127.0.0.1:{free_port()}"
    servers = [*memcached.servers, dead]
    config = write_config(tmp_path, servers)
    records = [
        json.loads(line)
        for line in run_replay(
            config, str(FIXTURES / "bulk.jsonl"), apply=False
        ).stdout.splitlines()
    ]
    owners = {r["key"]: owner_of(servers, r["key"]) for r in records}
    assert [r for r in records if r["node"] != owners[r["key"]]] == []
    assert dead in owners.values()
    live = [r["key"] for r in records if owners[r["key"]] != dead]
    for key in live:
        nodes[owners[key]].set(key, b"x", noreply=False)

    result = run_replay(config, str(FIXTURES / "bulk.jsonl"))

    assert result.returncode == 1
    assert f"replay: memcached node {dead}: cannot connect" in result.stderr
    assert live and [k for k in live if nodes[owners[k]].get(k) is not None] == []
