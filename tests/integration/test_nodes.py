"""NodeChannel against a real memcached: pipelining, order, reconnects, bump counters."""

from __future__ import annotations

import selectors
import time
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client

from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn
from invalidator.sinks.memcached.channel import Entry, NodeChannel
from tests.services import MemcachedNode, MemcachedPool


def drive(channel: NodeChannel, until: float = 5.0) -> list[Entry]:
    """Run the channel's I/O until it has nothing pending (or the time is up)."""
    done: list[Entry] = []
    end = time.monotonic() + until
    while channel.pending and time.monotonic() < end:
        channel.ensure_connected()
        if channel.transport is None:
            time.sleep(0.01)
            continue
        with selectors.DefaultSelector() as sel:
            events = selectors.EVENT_READ
            if channel.wants_write:
                events |= selectors.EVENT_WRITE
            sel.register(channel.transport, events)
            for _, ready in sel.select(0.05):
                if ready & selectors.EVENT_WRITE:
                    channel.on_writable()
                if ready & selectors.EVENT_READ:
                    done.extend(channel.on_readable())
    return done


@pytest.fixture
def node(memcached: MemcachedPool) -> MemcachedNode:
    return memcached.nodes[0]


@pytest.fixture
def client(node: MemcachedNode) -> Iterator[Client]:
    c = Client(node.server, no_delay=True, connect_timeout=2, timeout=2)
    yield c
    c.close()


def channel_for(node: MemcachedNode, errors: list[str] | None = None) -> NodeChannel:
    """A channel whose errors and rare events (restart, overflow) land in ``errors``."""
    sink = errors if errors is not None else []
    return NodeChannel(
        node.server,
        (node.host, node.port),
        on_error=lambda n, r: sink.append(r),
        on_event=lambda n, event, count, message: sink.append(message),
    )


def delete(key: str) -> Operation:
    return Operation("delete", key, "default", "public.t")


def test_ten_thousand_pipelined_deletes_complete_their_transaction(
    node: MemcachedNode, client: Client
) -> None:
    """Every delete is acknowledged and the transaction's count reaches zero."""
    client.set_many({f"k{i}": b"v" for i in range(10_000)}, noreply=False)
    channel, txn = channel_for(node), Txn()
    for i in range(10_000):
        channel.submit(delete(f"k{i}"), txn)
    done = drive(channel)
    assert (
        len(done),
        txn.outstanding,
        client.get_many([f"k{i}" for i in range(0, 10_000, 97)]),
    ) == (10_000, 0, {})
    channel.close()


def test_unsent_delete_of_the_same_key_is_shared_by_two_transactions(node: MemcachedNode) -> None:
    """A second delete of a queued key joins it: one request, both transactions wait on it."""
    channel, a, b = channel_for(node), Txn(), Txn()
    channel.submit(delete("dup"), a)
    channel.submit(delete("dup"), b)
    assert len(channel.queue) == 1
    drive(channel)
    assert (a.outstanding, b.outstanding) == (0, 0)
    channel.close()


def test_bump_creates_a_missing_counter_then_increments(
    node: MemcachedNode, client: Client
) -> None:
    """bump: incr, NOT_FOUND → add 1; next bump → 2."""
    channel, txn = channel_for(node), Txn()
    bump = Operation("bump", "gen:users", "default", "public.users")
    channel.submit(bump, txn)
    drive(channel)
    channel.submit(bump, txn)
    drive(channel)
    assert (client.get("gen:users"), txn.outstanding) == (b"2", 0)
    channel.close()


def test_refused_connection_is_retried_with_backoff_and_work_survives(
    node: MemcachedNode, client: Client
) -> None:
    """While the node is down the delete waits; once it is back the delete is applied."""
    node.stop()
    errors: list[str] = []
    channel, txn = channel_for(node, errors), Txn()
    channel.submit(delete("later"), txn)
    drive(channel, until=0.3)
    assert txn.outstanding == 1 and errors
    node.start()
    client.set("later", b"v", noreply=False)
    drive(channel, until=10)
    assert (txn.outstanding, client.get("later")) == (0, None)
    channel.close()


def test_restart_drops_work_committed_before_it_and_keeps_later_work(
    node: MemcachedNode, client: Client
) -> None:
    """After a restart (new pid), queued deletes of older commits are dropped (the cache
    is empty), while a delete for a commit made after the restart is still applied."""
    errors: list[str] = []
    channel = channel_for(node, errors)
    drive_txn = Txn()
    channel.submit(delete("warmup"), drive_txn)
    drive(channel)
    node.pause()
    old, new = Txn(commit_time=time.time() - 60), Txn()
    channel.submit(delete("old"), old)
    drive(channel, until=0.3)
    node.resume()
    node.restart()
    client.close()
    client.set("new", b"v", noreply=False)
    new.commit_time = time.time() + 5
    channel.submit(delete("new"), new)
    drive(channel, until=10)
    assert (old.outstanding, new.outstanding, client.get("new")) == (0, 0, None)
    assert any("restarted" in e for e in errors)
    channel.close()


def batch(keys: list[str]) -> tuple[Operation, bytes, int]:
    """A batch entry's arguments, as the C hot path hands them over."""
    requests = b"".join(b"delete " + k.encode() + b"\r\n" for k in keys)
    return Operation("delete", "", "default", "*"), requests, len(keys)


def test_a_batch_counts_each_of_its_deletes_as_pending(node: MemcachedNode) -> None:
    """The in-flight window is in operations: a batch of 1,000 is 1,000 pending."""
    channel = channel_for(node)
    channel.submit_batch(*batch([f"b{i}" for i in range(1_000)]), Txn())
    assert channel.pending == 1_000


def test_a_batch_is_settled_once_all_its_replies_are_in(
    node: MemcachedNode, client: Client
) -> None:
    """One entry, 1,000 replies: settled once, with the DELETED replies counted."""
    client.set_many({f"b{i}": b"v" for i in range(0, 1_000, 2)}, noreply=False)
    channel, txn = channel_for(node), Txn()
    channel.submit_batch(*batch([f"b{i}" for i in range(1_000)]), txn)
    done = drive(channel)
    channel.close()
    assert [(e.count, e.deleted, e.remaining) for e in done] == [(1_000, 500, 0)]
    assert (txn.outstanding, channel.pending, client.get_many(["b0", "b998"])) == (0, 0, {})


def test_an_error_reply_within_a_batch_keeps_it_pending_and_reports_it(
    node: MemcachedNode,
) -> None:
    """memcached refusing one request of a batch: never settled as done, the node errs."""
    errors: list[str] = []
    channel, txn = channel_for(node, errors), Txn()
    channel.submit_batch(*batch(["ok1", "x" * 300, "ok2"]), txn)
    done = drive(channel, until=0.5)
    channel.close()
    assert (done, txn.outstanding, channel.pending) == ([], 1, 3)
    assert any("batch of 3" in e and "CLIENT_ERROR" in e for e in errors), errors
