"""The wal2json source: a logical replication slot streamed through the C hot path.

Each replication session reads CopyData messages in batches; the C decoder turns the rows
of eligible tables into per-node delete requests and records commits, and what it
declines (other tables' rules, unusual records) is decoded in Python and planned by
``plan()``, after the decoder's work so far, so per-node order holds. Each harvest is one
unit of the ``AckTracker``: confirmable at its last commit once every node acknowledged
it. The position sent to PostgreSQL never passes work not yet done; with nothing open or
pending, the server's WAL end is confirmed so quiet tables do not pin WAL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from invalidator.config import SourceConfig
from invalidator.core.changes import Begin, Change, Commit, lsn_to_int
from invalidator.core.operations import SkippedKey
from invalidator.core.rules import TableName
from invalidator.core.tracker import AckTracker, Txn, commit_times
from invalidator.errors import DecodeError, SourceError
from invalidator.hotpath import HotPath
from invalidator.hotpath._hotpath import parse_timestamp
from invalidator.sources.base import Feed, Session
from invalidator.sources.catalog import Admin
from invalidator.sources.continuity import Continuity, marker_status
from invalidator.sources.partitions import PartitionWatcher
from invalidator.sources.postgres import PLUGIN, ReplicationStream, WalPosition, stream_options
from invalidator.sources.replication import ProtocolError, XLogData, parse_message
from invalidator.sources.wal2json import decode_v2

STATUS_INTERVAL = 10.0  # below the default wal_sender_timeout (60 s) / 2
STATUS_MIN_GAP = 0.1  # rate limit for status updates sent because the position moved
READ_BATCH = 256  # messages per read when caught up: bounds the first one's wait
READ_BATCH_BACKLOG = 4096  # after a full read (a backlog): fewer turns, larger writes
# Far behind the server's WAL, a read that found few messages waits this long before the
# next one: latency is the backlog's anyway, and a loop turn per handful of messages costs
# the CPU that PostgreSQL's decoding (on the same machine) needs to catch up.
BACKLOG_BYTES = 1 << 20
BACKLOG_COALESCE = 0.001
LAG_INTERVAL = 1.0  # how often the server's WAL position is read for the lag metric
# wal2json: WARNING:  no tuple identifier for UPDATE in table "public"."events"
_NO_IDENTITY = re.compile(
    r"no tuple identifier for (?P<op>\w+) in table "
    r'"(?P<schema>(?:[^"]|"")*)"\."(?P<table>(?:[^"]|"")*)"'
)


class LogicalSource:
    """``source.kind: wal2json``: the slot, its setup and its sessions."""

    kind = "wal2json"
    plugin = PLUGIN

    def __init__(self, config: SourceConfig, dsn: str):
        self.config = config
        self.slot = config.slot
        self.target = f"slot {config.slot}"
        self.dsn = dsn
        self.admin = Admin(dsn)
        self.wal = WalPosition(dsn)
        self.continuity = Continuity(self.admin, config.slot, config.on_gap)

    def setup(self) -> str:
        created = self.admin.create_slot(self.slot, self.plugin)
        tracked = self.continuity.store.ensure()
        note = "" if tracked else f"; continuity not tracked: {self.continuity.store.unavailable}"
        return f"slot {self.slot}: {'created' if created else 'already exists'}{note}"

    def teardown(self) -> str:
        return (
            f"slot {self.slot}: {'dropped' if self.admin.drop_slot(self.slot) else 'did not exist'}"
        )

    def status(self) -> tuple[dict[str, Any], bool]:
        status = self.admin.slot_status(self.slot)
        record = {
            "slot": status.slot,
            "exists": status.exists,
            "active": status.active,
            "active_pid": status.active_pid,
            "confirmed_lsn": status.confirmed_flush_lsn,
            "restart_lsn": status.restart_lsn,
            "wal_retained_bytes": status.retained_bytes,
            "lag_bytes": status.lag_bytes,
            "wal_status": status.wal_status,
        }
        store = self.continuity.store
        marker = None
        try:
            marker = store.read()
        except SourceError as exc:
            store.unavailable = str(exc)
        record["continuity"] = marker_status(marker, store.unavailable)
        return record, status.exists

    def prepare_slot(self, feed: Feed) -> str | None:
        """Before streaming: the continuity check (the gap to answer, or None), then the
        slot, created unless ``create_slot`` is false."""
        gap = self.continuity.check(feed.log, feed.gap)
        if self.config.create_slot:
            if self.admin.create_slot(self.slot, self.plugin):
                feed.log.info("replication slot created", slot=self.slot, plugin=self.plugin)
        elif not self.admin.slot_status(self.slot).exists:
            raise SourceError(
                f"slot {self.slot} does not exist and create_slot is false "
                "(run `invalidator setup`)"
            )
        return gap

    def open(self, feed: Feed) -> Session:
        gap = self.prepare_slot(feed)
        watched = set(feed.rules.tables)
        partitions = self.admin.partitions(watched)
        feed.set_rules(feed.rules.with_partitions(partitions))
        # Partitions created later must not be filtered out by the server: with a
        # partitioned table in the rules, take every table and resolve new names lazily.
        watch_all = bool(partitions) or any(self.admin.table_facts(*t).partitioned for t in watched)
        feed.resolve_partition = PartitionWatcher(self.admin, feed) if watch_all else None
        return LogicalSession(self, feed, None if watch_all else feed.rules.tables, gap)

    def close(self) -> None:
        self.wal.close()


class SlotSession:
    """One START_REPLICATION session on a slot, whatever the plugin: the stream, batches
    through the C hot path (built for the plugin: ``pgoutput``), the acknowledgement
    bookkeeping, status updates, continuity and the lag. Subclasses decode and plan what
    C declines (``_declined``)."""

    pgoutput = False  # the C decoder reads pgoutput messages, not wal2json records

    def __init__(
        self,
        source: LogicalSource,
        feed: Feed,
        options: dict[str, str],
        gap: str | None = None,
        on_notice: Callable[[str, str], None] | None = None,
    ):
        self.source = source
        self.feed = feed
        # A fresh decoder per session: whatever the last one held (an open transaction,
        # unharvested requests of a failed session) is replayed by the server.
        self.hot: HotPath | None = None
        self.hot_version = -1
        self.stream = ReplicationStream(source.dsn, source.slot, options, on_notice)
        start = source.admin.slot_status(source.slot)
        self.tracker = AckTracker(
            lsn_to_int(start.confirmed_flush_lsn) if start.confirmed_flush_lsn else 0
        )
        self.stream.open(0)  # the server resumes at the slot's confirmed position
        self.wal_end = 0
        self.buffered_data = False
        self.hold_until = 0.0
        self.last_status = 0.0
        self.sent_position = self.tracker.confirmed
        self.last_lag = 0.0
        try:
            # The server's WAL end (lag metric, backlog detection): the stream's own walEnd
            # fields only repeat record positions in logical replication.
            self.server_end = source.wal.current()
        except SourceError:
            self.server_end = 0
        # A gap is answered (on_gap) before anything streamed now: each node gets that
        # work first, in order. The marker's pending gap is cleared once it is acknowledged.
        self.gap = gap
        self.gap_work: Txn | None = None
        if gap is not None:
            self.gap_work = Txn(committed=True)
            feed.answer_gap(source.config.on_gap, gap, self.gap_work)
        else:
            source.continuity.resolved(self.tracker.confirmed)
        feed.streaming(
            slot=source.slot,
            plugin=source.plugin,
            tables=len(feed.rules.tables),
            resume_lsn=start.confirmed_flush_lsn,
        )

    # -- reading --------------------------------------------------------------------------

    def read(self, ready: bool, now: float) -> None:
        if not ready:
            return
        hot = self._decoder()
        limit = READ_BATCH_BACKLOG if self.buffered_data else READ_BATCH
        raw = self.stream.read_raw(limit)
        # A full batch may leave messages in libpq's buffer, which the socket will not
        # signal again: read again on the next turn without waiting.
        self.buffered_data = len(raw) == limit
        self._feed(hot, raw)
        decoder = hot.decoder
        self.wal_end = max(self.wal_end, decoder.wal_end)
        if decoder.take_reply_requested():
            self.last_status = 0.0
        if not self.buffered_data and self.server_end - decoder.position > BACKLOG_BYTES:
            self.hold_until = now + BACKLOG_COALESCE

    def _decoder(self) -> HotPath:
        feed = self.feed
        if self.hot is None or self.hot_version != feed.version:
            previous = self.hot
            if previous is not None:
                self._take_counts(previous)
            hot = HotPath(feed.rules, feed.placements(), pgoutput=self.pgoutput)
            hot.carry_over(previous)
            self._prime(hot)
            self.hot = hot  # even with no table of its own: it tracks B/C for Python
            self.hot_version = feed.version
        return self.hot

    def _prime(self, hot: HotPath) -> None:
        """Tell a new C decoder what the stream said before it existed (none by default)."""

    def _feed(self, hot: HotPath, raw: list[Any]) -> None:
        """Run a batch through the C decoder; what it declines goes through ``plan()``,
        after the decoder's work so far (so per-node order is kept)."""
        feed_many = hot.decoder.feed_many
        i = 0
        end = len(raw)
        while i < end:
            i = feed_many(raw, i)
            if i == end:
                break
            self._harvest(hot)
            try:
                message = parse_message(raw[i])
            except ProtocolError as exc:
                raise SourceError(f"replication protocol: {exc}") from None
            if type(message) is XLogData:
                self._declined(hot, message)
            i += 1
        self._harvest(hot)

    def _harvest(self, hot: HotPath) -> None:
        """The decoder's requests and commits since the last harvest become one unit of
        work: confirmable up to its last commit once every node acknowledged it."""
        requests, commits, open_work = hot.decoder.harvest()
        if not requests and not commits:
            return
        tracker = self.tracker
        unit = tracker.begin()
        slots = hot.slots
        batch_ops = hot.batch_ops
        submit = self.feed.submit_batch
        for index, blob, count in requests:
            submit(slots[index].node, batch_ops[index], blob, count, unit)
        times = tuple(t for _, t in commits if t is not None)
        tracker.commit(
            unit,
            commits[-1][0] if commits else 0,
            # A transaction still streaming has no commit time: never "before a restart".
            None if open_work or len(times) < len(commits) else max(times, default=None),
        )
        unit.commit_times = times

    def _feed_declined(
        self,
        hot: HotPath,
        events: Iterable[object],
        unit: Txn,
        commit_at: Callable[[Commit], tuple[int, float | None]],
    ) -> None:
        """What C declined, decoded: rows go to ``plan()``, BEGIN/COMMIT keep C's idea of
        the open transaction; ``unit`` closes at the commit's end LSN, or at 0 inside a
        transaction (it then learns that transaction's commit from the tracker)."""
        for event in events:
            if isinstance(event, Change):
                self.feed.on_change(event, unit)
            elif isinstance(event, Begin):
                hot.declined_begin()
            elif isinstance(event, Commit):
                hot.declined_commit()
                self.tracker.commit(unit, *commit_at(event))
                return
        self.tracker.commit(unit, 0, None)

    def _declined(self, hot: HotPath, message: XLogData) -> None:
        """A message C left to Python: decode it, plan it, account it (per plugin)."""
        raise NotImplementedError

    def _take_counts(self, hot: HotPath) -> None:
        for index, kind, count in hot.decoder.counts():
            self.feed.count_changes(hot.tables[index], kind, count)

    def take_counts(self) -> None:
        if self.hot is not None:
            self._take_counts(self.hot)

    @property
    def in_transaction(self) -> bool:
        """A transaction is open (its commit not seen yet): never confirm the WAL end."""
        return self.hot is not None and self.hot.in_transaction

    def fileno(self) -> int:
        return self.stream.fileno()

    def may_read(self, now: float) -> bool:
        return now >= self.hold_until

    def buffered(self) -> bool:
        return self.buffered_data

    # -- acknowledging --------------------------------------------------------------------

    def after_turn(self, now: float) -> float:
        tracker = self.tracker
        finished = tracker.advance()
        if finished:
            self.feed.acknowledged(commit_times(finished))
        # Never confirm the server's WAL end inside a transaction (its commit may lie
        # before that end): only when nothing is open or pending.
        continuity = self.source.continuity
        continuity.worked(tracker.confirmed)
        if not self.in_transaction and tracker.pending == 0 and self.wal_end:
            tracker.idle_advance(self.wal_end)
        gap_work = self.gap_work
        if gap_work is not None and gap_work.outstanding <= 0:
            self.gap_work = None
            continuity.resolved(tracker.confirmed)
            self.feed.log.info("gap answered; continuity restored", reason=self.gap)
        # The marker's horizon moves before the slot does: a slot found past it later was
        # moved by someone else. (A pending gap stays pending in the marker meanwhile.)
        confirmable = continuity.allowed(now, tracker.confirmed, self.wal_end)
        moved = confirmable != self.sent_position
        if (moved and now - self.last_status >= STATUS_MIN_GAP) or (
            now - self.last_status >= STATUS_INTERVAL
        ):
            self.stream.send_status(confirmable)
            self.sent_position = confirmable
            self.last_status = now
            moved = False
        if now - self.last_lag >= LAG_INTERVAL:
            self.last_lag = now
            try:
                self.server_end = self.source.wal.current()
            except SourceError as exc:
                self.feed.log.warning("lag unknown", error=str(exc))
        wait = max(0.0, self.hold_until - now) if now < self.hold_until else STATUS_INTERVAL
        if moved:
            # A status update deferred by the rate limit is due soon: wake for it.
            wait = min(wait, max(0.0, self.last_status + STATUS_MIN_GAP - now))
        return wait

    def progress(self) -> tuple[int, int]:
        self.take_counts()
        return self.tracker.confirmed, max(self.server_end, self.wal_end)

    def close(self) -> None:
        try:
            if self.tracker.confirmed:
                self.tracker.advance()
                confirmable = self.source.continuity.allowed(
                    time.monotonic(), self.tracker.confirmed, self.wal_end, force=True
                )
                self.stream.send_status(confirmable)
        except SourceError:
            pass
        finally:
            self.take_counts()
            self.stream.close()


