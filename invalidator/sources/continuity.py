"""Knowing when changes may have been missed: the slot's continuity, kept in the database.

A replication slot remembers what was confirmed, but it can vanish (dropped, or lost in a
failover to a standby that never had it), be invalidated (``wal_status = lost``), or the
DSN can start pointing at another cluster or a promoted standby. Each time the daemon
would carry on from a fresh slot and the changes in between would never be invalidated.
So the daemon keeps a marker row per slot in ``invalidator.continuity`` — in the watched
database itself, so it is replicated with it and survives the failover that loses the
slot — and checks it on every (re)connect. ``detect_gap`` is the pure rule; ``MarkerStore``
its SQL. A gap is recorded as ``pending_gap`` before anything is done about it, and
cleared only once the cache work that answers it (``on_gap``) is acknowledged, so a crash
in between handles it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from invalidator.core.changes import int_to_lsn, lsn_to_int
from invalidator.errors import SourceError
from invalidator.sources.catalog import Admin, Server, SlotStatus
from invalidator.sources.schema import ENSURE_SCHEMA_SQL, SCHEMA

TABLE = "continuity"

CREATE_SQL = f"""
{ENSURE_SCHEMA_SQL}CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
    slot              text PRIMARY KEY,
    system_identifier text NOT NULL,
    timeline          integer NOT NULL,
    confirmed_lsn     pg_lsn NOT NULL DEFAULT '0/0',
    pending_gap       text,
    last_gap          text,
    last_gap_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
)
"""

# Why continuity was lost (the ``reason`` label of ``invalidator_gaps_total``).
SLOT_MISSING = "slot_missing"  # the slot the daemon streamed from is gone (dropped, failover)
SLOT_LOST = "slot_lost"  # PostgreSQL invalidated the slot (max_slot_wal_keep_size)
OTHER_CLUSTER = "other_cluster"  # the DSN now reaches another cluster (system identifier)
NEW_TIMELINE = "new_timeline"  # a promoted standby: the slot did not come along
SLOT_ADVANCED = "slot_advanced"  # the slot was confirmed past anything the daemon confirmed
# pgoutput: the slot's changes so far were decoded without a table, columns or operations
# the rules now need (added to the publication later: they do not come back)
PUBLICATION_EXTENDED = "publication_extended"


@dataclass(frozen=True, slots=True)
class Marker:
    """What the daemon last knew of its slot's server, and any gap not yet answered."""

    system_identifier: str
    timeline: int
    confirmed_lsn: int = 0
    pending_gap: str | None = None
    last_gap: str | None = None
    last_gap_at: str | None = None


def detect_gap(marker: Marker | None, slot: SlotStatus, server: Server) -> str | None:
    """Why changes may have been missed since the marker was written, or None.

    No marker: a first run (or one from before continuity was tracked) has nothing to
    have missed. A gap already pending (found, not yet answered) stays the gap."""
    if marker is None:
        return SLOT_LOST if slot.wal_status == "lost" else None
    if marker.pending_gap:
        return marker.pending_gap
    if marker.system_identifier != server.system_identifier:
        return OTHER_CLUSTER
    if server.timeline > marker.timeline and not slot.exists:
        return NEW_TIMELINE
    if not slot.exists:
        return SLOT_MISSING
    if slot.wal_status == "lost":
        return SLOT_LOST
    # The marker is written before the slot is confirmed past it (Continuity.allowed): a
    # slot further on was moved by someone else (pg_replication_slot_advance, another
    # consumer), and the changes it skipped were never invalidated.
    flushed = slot.confirmed_flush_lsn
    if marker.confirmed_lsn and flushed and lsn_to_int(flushed) > marker.confirmed_lsn:
        return SLOT_ADVANCED
    return None


