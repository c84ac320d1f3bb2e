"""The daemon in process with a discovered pool (``discover``, a fake SRV resolver): nodes
joining and leaving, the grace period of old owners, and lookups that fail."""

from __future__ import annotations

import time
from typing import Any

from invalidator.runtime.discovery import DiscoveryError, Member
from tests.fakes import (
    A,
    B,
    C,
    Harness,
    InProcessDaemon,
    ids_on,
    make_config,
    owner,
    updated,
    wait_until,
)

SRV = "_memcached._tcp.memcached.caching.svc.cluster.local"


class Dns:
    """The SRV answer, changed by the test."""

    def __init__(self, *names: str):
        self.names = list(names)
        self.addresses: dict[str, tuple[str, int]] = {}  # default: the name's host
        self.failure: str | None = None
        self.lookups = 0

    def __call__(self, srv: str, nameservers: tuple[str, ...] | None) -> list[Member]:
        assert srv == SRV
        self.lookups += 1
        if self.failure is not None:
            raise DiscoveryError(f"discover {srv}: {self.failure}")
        return sorted(
            Member(n, self.addresses.get(n, (n.rpartition(":")[0], 11211))) for n in self.names
        )


def discovered(**discover: Any) -> Any:
    return make_config(servers=(), discover={"srv": SRV, **discover})


def confirmed(harness: Harness, position: int) -> None:
    wait_until(lambda: harness.source.confirmed >= position, f"position {position:#x} confirmed")


def membership(daemon: InProcessDaemon, *names: str) -> None:
    wait_until(
        lambda: any(e["nodes"] == sorted(names) for e in daemon.log.events("pool membership")),
        f"membership {sorted(names)}",
    )


def moving_key() -> tuple[str, str]:
    """A key owned by C among A, B, C, and the node that owns it among A, B."""
    key = f"user:{ids_on(C)[0]}"
    return key, owner(key, (A, B))


def test_discovered_nodes_own_keys_as_the_apps_place_them(harness: Harness) -> None:
    """Keys of a discovered pool go to the owner among the SRV answer's nodes only."""
    dns = Dns(A, B, C)
    harness.start(discovered(every="0.1s"), resolver=dns)
    ids = range(1, 31)
    confirmed(harness, harness.source.commit([updated(i) for i in ids]))
    for name, node in harness.memcached.nodes.items():
        assert set(node.deleted()) == {f"user:{i}" for i in ids if owner(f"user:{i}") == name}


def test_node_joining_moves_keys_and_old_owners_keep_getting_deletes_during_grace(
    harness: Harness,
) -> None:
    """A new member takes over its keys at once; for the grace period the previous owner
    gets each of their deletes too (apps whose discovery lags still read there)."""
    dns = Dns(A, B)
    daemon = harness.start(discovered(every="0.1s", grace="60s"), resolver=dns)
    key, previous = moving_key()
    user = int(key.split(":")[1])
    membership(daemon, A, B)
    confirmed(harness, harness.source.commit([updated(user)]))
    assert harness.memcached[previous].deleted() == [key]
    dns.names.append(C)
    membership(daemon, A, B, C)
    (change,) = [e for e in daemon.log.events("pool membership") if e["previous"]]
    assert change["previous"] == [A, B] and change["grace_seconds"] == 60
    confirmed(harness, harness.source.commit([updated(user)]))
    assert harness.memcached[C].deleted() == [key]
    assert harness.memcached[previous].deleted() == [key, key]


def test_second_change_during_grace_keeps_the_latest_previous_owner() -> None:
    """A membership change during a grace period starts a new one whose old owners are
    those of the placement just replaced, not of the one before it."""
    d = "mc-d:11211"
    with Harness((A, B, C, d)) as harness:
        key = next(
            f"user:{i}"
            for i in range(1, 1000)
            if owner(f"user:{i}", (A, B, C, d)) == d and owner(f"user:{i}", (A, B, C)) == C
        )
        first = owner(key, (A, B))
        dns = Dns(A, B)
        daemon = harness.start(discovered(every="0.1s", grace="60s"), resolver=dns)
        membership(daemon, A, B)
        dns.names.append(C)
        membership(daemon, A, B, C)
        dns.names.append(d)
        membership(daemon, A, B, C, d)
        user = int(key.split(":")[1])
        confirmed(harness, harness.source.commit([updated(user)]))
        assert harness.memcached[d].deleted() == [key]
        assert harness.memcached[C].deleted() == [key]
        assert harness.memcached[first].deleted() == []


def test_old_owner_stops_getting_deletes_once_grace_has_expired(harness: Harness) -> None:
    """After the grace period only the new owner gets a moved key's deletes."""
    dns = Dns(A, B)
    daemon = harness.start(discovered(every="0.1s", grace="0.3s"), resolver=dns)
    key, previous = moving_key()
    user = int(key.split(":")[1])
    membership(daemon, A, B)
    dns.names.append(C)
    membership(daemon, A, B, C)

    def new_owner_only() -> bool:
        before = len(harness.memcached[previous].deleted())
        confirmed(harness, harness.source.commit([updated(user)]))
        return len(harness.memcached[previous].deleted()) == before

    wait_until(new_owner_only, "a delete of the moved key reaching the new owner only")
    assert new_owner_only()
    assert harness.memcached[C].deleted()[-2:] == [key, key]


