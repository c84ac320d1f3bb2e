"""Operations held until a pool's read replicas replayed their commit (core/holds.py)."""

from __future__ import annotations

from invalidator.core.holds import ReplicaHolds
from invalidator.core.operations import Operation
from invalidator.core.tracker import AckTracker, Txn


def delete(key: str, pool: str = "replicated") -> Operation:
    return Operation("delete", key, pool, "public.users")


def committed(tracker: AckTracker, end_lsn: int) -> Txn:
    txn = tracker.begin()
    tracker.commit(txn, end_lsn, 1_700_000_000.0)
    return txn


def test_a_held_transaction_cannot_be_confirmed() -> None:
    tracker = AckTracker()
    holds = ReplicaHolds({"replicated": 30.0})
    txn = committed(tracker, 100)
    holds.hold([delete("user:1")], txn, now=0.0)
    assert not txn.done
    assert tracker.advance() == []


def test_operations_leave_once_every_replica_replayed_the_commit() -> None:
    holds = ReplicaHolds({"replicated": 30.0})
    txn = committed(AckTracker(), 100)
    holds.hold([delete("user:1"), delete("user:2")], txn, now=0.0)
    assert holds.release({"replicated": 99}, now=1.0).on_time == []
    released = holds.release({"replicated": 100}, now=1.0)
    assert [op.key for op in released.on_time[0].operations] == ["user:1", "user:2"]


def test_an_unknown_replica_position_holds_everything() -> None:
    holds = ReplicaHolds({"replicated": 30.0})
    holds.hold([delete("user:1")], committed(AckTracker(), 100), now=0.0)
    assert holds.release({"replicated": None}, now=1.0).on_time == []


def test_an_uncommitted_transaction_stays_held_and_so_does_everything_after_it() -> None:
    tracker = AckTracker()
    holds = ReplicaHolds({"replicated": 1.0})
    open_txn = tracker.begin()
    holds.hold([delete("user:1")], open_txn, now=0.0)
    later = committed(tracker, 200)
    holds.hold([delete("user:2")], later, now=0.0)
    released = holds.release({"replicated": 500}, now=5.0)
    assert released.on_time == [] and released.late == []


def test_holds_leave_in_commit_order() -> None:
    tracker = AckTracker()
    holds = ReplicaHolds({"replicated": 30.0})
    for lsn in (100, 200, 300):
        holds.hold([delete(f"k{lsn}")], committed(tracker, lsn), now=0.0)
    released = holds.release({"replicated": 250}, now=1.0)
    assert [h.txn.end_lsn for h in released.on_time] == [100, 200]
    assert holds.waiting("replicated") == 1


def test_one_hold_per_transaction_and_pool() -> None:
    holds = ReplicaHolds({"replicated": 30.0})
    txn = committed(AckTracker(), 100)
    holds.hold([delete("a")], txn, now=0.0)
    holds.hold([delete("b")], txn, now=0.0)
    assert holds.waiting("replicated") == 1
    assert txn.outstanding == 1


def test_past_wait_max_operations_go_at_once_and_again_after_replay() -> None:
    holds = ReplicaHolds({"replicated": 2.0})
    txn = committed(AckTracker(), 100)
    refresh = Operation("refresh", "user:1", "replicated", "public.users", value=b"{}", ttl=60)
    holds.hold([refresh], txn, now=0.0)
    assert holds.release({"replicated": 50}, now=1.9).late == []
    late = holds.release({"replicated": 50}, now=2.0)
    assert [h.txn for h in late.late] == [txn]
    assert holds.release({"replicated": 99}, now=3.0).reapply == []
    again = holds.release({"replicated": 100}, now=4.0).reapply
    # Sent again as a delete: by now a later refresh may have written a newer value.
    assert [(op.op, op.key) for op in again] == [("delete", "user:1")]
    assert not holds


def test_too_many_reapplications_become_one_flush_after_catch_up() -> None:
    tracker = AckTracker()
    holds = ReplicaHolds({"replicated": 0.0}, reapply_limit=3)
    for lsn in (100, 200):
        holds.hold([delete(f"a{lsn}"), delete(f"b{lsn}")], committed(tracker, lsn), now=0.0)
    assert len(holds.release({"replicated": None}, now=1.0).late) == 2
    assert holds.release({"replicated": 150}, now=2.0).reapply == []
    again = holds.release({"replicated": 200}, now=3.0).reapply
    assert [(op.op, op.pool) for op in again] == [("flush", "replicated")]


def test_next_due_is_the_oldest_committed_holds_timeout() -> None:
    holds = ReplicaHolds({"replicated": 5.0})
    assert holds.next_due(0.0) is None
    holds.hold([delete("a")], committed(AckTracker(), 100), now=1.0)
    assert holds.next_due(1.0) == 6.0


def test_a_session_that_ends_mid_transaction_leaves_no_hold_blocking_its_pool() -> None:
    """The server sends that transaction again to the next session; its orphaned hold
    (no commit ever read) must not hold every later transaction of the pool."""
    tracker = AckTracker()
    holds = ReplicaHolds({"replicated": 30.0})
    done = committed(tracker, 100)
    holds.hold([delete("a")], done, now=0.0)
    holds.hold([delete("b")], tracker.begin(), now=0.0)  # its commit never came
    assert holds.drop_open() == 1
    later = committed(AckTracker(), 300)  # the next session's
    holds.hold([delete("c")], later, now=1.0)
    released = holds.release({"replicated": 300}, now=2.0)
    assert [h.txn for h in released.on_time] == [done, later]
