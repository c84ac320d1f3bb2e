"""The daemon in process: each change's keys reach exactly their owner node, and the
confirmed position never passes work memcached has not acknowledged (at-least-once),
whatever the nodes do: pause, refuse, restart, overflow, answer errors."""

from __future__ import annotations

import time

from invalidator.sinks.memcached.channel import BACKOFF_MIN
from tests.fakes import (
    A,
    B,
    C,
    Harness,
    MemorySession,
    ids_on,
    make_config,
    owner,
    updated,
    wait_until,
)


def session_of(harness: Harness) -> MemorySession:
    wait_until(lambda: harness.source.sessions, "a session")
    return harness.source.sessions[-1]


def confirmed(harness: Harness, position: int, what: str = "") -> None:
    wait_until(
        lambda: harness.source.confirmed >= position,
        what or f"the confirmed position to reach {position:#x}",
    )


def turns_pass(session: MemorySession, turns: int = 3) -> None:
    """Let the loop run a few more turns (each one acknowledges what it can)."""
    start = session.turns
    wait_until(lambda: session.turns >= start + turns, f"{turns} more loop turns")


def test_each_key_is_deleted_on_its_owner_node_only(harness: Harness) -> None:
    """Every key is deleted on the node the apps' HashClient stores it on, and nowhere else."""
    ids = range(1, 41)
    for node in harness.memcached.nodes.values():  # a copy everywhere: only the owner's goes
        node.data.update({f"user:{i}": b"cached" for i in ids})
    harness.start(make_config())
    position = harness.source.commit([updated(i) for i in ids])
    confirmed(harness, position)
    for name, node in harness.memcached.nodes.items():
        owned = {f"user:{i}" for i in ids if owner(f"user:{i}") == name}
        assert owned, f"every node owns some keys ({name})"
        assert set(node.deleted()) == owned
        assert owned.isdisjoint(node.data) and len(node.data) == len(ids) - len(owned)


def test_position_never_passes_a_transaction_whose_deletes_are_unacknowledged(
    harness: Harness,
) -> None:
    """A paused owner holds the position at the last fully acknowledged transaction, even
    when newer transactions on other nodes are done; it moves once the owner answers."""
    source, nodes = harness.source, harness.memcached
    on_a, on_b = ids_on(A, 1), ids_on(B, 2)
    harness.start(make_config())
    first = source.commit([updated(on_b[0])])
    confirmed(harness, first)
    session = session_of(harness)
    nodes[A].pause()
    held = source.commit([updated(on_a[0])])
    newer = source.commit([updated(on_b[1])])
    wait_until(lambda: len(session.streamed) == 3, "both transactions streamed")
    wait_until(lambda: session.streamed[2][1].done, "the newer transaction acknowledged by B")
    turns_pass(session)
    assert source.confirmed == first
    nodes[A].resume()
    confirmed(harness, newer)
    delete = next(c for c in nodes[A].received("delete") if c.key == f"user:{on_a[0]}")
    reached = source.confirmed_at(held)
    assert reached is not None and delete.seq < reached.seq


def test_refused_node_is_retried_with_backoff_and_gets_its_work_when_back(
    harness: Harness,
) -> None:
    """A node refusing connections is retried with a growing delay, each failure counted in
    memcached_errors_total{node}; the position waits, and the work arrives once it is up."""
    source, nodes = harness.source, harness.memcached
    nodes[A].fail()
    daemon = harness.start(make_config())
    key = f"user:{ids_on(A)[0]}"
    position = source.commit([updated(ids_on(A)[0])])
    wait_until(lambda: nodes[A].refused >= 3, "three refused connection attempts")
    channel = daemon.supervisor.nodes.channels[A]
    assert channel.backoff > BACKOFF_MIN and not channel.healthy
    assert (daemon.metric("memcached_errors_total", node=A) or 0) >= 3
    assert daemon.log.events("memcached node error")[0]["reason"] == "cannot connect: ECONNREFUSED"
    turns_pass(session_of(harness))
    assert source.confirmed == 0
    nodes[A].start()
    confirmed(harness, position)
    assert nodes[A].deleted() == [key]
    assert daemon.metric("memcached_errors_total", node=B) is None


