"""When may changes have been missed? The continuity rule, and what answers a gap."""

from __future__ import annotations

from invalidator.config import parse_config
from invalidator.config.build import compile_rules
from invalidator.core.rules import RuleSet, gap_operations
from invalidator.sources.catalog import Server, SlotStatus
from invalidator.sources.continuity import (
    NEW_TIMELINE,
    OTHER_CLUSTER,
    SLOT_ADVANCED,
    SLOT_LOST,
    SLOT_MISSING,
    Continuity,
    Marker,
    detect_gap,
)
from invalidator.sources.outbox_continuity import (
    OUTBOX_RECREATED,
    TRIGGER_MISSING,
    OutboxMarker,
    detect_outbox_gap,
)
from invalidator.sources.publication import Published, lacking

SERVER = Server("7412345678901234567", 1)
MARKER = Marker("7412345678901234567", 1, 0x1000)
SLOT = SlotStatus("inval", exists=True, wal_status="reserved", confirmed_flush_lsn="0/1000")
MISSING = SlotStatus("inval", exists=False)


def test_a_first_run_has_nothing_to_have_missed() -> None:
    """No marker and no slot: a fresh install, not a gap."""
    assert detect_gap(None, MISSING, SERVER) is None


def test_a_slot_without_a_marker_is_trusted() -> None:
    """A slot from before continuity was tracked carries on (its position is its own)."""
    assert detect_gap(None, SLOT, SERVER) is None


def test_an_invalidated_slot_is_a_gap_even_without_a_marker() -> None:
    """wal_status lost: PostgreSQL removed WAL the slot still needed."""
    lost = SlotStatus("inval", exists=True, wal_status="lost")
    assert detect_gap(None, lost, SERVER) == SLOT_LOST
    assert detect_gap(MARKER, lost, SERVER) == SLOT_LOST


def test_the_same_server_and_slot_is_no_gap() -> None:
    """The normal restart."""
    assert detect_gap(MARKER, SLOT, SERVER) is None


def test_a_missing_slot_after_a_marker_is_a_gap() -> None:
    """The slot was dropped while the daemon was away."""
    assert detect_gap(MARKER, MISSING, SERVER) == SLOT_MISSING


def test_another_cluster_is_a_gap_whatever_the_slot() -> None:
    """A DSN that now reaches another cluster: a slot there says nothing about ours."""
    other = Server("7499999999999999999", 1)
    assert detect_gap(MARKER, SLOT, other) == OTHER_CLUSTER
    assert detect_gap(MARKER, MISSING, other) == OTHER_CLUSTER


def test_a_promoted_standby_without_the_slot_is_a_gap() -> None:
    """A newer timeline and no slot: the failover lost it."""
    promoted = Server(SERVER.system_identifier, 2)
    assert detect_gap(MARKER, MISSING, promoted) == NEW_TIMELINE


def test_a_new_timeline_with_the_slot_kept_is_no_gap() -> None:
    """A failover slot (PostgreSQL 17) came along: its position is still ours."""
    promoted = Server(SERVER.system_identifier, 2)
    assert detect_gap(MARKER, SLOT, promoted) is None


def test_a_gap_not_yet_answered_stays_the_gap() -> None:
    """A crash between finding a gap and answering it answers it on the next start."""
    pending = Marker(SERVER.system_identifier, 1, 0x1000, pending_gap=SLOT_MISSING)
    assert detect_gap(pending, SLOT, SERVER) == SLOT_MISSING


def rules_for(pools: dict[str, object], rules: list[dict[str, object]]) -> RuleSet:
    config = parse_config({"pools": pools, "rules": rules}, "test")
    return compile_rules(config)


POOLS = {
    "default": {"servers": ["127.0.0.1:11211"]},
    "counters": {"servers": ["127.0.0.1:11212"]},
}
RULES = [
    {"table": "users", "keys": ["user:{id}"]},
    {"table": "users", "keys": ["users:generation"], "action": "bump", "pool": "counters"},
]


def test_flush_empties_every_pool() -> None:
    """on_gap: flush — one flush_all per pool."""
    ops = gap_operations(rules_for(POOLS, RULES), ["default", "counters"], "flush", SLOT_MISSING)
    assert [(op.op, op.pool) for op in ops] == [("flush", "default"), ("flush", "counters")]


def test_bump_increments_counters_and_still_flushes_pools_with_other_rules() -> None:
    """on_gap: bump — a counters-only pool is bumped; a pool of delete rules is flushed."""
    ops = gap_operations(rules_for(POOLS, RULES), ["default", "counters"], "bump", SLOT_MISSING)
    assert [(op.op, op.pool, op.key) for op in ops] == [
        ("flush", "default", ""),
        ("bump", "counters", "users:generation"),
    ]


def test_bump_flushes_a_pool_whose_counters_are_per_row() -> None:
    """Per-row generation keys cannot be listed: that pool is emptied instead."""
    rules = [{"table": "users", "keys": ["user:{id}:gen"], "action": "bump", "pool": "counters"}]
    ops = gap_operations(rules_for(POOLS, rules), ["counters"], "bump", SLOT_MISSING)
    assert [(op.op, op.pool) for op in ops] == [("flush", "counters")]


def test_a_slot_confirmed_past_the_marker_was_moved_by_someone_else() -> None:
    """pg_replication_slot_advance or another consumer skipped changes the daemon never
    saw: the marker is always written before the slot is confirmed past it."""
    ahead = SlotStatus("inval", exists=True, wal_status="reserved", confirmed_flush_lsn="0/1001")
    assert detect_gap(MARKER, ahead, SERVER) == SLOT_ADVANCED