class MarkerStore:
    """The marker rows, through the source's admin connection."""

    def __init__(self, admin: Admin, slot: str):
        self.admin = admin
        self.slot = slot
        self.unavailable = ""  # why the marker cannot be kept (no table, no privilege)

    def ensure(self) -> bool:
        """Create the table if missing; False (with ``unavailable`` set) if we may not."""
        try:
            self.admin.execute(CREATE_SQL)
        except SourceError as exc:
            self.unavailable = (
                f"cannot create {SCHEMA}.{TABLE} ({exc}); run sql/role.sql, which gives the "
                f"daemon's role the {SCHEMA} schema"
            )
            return False
        self.unavailable = ""
        return True

    def read(self) -> Marker | None:
        rows = self.admin.query(
            sql.SQL(
                "SELECT system_identifier, timeline, confirmed_lsn::text, pending_gap,"
                " last_gap, last_gap_at::text FROM {} WHERE slot = %s"
            ).format(sql.Identifier(SCHEMA, TABLE)),
            (self.slot,),
        )
        if not rows:
            return None
        system_id, timeline, confirmed, pending, last, last_at = rows[0]
        return Marker(system_id, timeline, lsn_to_int(confirmed), pending, last, last_at)

    def record_gap(self, server: Server, reason: str) -> None:
        """The gap is found: remember it before anything is done about it."""
        self._upsert(
            server,
            "pending_gap = EXCLUDED.pending_gap, last_gap = EXCLUDED.pending_gap,"
            " last_gap_at = now()",
            reason,
        )

    def resolved(self, server: Server, confirmed: int) -> None:
        """The gap's cache work is acknowledged (or there was none): the server and
        position as they are now."""
        self._upsert(server, "pending_gap = NULL", None, confirmed)

    def confirmed(self, server: Server, position: int) -> None:
        """The daemon confirmed ``position``: keep it where a failover keeps it too."""
        self._upsert(server, "pending_gap = m.pending_gap", None, position)

    def _upsert(
        self, server: Server, on_conflict: str, gap: str | None, confirmed: int | None = None
    ) -> None:
        position = int_to_lsn(confirmed) if confirmed is not None else None
        query = sql.SQL(
            "INSERT INTO {table} AS m (slot, system_identifier, timeline, confirmed_lsn,"
            " pending_gap, last_gap, last_gap_at)"
            " VALUES (%(slot)s, %(sysid)s, %(timeline)s, coalesce(%(lsn)s::pg_lsn, '0/0'),"
            " %(gap)s, %(gap)s, CASE WHEN %(gap)s::text IS NULL THEN NULL ELSE now() END)"
            " ON CONFLICT (slot) DO UPDATE SET system_identifier = EXCLUDED.system_identifier,"
            " timeline = EXCLUDED.timeline,"
            " confirmed_lsn = coalesce(%(lsn)s::pg_lsn, m.confirmed_lsn),"
            " updated_at = now(), {extra}"
        ).format(table=sql.Identifier(SCHEMA, TABLE), extra=sql.SQL(on_conflict))
        params: dict[str, Any] = {
            "slot": self.slot,
            "sysid": server.system_identifier,
            "timeline": server.timeline,
            "lsn": position,
            "gap": gap,
        }
        self.admin.execute(query, params)


def marker_status(marker: Marker | None, unavailable: str) -> dict[str, Any]:
    """The ``continuity`` part of ``invalidator status``."""
    if unavailable:
        return {"tracked": False, "reason": unavailable}
    if marker is None:
        return {"tracked": True, "marker": None}
    return {
        "tracked": True,
        "system_identifier": marker.system_identifier,
        "timeline": marker.timeline,
        "confirmed_lsn": int_to_lsn(marker.confirmed_lsn),
        "pending_gap": marker.pending_gap,
        "last_gap": marker.last_gap,
        "last_gap_at": marker.last_gap_at,
    }


# The marker's position is a horizon written *before* the slot is confirmed past it:
# at most once a second while transactions are confirmed, every 10 s when only idle
# keepalives move the position. It reaches SLACK bytes beyond the server's WAL end, so the
# marker's own write (in the watched database, hence in the stream) does not pass it.
HORIZON_EVERY = 1.0
IDLE_HORIZON_EVERY = 10.0
SLACK = 1 << 20


