"""At-least-once bookkeeping: a position is confirmed only when all work up to it is done."""

from __future__ import annotations

from invalidator.core.tracker import AckTracker


def test_transaction_with_outstanding_work_is_not_confirmed() -> None:
    """A committed transaction whose deletes are unanswered holds the position."""
    tracker = AckTracker(100)
    txn = tracker.begin()
    txn.outstanding = 2
    tracker.commit(txn, 200, None)
    assert (tracker.advance(), tracker.confirmed) == ([], 100)


def test_position_moves_once_all_work_is_acknowledged() -> None:
    """The transaction's end is confirmed after its last acknowledgement."""
    tracker = AckTracker(100)
    txn = tracker.begin()
    txn.outstanding = 1
    tracker.commit(txn, 200, None)
    txn.outstanding -= 1
    assert (tracker.advance(), tracker.confirmed) == ([txn], 200)


def test_newer_done_transaction_waits_for_an_older_one() -> None:
    """Replies may come out of order across nodes; confirmation never skips a transaction."""
    tracker = AckTracker(0)
    old, new = tracker.begin(), tracker.begin()
    old.outstanding, new.outstanding = 1, 1
    tracker.commit(old, 10, None)
    tracker.commit(new, 20, None)
    new.outstanding = 0
    assert (tracker.advance(), tracker.confirmed) == ([], 0)
    old.outstanding = 0
    assert (tracker.advance(), tracker.confirmed) == ([old, new], 20)


def test_uncommitted_transaction_is_never_confirmed() -> None:
    """Work of a transaction still streaming (no C yet) does not confirm anything."""
    tracker = AckTracker(5)
    tracker.begin()
    assert (tracker.advance(), tracker.confirmed) == ([], 5)


def test_idle_advance_moves_to_the_server_end_when_nothing_is_open() -> None:
    """With no open transaction, a keepalive's WAL end is confirmed (quiet slots move)."""
    tracker = AckTracker(5)
    assert tracker.idle_advance(500) and tracker.confirmed == 500


def test_idle_advance_is_refused_while_work_is_open() -> None:
    """A keepalive never confirms past pending work (psycopg2 issue #940)."""
    tracker = AckTracker(5)
    txn = tracker.begin()
    txn.outstanding = 1
    assert not tracker.idle_advance(500) and tracker.confirmed == 5


def test_position_never_moves_backwards() -> None:
    """An end below the confirmed position (a replayed duplicate) keeps the position."""
    tracker = AckTracker(300)
    txn = tracker.begin()
    tracker.commit(txn, 200, None)
    tracker.advance()
    assert tracker.confirmed == 300


def test_a_unit_closed_inside_a_transaction_learns_the_commit_that_follows() -> None:
    tracker = AckTracker()
    row = tracker.begin()
    tracker.commit(row, 0, None)  # a row's unit, before its transaction's commit
    commit = tracker.begin()
    tracker.commit(commit, 500, 1_700_000_000.0)
    assert (row.txn_end_lsn, row.txn_time) == (500, 1_700_000_000.0)
    assert row.end_lsn == 0  # never a confirmable position of its own


def test_a_unit_inside_a_transaction_has_no_commit_position_until_it_is_read() -> None:
    tracker = AckTracker()
    row = tracker.begin()
    tracker.commit(row, 0, None)
    assert row.txn_end_lsn == 0