def test_a_slot_behind_its_marker_is_no_gap() -> None:
    """The marker runs ahead (a horizon), the slot catches up to it."""
    behind = SlotStatus("inval", exists=True, wal_status="reserved", confirmed_flush_lsn="0/800")
    assert detect_gap(MARKER, behind, SERVER) is None


class FakeStore:
    def __init__(self) -> None:
        self.written: list[int] = []

    def confirmed(self, server: Server, position: int) -> None:
        self.written.append(position)


def tracked() -> tuple[Continuity, FakeStore]:
    continuity = Continuity(None, "inval", "flush")  # type: ignore[arg-type]
    store = FakeStore()
    continuity.store = store  # type: ignore[assignment]
    continuity.tracked = True
    continuity.server = SERVER
    return continuity, store


def test_the_marker_moves_before_the_slot_may_be_confirmed_past_it() -> None:
    continuity, store = tracked()
    continuity.worked(0x5000)
    assert continuity.allowed(100.0, 0x5000, 0x6000) == 0x5000
    assert store.written and store.written[0] >= 0x6000  # beyond the WAL end, first


def test_the_slot_waits_for_the_next_marker_write_within_a_second() -> None:
    continuity, store = tracked()
    continuity.worked(0x5000)
    horizon = continuity.allowed(100.0, 0x5000, 0x5000)
    assert horizon == 0x5000
    far = store.written[-1] + 1
    continuity.worked(far)
    assert continuity.allowed(100.5, far, far) == store.written[-1]  # held at the horizon
    assert continuity.allowed(101.0, far, far) == far
    assert len(store.written) == 2


def test_idle_keepalives_move_the_marker_only_every_ten_seconds() -> None:
    continuity, store = tracked()
    continuity.allowed(100.0, 0x5000, 0x5000)
    far = store.written[-1] + 1
    assert continuity.allowed(105.0, far, far) < far
    assert continuity.allowed(110.0, far, far) == far


def test_an_untracked_marker_never_holds_the_slot() -> None:
    continuity, store = tracked()
    continuity.tracked = False
    assert continuity.allowed(100.0, 0x9000, 0x9000) == 0x9000
    assert store.written == []


# -- the notify source's outbox ----------------------------------------------------------

OUTBOX = OutboxMarker(16400, frozenset({"public.users", "public.orders"}))


def test_an_outbox_without_a_marker_is_a_first_start() -> None:
    assert detect_outbox_gap(None, 16400, frozenset()) is None


def test_the_same_outbox_and_triggers_is_no_gap() -> None:
    assert detect_outbox_gap(OUTBOX, 16400, frozenset({"public.users", "public.orders"})) is None


def test_an_outbox_created_again_is_a_gap() -> None:
    """Its unread rows went with the old table."""
    found = detect_outbox_gap(OUTBOX, 16999, frozenset({"public.users", "public.orders"}))
    assert found is not None and found[0] == OUTBOX_RECREATED


def test_a_dropped_trigger_is_a_gap_naming_the_table() -> None:
    found = detect_outbox_gap(OUTBOX, 16400, frozenset({"public.users"}))
    assert found == (TRIGGER_MISSING, "capture triggers were dropped from public.orders")


def test_a_table_newly_watched_is_no_gap() -> None:
    """A rule added since: its trigger is installed now, nothing was missed before."""
    now = frozenset({"public.users", "public.orders", "public.items"})
    assert detect_outbox_gap(OUTBOX, 16400, now) is None


def test_an_unanswered_outbox_gap_stays_the_gap() -> None:
    pending = OutboxMarker(16400, OUTBOX.tables, TRIGGER_MISSING)
    found = detect_outbox_gap(pending, 16400, OUTBOX.tables)
    assert found is not None and found[0] == TRIGGER_MISSING


# -- pgoutput: what a publication lacks ----------------------------------------------------


def test_a_publication_in_step_lacks_nothing() -> None:
    current = Published(True, {("public", "users"): ("email", "id")}, True, True)
    assert lacking(current, {("public", "users"): ("email", "id")}, partitioned=False) == []


def test_a_publication_lacks_new_tables_and_columns_by_name() -> None:
    current = Published(True, {("public", "users"): ("id",)}, True, True)
    target = {("public", "users"): ("email", "id"), ("public", "audit"): None}
    assert lacking(current, target, partitioned=False) == [
        "table public.audit",
        "email of public.users",
    ]


def test_a_publication_publishing_more_than_the_rules_read_lacks_nothing() -> None:
    current = Published(True, {("public", "users"): None, ("public", "x"): None}, True, True)
    assert lacking(current, {("public", "users"): ("id",)}, partitioned=False) == []


def test_missing_operations_partition_roots_or_the_publication_itself_are_lacking() -> None:
    assert lacking(Published(False, {}), {}, partitioned=False) == ["the publication itself"]
    some_ops = Published(True, {("public", "t"): None}, True, False)
    assert lacking(some_ops, {("public", "t"): None}, partitioned=False) == [
        "some of insert, update, delete and truncate"
    ]
    leaves = Published(True, {("public", "t"): None}, False, True)
    assert lacking(leaves, {("public", "t"): None}, partitioned=False) == []
    assert lacking(leaves, {("public", "t"): None}, partitioned=True) == [
        "partitions' changes under their root's name"
    ]