def test_restarted_node_drops_work_of_transactions_committed_before_the_restart(
    harness: Harness,
) -> None:
    """Queued deletes of transactions committed before a node restarted are dropped (its
    data is gone) and the position moves on; work committed after it is still sent."""
    source, nodes = harness.source, harness.memcached
    first, before, after = ids_on(A, 3)
    daemon = harness.start(make_config())
    confirmed(harness, source.commit([updated(first)]))  # the node's identity is known
    old_pid = nodes[A].pid
    nodes[A].fail()
    source.commit([updated(before)], commit_time=time.time() - 30)
    daemon.wait_metric("pending_operations", 1, node=A)
    nodes[A].restart()
    position = source.commit([updated(after)])
    confirmed(harness, position)
    assert nodes[A].pid != old_pid
    assert [c.key for c in nodes[A].received("delete", pid=nodes[A].pid)] == [f"user:{after}"]
    assert f"user:{before}" not in nodes[A].deleted()
    daemon.wait_metric("operations_total", 1, pool="*", op="restart_dropped", result="dropped")
    assert daemon.log.events("memcached node restarted")


def test_unreachable_node_queue_beyond_max_queue_becomes_one_flush_all(harness: Harness) -> None:
    """Past max_queue an unreachable node's queue is replaced by one flush_all; the position
    holds until that flush is acknowledged, then passes every transaction it replaced."""
    source, nodes = harness.source, harness.memcached
    nodes[A].fail()
    daemon = harness.start(make_config(servers=[A], max_queue=100))
    source.commit([updated(1000)])
    wait_until(lambda: nodes[A].refused, "the node found unreachable")
    source.commit([updated(i) for i in range(1, 151)])
    last = source.commit([updated(151)])
    wait_until(lambda: daemon.log.events("memcached node overflow flush"), "the overflow")
    turns_pass(session_of(harness))
    assert source.confirmed == 0
    nodes[A].start()
    confirmed(harness, last)
    flushes = nodes[A].received("flush_all")
    assert len(flushes) == 1
    deletes = nodes[A].received("delete")
    assert all(c.seq > flushes[0].seq for c in deletes)
    reached = source.confirmed_at(last)
    assert reached is not None and flushes[0].seq < reached.seq
    # Every operation was either replaced by the flush or sent after it.
    dropped = 152 - len(deletes)
    assert dropped > 100
    daemon.wait_metric("operations_total", dropped, pool="*", op="overflow_flush", result="dropped")
    daemon.wait_metric("operations_total", 1, pool="*", op="flush_all", result="flushed")


def test_error_reply_is_retried_and_never_dropped(harness: Harness) -> None:
    """A SERVER_ERROR reply fails the connection; the delete is sent again and only its
    success lets the position pass."""
    source, nodes = harness.source, harness.memcached
    user = ids_on(C)[0]
    nodes[C].data[f"user:{user}"] = b"cached"
    nodes[C].answer_next(b"SERVER_ERROR out of memory")
    daemon = harness.start(make_config())
    position = source.commit([updated(user)])
    confirmed(harness, position)
    assert [c.key for c in nodes[C].errored] == [f"user:{user}"]
    assert nodes[C].deleted() == [f"user:{user}"] and f"user:{user}" not in nodes[C].data
    assert daemon.metric("memcached_errors_total", node=C) == 1


def test_node_that_never_answers_is_reconnected_after_the_request_timeout(
    harness: Harness,
) -> None:
    """A paused node (accepts, never answers) fails its connection after the request
    timeout and gets the delete again on a new connection once it answers."""
    source, nodes = harness.source, harness.memcached
    user = ids_on(B)[0]
    daemon = harness.start(make_config())
    confirmed(harness, source.commit([updated(ids_on(A)[0])]))
    nodes[B].pause()
    position = source.commit([updated(user)])
    wait_until(lambda: daemon.log.events("memcached node error"), "the request timeout", timeout=15)
    assert daemon.log.events("memcached node error")[0]["reason"].startswith("no reply for")
    assert source.confirmed < position
    nodes[B].resume()
    confirmed(harness, position)
    assert f"user:{user}" in nodes[B].deleted()


def test_burst_above_max_queue_for_a_node_not_yet_connected_is_not_flushed(
    harness: Harness,
) -> None:
    """A reachable node's first work, even above max_queue in one read, is sent as deletes:
    overflow is for unreachable nodes."""
    source, nodes = harness.source, harness.memcached
    harness.start(make_config(servers=[A], max_queue=100))
    position = source.commit([updated(i) for i in range(1, 151)])
    confirmed(harness, position)
    assert nodes[A].received("flush_all") == []
    assert len(set(nodes[A].deleted())) == 150
