"""Placement across a membership change."""

from __future__ import annotations

from invalidator.core.placement import GracePlacement, Rendezvous

OLD = Rendezvous(["a:1", "b:1", "c:1"])


def test_during_grace_the_old_owner_is_also_deleted_on() -> None:
    """A key that moved to the new node is deleted on it and on its previous owner."""
    new = Rendezvous(["a:1", "b:1", "c:1", "d:1"])
    grace = GracePlacement(new, OLD, until=10.0)
    moved = next(f"k{i}" for i in range(1000) if new.owner(f"k{i}") == "d:1")
    assert grace.owners(moved) == ("d:1", OLD.owner(moved))


def test_keys_that_did_not_move_have_one_owner() -> None:
    """Unmoved keys are not sent twice."""
    new = Rendezvous(["a:1", "b:1", "c:1", "d:1"])
    grace = GracePlacement(new, OLD, until=10.0)
    stayed = next(f"k{i}" for i in range(1000) if new.owner(f"k{i}") != "d:1")
    assert grace.owners(stayed) == (new.owner(stayed),)


def test_a_removed_node_is_never_an_owner() -> None:
    """After scale-down the old owner is gone: only members receive deletes."""
    new = Rendezvous(["a:1", "b:1"])
    grace = GracePlacement(new, OLD, until=10.0)
    assert all(set(grace.owners(f"k{i}")) <= {"a:1", "b:1"} for i in range(500))


def test_grace_expires() -> None:
    """expired turns true at the deadline."""
    grace = GracePlacement(Rendezvous(["a:1"]), OLD, until=5.0)
    assert not grace.expired(4.999)
    assert grace.expired(5.0)
