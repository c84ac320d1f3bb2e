"""Scheduling the race guard's second deletes."""

from __future__ import annotations

from invalidator.core.redelete import RedeleteScheduler

A = ("default", "n1", "user:1")
B = ("default", "n2", "user:2")


def test_nothing_is_due_before_its_time() -> None:
    """A re-delete scheduled at t=5 is not released at t=4.9 but is at t=5."""
    s = RedeleteScheduler()
    s.schedule(A, 5.0)
    assert (s.pop_due(4.9), s.pop_due(5.0)) == ([], [A])


def test_deleting_a_key_again_moves_its_second_delete_later() -> None:
    """One pending re-delete per key, at the latest due time."""
    s = RedeleteScheduler()
    s.schedule(A, 5.0)
    s.schedule(A, 8.0)
    assert (len(s), s.pop_due(6.0), s.pop_due(8.0)) == (1, [], [A])


def test_capacity_releases_the_earliest_early_instead_of_dropping() -> None:
    """Bounded memory: over capacity, the soonest re-delete is sent now."""
    s = RedeleteScheduler(capacity=1)
    assert s.schedule(A, 5.0) == []
    assert s.schedule(B, 9.0) == [A]
    assert (len(s), s.pop_due(9.0)) == (1, [B])


def test_next_due_skips_superseded_entries() -> None:
    """next_due reports the earliest live due time."""
    s = RedeleteScheduler()
    s.schedule(A, 5.0)
    s.schedule(A, 7.0)
    s.schedule(B, 6.0)
    assert s.next_due() == 6.0