def test_grace_ends_when_it_expires_not_at_the_next_lookup(harness: Harness) -> None:
    """With lookups every 60 s, a 0.3 s grace period still ends after 0.3 s."""
    dns = Dns(A, B)
    daemon = harness.start(discovered(every="60s", grace="0.3s"), resolver=dns)
    key, previous = moving_key()
    user = int(key.split(":")[1])
    membership(daemon, A, B)
    dns.names.append(C)
    harness.source.fail_read("connection lost")  # a new session looks the pool up again
    membership(daemon, A, B, C)
    wait_until(lambda: daemon.metric("up") == 1, "streaming again")
    time.sleep(0.6)  # the grace period is over
    before = len(harness.memcached[previous].deleted())
    confirmed(harness, harness.source.commit([updated(user)]))
    assert harness.memcached[C].deleted() == [key]
    assert len(harness.memcached[previous].deleted()) == before


def test_node_leaving_is_removed_and_its_queued_work_dropped(harness: Harness) -> None:
    """A node gone from the SRV answer is removed; work queued for it is settled (nobody
    reads there any more), so the position is not held by a node that left."""
    dns = Dns(A, B, C)
    nodes = harness.memcached
    daemon = harness.start(discovered(every="0.1s"), resolver=dns)
    membership(daemon, A, B, C)
    nodes[C].pause()
    position = harness.source.commit([updated(ids_on(C)[0])])
    daemon.wait_metric("pending_operations", 1, node=C)
    dns.names.remove(C)
    membership(daemon, A, B)
    confirmed(harness, position)
    (removed,) = daemon.log.events("memcached node removed")
    assert removed == {"node": C, "dropped_operations": 1}
    assert nodes[C].deleted() == []
    assert C not in daemon.supervisor.nodes.channels


def test_failed_lookup_keeps_the_last_membership(harness: Harness) -> None:
    """A lookup that fails after start is logged; keys still go to the last known owners."""
    dns = Dns(A, B, C)
    daemon = harness.start(discovered(every="0.1s"), resolver=dns)
    membership(daemon, A, B, C)
    dns.failure = "SERVFAIL"
    wait_until(lambda: daemon.log.events("discovery failed; keeping the last membership"), "a log")
    user = ids_on(B)[0]
    confirmed(harness, harness.source.commit([updated(user)]))
    assert harness.memcached[B].deleted() == [f"user:{user}"]
    assert daemon.metric("up") == 1


def test_first_lookup_failing_keeps_the_daemon_from_streaming_until_it_works(
    harness: Harness,
) -> None:
    """Without any membership yet the daemon cannot place keys: not streaming, the lookup's
    error in last_error, retried with the source's backoff."""
    dns = Dns()  # no nodes yet
    daemon = harness.start(discovered(every="0.1s"), resolver=dns)
    wait_until(lambda: dns.lookups >= 2, "a retried lookup")
    assert daemon.metric("up") == 0 and harness.source.sessions == []
    assert daemon.supervisor.health.last_error == f"discover {SRV}: no nodes"
    dns.names = [A]
    wait_until(lambda: daemon.metric("up") == 1, "streaming")
    confirmed(harness, harness.source.commit([updated(1)]))
    assert harness.memcached[A].deleted() == ["user:1"]


def test_work_in_flight_to_a_moved_node_is_sent_to_its_new_address(harness: Harness) -> None:
    """A node whose address changes (a rescheduled pod, same name) gets the deletes that
    were unanswered at the old address, and only their execution confirms them."""
    dns = Dns(A, B)
    nodes = harness.memcached
    old = nodes[A]
    daemon = harness.start(discovered(every="0.1s"), resolver=dns)
    first, moved, later = (f"user:{i}" for i in ids_on(A, 3, (A, B)))
    confirmed(harness, harness.source.commit([updated(int(first.split(":")[1]))]))
    new = nodes.add(A, ("127.0.0.9", 11211))  # the new pod is up...
    old.pause()  # ...the old one is going away
    in_flight = harness.source.commit([updated(int(moved.split(":")[1]))])
    daemon.wait_metric("pending_operations", 1, node=A)
    dns.addresses[A] = new.address
    wait_until(lambda: len(daemon.log.events("pool membership")) >= 2, "the new address")
    position = harness.source.commit([updated(int(later.split(":")[1]))])
    confirmed(harness, position)
    assert moved in new.deleted()
    executed = next(c for c in new.received("delete") if c.key == moved)
    reached = harness.source.confirmed_at(in_flight)
    assert reached is not None and executed.seq < reached.seq