class LogicalSession(SlotSession):
    """A wal2json session: batches through the C hot path, the rest through ``plan()``."""

    def __init__(
        self,
        source: LogicalSource,
        feed: Feed,
        tables: Iterable[TableName] | None,
        gap: str | None = None,
    ):
        super().__init__(source, feed, stream_options(tables), gap, self._notice)

    def _declined(self, hot: HotPath, message: XLogData) -> None:
        """A record C left to Python: a unit of its own (C consumes every well-formed B
        and C, so this is a row, a TRUNCATE, a message, or a record to report)."""
        unit = self.tracker.begin()
        try:
            event = decode_v2(message.payload)
        except DecodeError as exc:
            # Never confirm past a record we could not read: stop this session loudly.
            raise SourceError(
                f"undecodable wal2json record at {message.data_start:X}: {exc}"
            ) from None
        self._feed_declined(
            hot,
            (event,),
            unit,
            lambda commit: (message.data_start, parse_timestamp(commit.timestamp or "")),
        )

    def _notice(self, severity: str, message: str) -> None:
        """wal2json reports dropped changes only as notices: count and log them."""
        match = _NO_IDENTITY.search(message)
        if match is None:
            self.feed.log.info("server notice", severity=severity, message=message)
            return
        table = (match["schema"].replace('""', '"'), match["table"].replace('""', '"'))
        for rule in self.feed.rules.rules_for(*table):
            self.feed.report(
                SkippedKey(
                    rule.index,
                    ".".join(table),
                    "*",
                    f"wal2json dropped an {match['op']}: the table has no replica identity "
                    "(ALTER TABLE ... REPLICA IDENTITY FULL, or add a primary key)",
                    kind="identity",
                )
            )
