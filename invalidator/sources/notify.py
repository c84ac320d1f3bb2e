"""The notify source: triggers fill an outbox table, LISTEN wakes the daemon.

A session drains the outbox in (txid, id) order (see ``outbox`` for why that cursor never
skips a committed row) on a notification or every ``OUTBOX_POLL`` seconds (notifications
can be missed, e.g. while disconnected). Each row is one transaction of the
``AckTracker`` (its position is the outbox id) and is deleted only once memcached
acknowledged its work. LISTEN needs a session connection: not a transaction-pooling
PgBouncer.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from invalidator.config import SourceConfig
from invalidator.core.tracker import AckTracker, Txn, commit_times
from invalidator.errors import SourceError
from invalidator.sources import outbox
from invalidator.sources.base import Feed, Session
from invalidator.sources.catalog import Admin
from invalidator.sources.outbox_continuity import (
    OutboxMarker,
    current_outbox,
    detect_outbox_gap,
    read_marker,
    write_marker,
)
from invalidator.sources.partitions import PartitionWatcher
from invalidator.sources.postgres import CONNECT_TIMEOUT, source_error
from invalidator.sources.schema import SCHEMA

OUTBOX_POLL = 1.0  # drain the outbox at least this often, notification or not
OUTBOX_BATCH = 2_000
OUTBOX_IN_FLIGHT = 20_000  # outbox rows read but not yet deleted
DELETE_EVERY = 0.02  # acknowledged rows are deleted in batches at most this often
WOKEN_WAIT = 0.05


def connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise source_error("cannot connect to PostgreSQL", exc, dsn) from None


class NotifySource:
    """``source.kind: notify``: the outbox, its triggers and its sessions."""

    kind = "notify"
    target = f"outbox {SCHEMA}.outbox"

    def __init__(self, config: SourceConfig, dsn: str, rules: Any = None):
        self.config = config
        self.dsn = dsn
        self.rules = rules  # for setup: the triggers follow the rules

    def setup(self) -> str:
        with connect(self.dsn) as conn:
            added, removed = outbox.install(conn, self.rules)
        return (
            f"outbox {SCHEMA}.outbox ready; triggers added on "
            f"{', '.join(added) or 'no new table'}; removed from "
            f"{', '.join(removed) or 'no table'}"
        )

    def teardown(self) -> str:
        with connect(self.dsn) as conn:
            outbox.uninstall(conn)
        return f"outbox, trigger function and triggers dropped (schema {SCHEMA})"

    def status(self) -> tuple[dict[str, Any], bool]:
        with connect(self.dsn) as conn:
            try:
                rows = outbox.backlog(conn)
            except psycopg.Error:
                return {"source": "notify", "installed": False}, False
        return {"source": "notify", "installed": True, "outbox_rows": rows}, True

    def open(self, feed: Feed) -> Session:
        return NotifySession(self, feed)

    def close(self) -> None:
        return None


class NotifySession:
    """One LISTEN connection and one work connection draining the outbox."""

    def __init__(self, source: NotifySource, feed: Feed):
        self.feed = feed
        self.listen = connect(source.dsn)
        try:
            self.work = connect(source.dsn)
        except SourceError:
            self.listen.close()
            raise
        self.tracker = AckTracker()
        self.cursor = (0, 0)
        self.woken = True
        self.last_fetch = 0.0
        self.last_delete = 0.0
        self.gap: str | None = None
        self.gap_work: Txn | None = None
        try:
            outbox.numeric_exact(self.work)
            marker = read_marker(self.work)
            found = detect_outbox_gap(marker, current_outbox(self.work), self._triggered())
            if source.config.create_slot:
                added, removed = outbox.install(self.work, feed.rules)
                if added or removed:
                    feed.log.info("outbox triggers", added=added or None, removed=removed or None)
            self.outbox_oid = current_outbox(self.work)
            self.tables = self._triggered()
            if found is None:
                write_marker(self.work, self.outbox_oid, self.tables, None)
            else:
                self._gap(source, feed, marker, *found)
            self.listen.execute(f"LISTEN {outbox.CHANNEL}")
        except psycopg.Error as exc:
            self.close()
            raise source_error("outbox connection failed", exc) from None
        except SourceError:
            self.close()
            raise
        # Partitions report their own names: resolve new ones to their watched parent.
        feed.resolve_partition = PartitionWatcher(Admin(source.dsn), feed)
        feed.streaming(source="notify", tables=len(feed.rules.tables))

    def _triggered(self) -> frozenset[str]:
        return frozenset(f"{s}.{t}" for s, t in outbox.triggered_tables(self.work))

    def _gap(
        self,
        source: NotifySource,
        feed: Feed,
        marker: OutboxMarker | None,
        reason: str,
        detail: str,
    ) -> None:
        """Changes may have been missed: report it, remember it, answer it (on_gap)."""
        if marker is None or marker.pending_gap != reason:
            feed.gap(reason, detail)
            write_marker(self.work, None, frozenset(), reason)
        policy = source.config.on_gap
        if policy == "refuse":
            raise SourceError(
                f"continuity lost ({reason}): changes may have been missed; on_gap: refuse keeps"
                " the daemon unready (empty the cache, then start once with on_gap: flush)"
            )
        self.gap = reason
        self.gap_work = Txn(committed=True)
        feed.answer_gap(policy, reason, self.gap_work)

    def fileno(self) -> int:
        return self.listen.pgconn.socket

    def may_read(self, now: float) -> bool:
        return self.tracker.pending < OUTBOX_IN_FLIGHT

    def buffered(self) -> bool:
        return self.woken

    def read(self, ready: bool, now: float) -> None:
        try:
            if ready:
                self.listen.pgconn.consume_input()
                while self.listen.pgconn.notifies() is not None:
                    self.woken = True
            if not (self.woken or now - self.last_fetch >= OUTBOX_POLL):
                return
            self.woken = False
            self.last_fetch = now
            batch = outbox.fetch(self.work, self.cursor, OUTBOX_BATCH)
        except psycopg.Error as exc:
            raise source_error("outbox connection failed", exc) from None
        tracker = self.tracker
        for row in batch:
            txn = tracker.begin()
            self.feed.on_change(row.change, txn)
            # The trigger ran before the commit: never a commit time that could let a
            # restarted node's drop skip this row's work. Its time is for latency only.
            tracker.commit(txn, row.id, None)
            txn.commit_times = (row.created,)
            self.cursor = (row.txid, row.id)
        self.woken = len(batch) == OUTBOX_BATCH  # more is waiting: no need to wait

    def after_turn(self, now: float) -> float:
        gap_work = self.gap_work
        if gap_work is not None and gap_work.outstanding <= 0:
            try:
                write_marker(self.work, self.outbox_oid, self.tables, None)
            except psycopg.Error as exc:
                raise source_error("outbox connection failed", exc) from None
            self.gap_work = None
            self.feed.log.info("gap answered; continuity restored", reason=self.gap)
        if self.tracker.pending and now - self.last_delete >= DELETE_EVERY:
            self.last_delete = now
            self._delete_acknowledged()
        if self.woken:
            return 0.0
        return min(WOKEN_WAIT, max(0.0, self.last_fetch + OUTBOX_POLL - now))

    def _delete_acknowledged(self) -> None:
        finished = self.tracker.advance()
        if not finished:
            return
        try:
            # Only now: their work is acknowledged.
            outbox.delete(self.work, [txn.end_lsn for txn in finished])
        except psycopg.Error as exc:
            raise source_error("outbox connection failed", exc) from None
        self.feed.acknowledged(commit_times(finished))

    def progress(self) -> tuple[int, int]:
        return 0, 0

    def close(self) -> None:
        """Delete the rows whose work is acknowledged (the rest is drained again by the
        next session), then disconnect."""
        with contextlib.suppress(SourceError):
            self._delete_acknowledged()
        for conn in (self.listen, self.work):
            with contextlib.suppress(psycopg.Error):
                conn.close()