def describe(reason: str, marker: Marker | None, slot: SlotStatus, server: Server) -> str:
    """One line for the log: what was found, against what was expected."""
    if reason == OTHER_CLUSTER and marker is not None:
        return (
            f"system identifier {server.system_identifier}, the slot's was "
            f"{marker.system_identifier}: the DSN reaches another cluster"
        )
    if reason == NEW_TIMELINE and marker is not None:
        return (
            f"timeline {server.timeline} (was {marker.timeline}) and slot {slot.slot} is "
            "missing: a promoted standby without the slot"
        )
    if reason == SLOT_LOST:
        return f"slot {slot.slot} was invalidated by PostgreSQL (wal_status lost)"
    if reason == SLOT_MISSING:
        return f"slot {slot.slot} is gone (dropped, or lost in a failover)"
    if reason == SLOT_ADVANCED and marker is not None:
        return (
            f"slot {slot.slot} is confirmed up to {slot.confirmed_flush_lsn}, past anything the"
            f" daemon confirmed ({int_to_lsn(marker.confirmed_lsn)}): someone else advanced it"
        )
    return f"a gap found earlier ({reason}) was not answered yet"


class Continuity:
    """The check at every (re)connect and the marker while streaming, for one slot."""

    def __init__(self, admin: Admin, slot: str, policy: str):
        self.admin = admin
        self.slot = slot
        self.policy = policy
        self.store = MarkerStore(admin, slot)
        self.server: Server | None = None
        self.tracked = False
        self._declared: str | None = None  # a gap the source found itself (``declare``)
        self._saved_at = 0.0
        self._saved_position = -1  # the marker's horizon, once written this session
        self._work_position = 0

    def check(self, log: Any, on_gap: Any) -> str | None:
        """Before the slot is created or streamed: the gap to answer, or None.

        ``on_gap(reason, detail)`` reports a newly found gap. With ``on_gap: refuse`` a gap
        raises SourceError (the daemon stays unready with the reason). A slot PostgreSQL
        invalidated can never stream again: it is dropped, to be created afresh."""
        server = self.server = self.admin.identify()
        self.tracked = self.store.ensure()
        if not self.tracked:
            log.error("continuity is not tracked", reason=self.store.unavailable)
        marker = self.store.read() if self.tracked else None
        slot = self.admin.slot_status(self.slot)
        gap = detect_gap(marker, slot, server) or self._declared
        if gap is None:
            return None
        if marker is None or marker.pending_gap != gap:
            on_gap(gap, describe(gap, marker, slot, server))
            if self.tracked:
                self.store.record_gap(server, gap)
        if self.policy == "refuse":
            raise SourceError(
                f"continuity lost ({gap}): changes may have been missed; on_gap: refuse keeps "
                "the daemon unready (empty the cache, then start once with on_gap: flush)"
            )
        if slot.exists and slot.wal_status == "lost":
            self.admin.drop_slot(self.slot)
            log.warning("invalidated slot dropped, to be created again", slot=self.slot)
        return gap

    def declare(self, reason: str, detail: str, on_gap: Any) -> None:
        """A gap the source found itself, before ``check``: reported now (``on_gap``) and
        kept pending in the marker, so ``check`` answers it as any other gap — again after
        a crash, until its cache work is acknowledged."""
        on_gap(reason, detail)
        self._declared = reason
        if self.store.ensure():
            self.store.record_gap(self.server or self.admin.identify(), reason)

    def resolved(self, position: int) -> None:
        """The gap's cache work is acknowledged, or there was none."""
        self._declared = None
        if self.tracked and self.server is not None:
            self.store.resolved(self.server, position)
            self._saved_position = position

    def allowed(self, now: float, wanted: int, wal_end: int, *, force: bool = False) -> int:
        """How far the slot may be confirmed now (``wanted`` at most): never past the
        marker's horizon, which is moved first — so a slot found further on was moved by
        someone else. A horizon move waits its turn (HORIZON_EVERY; IDLE_HORIZON_EVERY
        when only ``wal_end`` moved, not work) unless ``force``."""
        if not self.tracked or self.server is None or wanted <= self._saved_position:
            return wanted
        busy = self._work_position > self._saved_position
        every = HORIZON_EVERY if busy else IDLE_HORIZON_EVERY
        if not force and now - self._saved_at < every:
            return max(self._saved_position, 0)
        horizon = max(wanted, wal_end) + SLACK
        self.store.confirmed(self.server, horizon)
        self._saved_at = now
        self._saved_position = horizon
        return wanted

    def worked(self, position: int) -> None:
        """The position finished transactions reached (not idle keepalives)."""
        self._work_position = max(self._work_position, position)
