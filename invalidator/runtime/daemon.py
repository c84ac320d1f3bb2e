"""``invalidator run``: stream changes, apply their cache work, confirm only what is done.

One thread, one selector over the replication socket and every memcached node's socket.
Each transaction's operations are sent as its records stream in (a 1,000,000-row
transaction is never held in memory: the in-flight window throttles reading instead), and
several transactions' work is in flight per node at once. The position confirmed to
PostgreSQL is the end of the newest transaction whose operations — and those of every
older transaction — memcached has acknowledged (``tracker.AckTracker``).

Shutdown (SIGTERM/SIGINT, e.g. Kubernetes' terminationGracePeriodSeconds): stop reading,
finish in-flight work for up to ``drain_timeout`` seconds, confirm, return.
"""

from __future__ import annotations

import contextlib
import gc
import re
import selectors
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
import psycopg

from invalidator.config import Config
from invalidator.config.rules import compile_rules
from invalidator.core.changes import Begin, Change, Commit, Event, lsn_to_int
from invalidator.core.fastpath import FastPlanner, fast_planners
from invalidator.core.operations import Operation, SkippedKey
from invalidator.core.placement import GracePlacement, Rendezvous, node_name, parse_server
from invalidator.core.redelete import RedeleteScheduler
from invalidator.core.rules import TableName, plan
from invalidator.core.tracker import AckTracker, Txn
from invalidator.errors import DecodeError, SourceError
from invalidator.hotpath import HotPath
from invalidator.runtime.discovery import DiscoveryError, Member, resolve
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.skips import SkipReporter
from invalidator.sinks.memcached.channel import FLUSH_OP, Entry, NodeChannel
from invalidator.sinks.memcached.client import Router
from invalidator.sources import outbox
from invalidator.sources.postgres import (
    Admin,
    ReplicationStream,
    SlotBusyError,
    ValueQueries,
    WalPosition,
    source_error,
    stream_options,
)
from invalidator.sources.replication import Keepalive, ProtocolError, XLogData, parse_message
from invalidator.sources.wal2json import decode_v2

NODE_WINDOW = 50_000  # a healthy node's queued + in-flight operations before reading pauses
STATUS_INTERVAL = 10.0  # below the default wal_sender_timeout (60 s) / 2
STATUS_MIN_GAP = 0.1  # rate limit for status updates sent because the position moved
RECONNECT_MIN = 0.2
RECONNECT_MAX = 10.0
SLOT_BUSY_RETRY = 1.0  # how often a standby replica tries to take the slot over
OUTBOX_POLL = 1.0  # drain the outbox at least this often, notification or not
OUTBOX_BATCH = 2_000
OUTBOX_IN_FLIGHT = 20_000  # outbox rows read but not yet deleted
SKIP_LOG_EVERY = 60.0
_ROW_ACTIONS = {b"I": "insert", b"U": "update", b"D": "delete"}
# wal2json: WARNING:  no tuple identifier for UPDATE in table "public"."events"
_NO_IDENTITY = re.compile(
    r"no tuple identifier for (?P<op>\w+) in table "
    r'"(?P<schema>(?:[^"]|"")*)"\."(?P<table>(?:[^"]|"")*)"'
)
READ_BATCH = 256  # replication messages per loop turn when caught up: bounds how long the
# first one waits for its deletes to be written (256 x ~1 us), yet amortises the loop
READ_BATCH_BACKLOG = 4096  # after a full read (a backlog): fewer turns, larger writes
# Far behind the server's WAL, a read that found few messages waits this long before the
# next one: latency is the backlog's anyway, and a loop turn per handful of messages costs
# the CPU that PostgreSQL's decoding (on the same machine) needs to catch up.
BACKLOG_BYTES = 1 << 20
BACKLOG_COALESCE = 0.001
PUBLISH_INTERVAL = 0.25  # metrics are tallied locally and published on this period
LAG_INTERVAL = 1.0  # how often the server's WAL position is read for the lag metric


@dataclass(slots=True)
class Health:
    """What /healthz and /readyz report; written by the loop, read by the HTTP thread."""

    streaming: bool = False
    last_loop: float = field(default_factory=time.monotonic)
    last_error: str = ""
    confirmed_lsn: str = ""


def _parse(data: Any) -> XLogData | Keepalive:
    try:
        return parse_message(data)
    except ProtocolError as exc:
        raise SourceError(f"replication protocol: {exc}") from None


def _decode(message: XLogData) -> Event:
    try:
        return decode_v2(message.payload)
    except DecodeError as exc:
        # Never confirm past a record we could not read: stop this session loudly.
        raise SourceError(f"undecodable wal2json record at {message.data_start:X}: {exc}") from None


def commit_epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


class Daemon:
    """The streaming loop with reconnects; ``run()`` returns when asked to stop."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics,
        log: Any,
        health: Health | None = None,
        drain_timeout: float = 5.0,
    ):
        if config.source.dsn is None:
            raise SourceError("no database: set source.dsn or INVALIDATOR_DSN")
        self.config = config
        self.dsn = config.source.dsn.get_secret_value()
        self.slot = config.source.slot
        self.metrics = metrics
        self.log = log
        self.health = health or Health()
        self.drain_timeout = drain_timeout
        self.rules = compile_rules(config)
        self.router = Router(config.pools)
        self.channels: dict[str, NodeChannel] = {}
        for pool in config.pools.values():
            for server in pool.servers:
                self._ensure_channel(node_name(server), parse_server(server), pool.max_queue)
        self._discovered: dict[str, list[Member]] = {}
        self._next_discovery = 0.0
        self.stopping = False
        self._standing_by = False
        self._node_logged: dict[str, tuple[float, int]] = {}
        self._deadline = 0.0
        self.skips = SkipReporter(metrics, log, every=SKIP_LOG_EVERY)
        self._unknown_tables: dict[TableName, TableName | None] = {}
        self._watch_partitions = False
        self._fast: dict[TableName, FastPlanner] = {}
        self._hot: HotPath | None = None  # the C decoder; rebuilt when rules or nodes change
        self._hot_dirty = True
        self._redeletes = RedeleteScheduler()
        self._admin = Admin(self.dsn)
        self._wal = WalPosition(self.dsn)
        self._values = ValueQueries(self.dsn)
        self._op_results: Tally[tuple[str, str, str]] = Tally()
        self._changes: Tally[tuple[str, str]] = Tally()

    def _ensure_channel(self, node: str, address: tuple[str, int], max_queue: int) -> None:
        channel = self.channels.get(node)
        if channel is None:
            self.channels[node] = NodeChannel(
                node,
                address,
                on_error=self._node_error,
                on_event=self._node_event,
                max_queue=max_queue,
            )
            self.router.addresses[node] = address
            return
        channel.max_queue = min(channel.max_queue, max_queue)
        if channel.address != address:
            # The pod behind the stable name moved: reconnect to its new address.
            channel.address = address
            self.router.addresses[node] = address
            channel.close()

    # -- discovery ------------------------------------------------------------------------

    def _discover(self, *, initial: bool) -> None:
        """Resolve every discovered pool; on a change rebuild placement (with a grace period
        on the old owners). Initially a failure is fatal for this attempt; later the last
        known membership is kept."""
        now = time.monotonic()
        every = []
        for name, pool in self.config.pools.items():
            if pool.discover is None:
                continue
            every.append(pool.discover.every)
            try:
                members = resolve(pool.discover.srv, pool.discover.nameservers)
            except DiscoveryError as exc:
                if initial and name not in self._discovered:
                    raise SourceError(str(exc)) from None
                self.log.warning(
                    "discovery failed; keeping the last membership", pool=name, error=str(exc)
                )
                continue
            if not members:
                self.log.warning(
                    "discovery found no nodes; keeping the last membership",
                    pool=name,
                    srv=pool.discover.srv,
                )
                if initial and name not in self._discovered:
                    raise SourceError(f"discover {pool.discover.srv}: no nodes")
                continue
            self._apply_membership(name, members, pool.discover.grace, now)
        for pool_name, placement in list(self.router.placements.items()):
            if isinstance(placement, GracePlacement) and placement.expired:
                self.router.placements[pool_name] = placement.new
                self._hot_dirty = True
        self._next_discovery = now + (min(every) if every else float("inf"))

    def _apply_membership(self, pool: str, members: list[Member], grace: float, now: float) -> None:
        if self._discovered.get(pool) == members:
            return
        config = self.config.pools[pool]
        previous = self._discovered.get(pool)
        self._discovered[pool] = members
        for member in members:
            self._ensure_channel(member.name, member.address, config.max_queue)
        new = Rendezvous([m.name for m in members], config.fallback_depth)
        old = self.router.placements.get(pool)
        if isinstance(old, GracePlacement):
            old = old.new
        self.router.placements[pool] = (
            GracePlacement(new, old, now + grace) if old is not None else new
        )
        self._hot_dirty = True
        names = {m.name for m in members}
        used = {n for p in self.router.placements.values() for n in p.nodes}
        for node in [n for n in self.channels if n not in used]:
            # Removed from every pool: whatever it held is no longer read by anyone.
            channel = self.channels.pop(node)
            dropped = channel.drop_all()
            channel.close()
            self.router.addresses.pop(node, None)
            self.log.info("memcached node removed", node=node, dropped_operations=dropped)
        self.log.info(
            "pool membership",
            pool=pool,
            nodes=sorted(names),
            previous=sorted(m.name for m in previous) if previous else None,
            grace_seconds=grace if old is not None else None,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self.stopping:
            self._deadline = time.monotonic() + self.drain_timeout
        self.stopping = True

    def run(self) -> int:
        # What exists now (modules, config, rules) lives as long as the process: keep it out
        # of every collection.
        gc.freeze()
        delay = RECONNECT_MIN
        while not self.stopping:
            try:
                if self.config.source.kind == "notify":
                    self._discover(initial=True)
                    self._stream_outbox()
                else:
                    self._prepare()
                    self._stream()
                delay = RECONNECT_MIN
            except SlotBusyError as exc:
                # Another replica streams this slot: stand by and take over promptly.
                self._standby(str(exc))
                self._sleep(SLOT_BUSY_RETRY)
                delay = RECONNECT_MIN
            except SourceError as exc:
                self.health.streaming = False
                self.health.last_error = str(exc)
                self.metrics.up.set(0)
                if self.stopping:
                    break
                self.log.warning(
                    "source unavailable; retrying", error=str(exc), retry_in=round(delay, 2)
                )
                self._sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
        self._drain_nodes(self.drain_timeout)
        for channel in self.channels.values():
            channel.close()
        self._wal.close()
        self._values.close()
        self.metrics.up.set(0)
        self.health.streaming = False
        return 0

    def _stream_outbox(self) -> None:
        """The LISTEN/NOTIFY source: drain the outbox, delete rows once acknowledged.

        Wakes on a notification or every OUTBOX_POLL seconds (notifications can be missed,
        e.g. while disconnected). LISTEN needs a session connection: not a transaction-
        pooling PgBouncer."""
        try:
            listen = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            work = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise source_error("cannot connect for the outbox", exc) from None
        selector = selectors.DefaultSelector()
        registered: dict[str, tuple[Any, int]] = {}
        rows: dict[int, tuple[Txn, float]] = {}  # outbox id → its work, trigger time
        cursor = (0, 0)
        try:
            outbox.numeric_exact(work)
            if self.config.source.create_slot:
                added, removed = outbox.install(work, self.rules)
                if added or removed:
                    self.log.info("outbox triggers", added=added or None, removed=removed or None)
            listen.execute(f"LISTEN {outbox.CHANNEL}")
            self._watch_partitions = True  # partitions report their own names
            self._build_fast_planners()
            self.health.streaming = True
            self.health.last_error = ""
            self.metrics.up.set(1)
            self.log.info(
                "draining the outbox", tables=len(self.rules.tables), nodes=len(self.channels)
            )
            selector.register(listen.pgconn.socket, selectors.EVENT_READ, None)
            last_fetch = last_delete = last_publish = 0.0
            woken = True
            while True:
                now = time.monotonic()
                self.health.last_loop = now
                if now >= self._next_discovery:
                    self._discover(initial=False)
                for channel in self.channels.values():
                    channel.check_timeout(now)
                pending = sum(c.pending for c in self.channels.values())
                if self.stopping and (pending == 0 or now > self._deadline):
                    break
                due = woken or now - last_fetch >= OUTBOX_POLL
                if due and not self.stopping and len(rows) < OUTBOX_IN_FLIGHT:
                    woken = False
                    last_fetch = now
                    batch = outbox.fetch(work, cursor, OUTBOX_BATCH)
                    for row in batch:
                        txn = Txn(committed=True)
                        self._on_change(row.change, txn)
                        rows[row.id] = (txn, row.created)
                        cursor = (row.txid, row.id)
                    woken = len(batch) == OUTBOX_BATCH  # more is waiting: no need to wait
                self._register_nodes(selector, registered, now)
                timeout = (
                    0.0
                    if woken or any(c.wants_write for c in self.channels.values())
                    else min(0.05, OUTBOX_POLL)
                )
                for key, events in selector.select(timeout):
                    channel = key.data
                    if channel is None:
                        listen.pgconn.consume_input()
                        while listen.pgconn.notifies() is not None:
                            woken = True
                        continue
                    if events & selectors.EVENT_READ:
                        self._complete(channel.on_readable())
                    if events & selectors.EVENT_WRITE:
                        channel.on_writable()
                turn = time.monotonic()
                self._write_ready(turn)
                if rows and (turn - last_delete >= 0.02 or len(rows) >= OUTBOX_IN_FLIGHT):
                    last_delete = turn
                    done = [i for i, (txn, _) in rows.items() if txn.outstanding <= 0]
                    if done:
                        outbox.delete(work, done)  # only now: their work is acknowledged
                        wall = time.time()
                        for i in done:
                            self.metrics.commit_to_ack.observe(max(0.0, wall - rows.pop(i)[1]))
                if turn - last_publish >= PUBLISH_INTERVAL:
                    last_publish = turn
                    self._publish(0, 0)
        except psycopg.Error as exc:
            raise source_error("outbox connection failed", exc) from None
        finally:
            selector.close()
            for conn in (listen, work):
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            self.health.streaming = False

    def _standby(self, reason: str) -> None:
        if not self._standing_by:
            self.log.info(
                "slot busy: another replica is streaming; standing by",
                slot=self.slot,
                detail=reason,
            )
        self._standing_by = True
        self.health.streaming = False
        self.health.last_error = f"standby: slot {self.slot} is streamed by another process"
        self.metrics.up.set(0)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            self._service_nodes(min(0.05, end - time.monotonic()))
            self.health.last_loop = time.monotonic()

    def _prepare(self) -> None:
        self._discover(initial=True)
        if self.config.source.create_slot:
            if self._admin.create_slot(self.slot):
                self.log.info("replication slot created", slot=self.slot)
        elif not self._admin.slot_status(self.slot).exists:
            raise SourceError(
                f"slot {self.slot} does not exist and create_slot is false "
                "(run `invalidator setup`)"
            )
        watched = set(self.rules.tables)
        partitions = self._admin.partitions(watched)
        self.rules = self.rules.with_partitions(partitions)
        # Partitions created later must not be filtered out by the server: with a
        # partitioned table in the rules, take every table and resolve new names lazily.
        self._watch_partitions = bool(partitions) or any(
            self._admin.table_facts(*t).partitioned for t in watched
        )
        self._unknown_tables.clear()
        self._build_fast_planners()

    # -- the stream -----------------------------------------------------------------------

    def _stream(self) -> None:
        tables = None if self._watch_partitions else self.rules.tables
        stream = ReplicationStream(self.dsn, self.slot, stream_options(tables), self._notice)
        start = self._admin.slot_status(self.slot)
        tracker = AckTracker(
            lsn_to_int(start.confirmed_flush_lsn) if start.confirmed_flush_lsn else 0
        )
        stream.open(0)  # the server resumes at the slot's confirmed position
        # A fresh decoder per session: whatever the last one held (an open transaction,
        # unharvested requests of a session that failed) is replayed by the server.
        if self._hot is not None:
            self._take_hot_counts(self._hot)
        self._hot = None
        self._hot_dirty = True
        if self._standing_by:
            self.log.info("took over the slot", slot=self.slot)
            self._standing_by = False
        self.health.streaming = True
        self.health.last_error = ""
        self.metrics.up.set(1)
        self.log.info(
            "streaming",
            slot=self.slot,
            tables=len(self.rules.tables),
            nodes=len(self.channels),
            resume_lsn=start.confirmed_flush_lsn,
        )
        selector = selectors.DefaultSelector()
        pg_fd = stream.fileno()
        pg_registered = False
        registered: dict[str, tuple[Any, int]] = {}
        wal_end = 0
        last_status = 0.0
        last_publish = 0.0
        last_lag = time.monotonic()
        # The server's WAL end (the lag metric, backlog detection): the stream's own walEnd
        # fields only repeat record positions in logical replication.
        try:
            server_end = self._wal.current()
        except SourceError:
            server_end = 0
        pg_buffered = False
        hold_until = 0.0  # backlog coalescing: pg is not read before this
        sent_position = tracker.confirmed
        try:
            while True:
                now = time.monotonic()
                self.health.last_loop = now
                if now >= self._next_discovery:
                    self._discover(initial=False)
                if self._redeletes:
                    for pool, node, cache_key in self._redeletes.pop_due(now):
                        self._send_redelete(pool, node, cache_key)
                for channel in self.channels.values():
                    channel.check_timeout(now)
                pending = sum(c.pending for c in self.channels.values())
                # Only a healthy node's full window pauses reading: an unreachable node's
                # queue is bounded by its own overflow (flush_all on return) instead.
                want_pg = (
                    not self.stopping
                    and now >= hold_until
                    and all(c.pending < NODE_WINDOW for c in self.channels.values() if c.healthy)
                )
                if want_pg != pg_registered:
                    if want_pg:
                        selector.register(pg_fd, selectors.EVENT_READ, None)
                    else:
                        selector.unregister(pg_fd)
                    pg_registered = want_pg
                if self.stopping and (pending == 0 or now > self._deadline):
                    break
                self._register_nodes(selector, registered, now)
                timeout = 0.0 if any(c.wants_write for c in self.channels.values()) else 0.2
                next_redelete = self._redeletes.next_due() if self._redeletes else None
                if next_redelete is not None:
                    timeout = min(timeout, max(0.0, next_redelete - now))
                if tracker.confirmed != sent_position:
                    # A status update deferred by the rate limit is due soon: wake for it.
                    timeout = min(timeout, max(0.0, last_status + STATUS_MIN_GAP - now))
                if now < hold_until:
                    timeout = min(timeout, hold_until - now)
                if pg_buffered and want_pg:
                    timeout = 0.0
                pg_ready = pg_buffered and want_pg
                for key, events in selector.select(timeout):
                    channel = key.data
                    if channel is None:
                        pg_ready = True
                        continue
                    if events & selectors.EVENT_READ:
                        self._complete(channel.on_readable())
                    if events & selectors.EVENT_WRITE:
                        channel.on_writable()
                if pg_ready:
                    if self._hot_dirty:
                        self._rebuild_hot()
                    limit = READ_BATCH_BACKLOG if pg_buffered else READ_BATCH
                    raw = stream.read_raw(limit)
                    # A full batch may leave messages in libpq's buffer, which the socket
                    # will not signal again: read again on the next turn without waiting.
                    pg_buffered = len(raw) == limit
                    hot = self._hot
                    assert hot is not None
                    self._feed_hot(hot, raw, tracker)
                    wal_end = max(wal_end, hot.decoder.wal_end)
                    if hot.decoder.take_reply_requested():
                        last_status = 0.0
                    if not pg_buffered and server_end - hot.decoder.position > BACKLOG_BYTES:
                        hold_until = time.monotonic() + BACKLOG_COALESCE
                turn = time.monotonic()
                self._write_ready(turn)
                finished = tracker.advance()
                if finished:
                    self._observe_latency(finished)
                # Never confirm the server's WAL end inside a transaction (its commit may
                # lie before that end): only when nothing is open or pending.
                in_txn = self._hot is not None and self._hot.decoder.in_transaction
                if not in_txn and tracker.pending == 0 and wal_end:
                    tracker.idle_advance(wal_end)
                now = time.monotonic()
                moved = tracker.confirmed != sent_position
                if (moved and now - last_status >= STATUS_MIN_GAP) or (
                    now - last_status >= STATUS_INTERVAL
                ):
                    stream.send_status(tracker.confirmed)
                    sent_position = tracker.confirmed
                    last_status = now
                if now - last_publish >= PUBLISH_INTERVAL:
                    if now - last_lag >= LAG_INTERVAL:
                        last_lag = now
                        try:
                            server_end = self._wal.current()
                        except SourceError as exc:
                            self.log.warning("lag unknown", error=str(exc))
                    self._publish(tracker.confirmed, max(server_end, wal_end))
                    last_publish = now
        finally:
            try:
                if tracker.confirmed:
                    tracker.advance()
                    stream.send_status(tracker.confirmed)
                    self._publish(tracker.confirmed, wal_end)
            except SourceError:
                pass
            selector.close()
            stream.close()
            self.health.streaming = False

    def _rebuild_hot(self) -> None:
        """A new C decoder for the current fast planners and placements (the old one's
        buffers are empty here: they are harvested after every read)."""
        in_transaction = False
        if self._hot is not None:
            self._take_hot_counts(self._hot)
            in_transaction = self._hot.decoder.in_transaction
        hot = HotPath(self._fast, self.router.placements)
        # Rebuilt mid-transaction (a new partition, a membership change): the new decoder
        # must still know a transaction is open, or the idle advance could confirm past it.
        hot.decoder.in_transaction = in_transaction
        self._hot = hot  # even with no table of its own: it tracks B/C for the Python engine
        self._hot_dirty = False

    def _take_hot_counts(self, hot: HotPath) -> None:
        for index, kind, count in hot.decoder.counts():
            self._changes[(hot.tables[index], kind)] += count

    def _feed_hot(self, hot: HotPath, raw: list[Any], tracker: AckTracker) -> None:
        """Run a batch of messages through the C decoder; what it declines goes through the
        Python engine, after the decoder's work so far (so per-node order is kept)."""
        feed_many = hot.decoder.feed_many
        i = 0
        end = len(raw)
        while i < end:
            i = feed_many(raw, i)
            if i == end:
                break
            self._harvest(hot, tracker)
            message = _parse(raw[i])
            if type(message) is XLogData:
                self._on_declined(message, tracker)
            i += 1
        self._harvest(hot, tracker)

    def _harvest(self, hot: HotPath, tracker: AckTracker) -> None:
        """The decoder's requests and commits since the last harvest become one unit of
        work in the tracker: confirmable up to its last commit once every node acked it."""
        requests, commits, open_work = hot.decoder.harvest()
        if not requests and not commits:
            return
        segment = tracker.begin()
        channels = self.channels
        slots = hot.slots
        batch_ops = hot.batch_ops
        for index, blob, count in requests:
            channels[slots[index].node].submit_batch(batch_ops[index], blob, count, segment)
        times = tuple(t for _, t in commits if t is not None)
        tracker.commit(
            segment,
            commits[-1][0] if commits else 0,
            # A transaction still streaming has no commit time: never "before a restart".
            None if open_work or len(times) < len(commits) else max(times, default=None),
        )
        segment.commit_times = times

    def _on_declined(self, message: XLogData, tracker: AckTracker) -> None:
        """A record the C decoder left to Python: its work is a unit of its own (the
        decoder consumes every well-formed B and C record, so this is a row, a TRUNCATE, a
        logical message, or a record to report as undecodable)."""
        segment = tracker.begin()
        if message.payload[11:12] in _ROW_ACTIONS:
            self._on_row(message, segment)
        else:
            # Well-formed B and C records never get here; a B or C that only Python reads
            # still opens or closes the transaction (the idle advance depends on it).
            event = _decode(message)
            if isinstance(event, Change):
                self._on_change(event, segment)
            elif isinstance(event, Begin) and self._hot is not None:
                self._hot.decoder.in_transaction = True
            elif isinstance(event, Commit):
                if self._hot is not None:
                    self._hot.decoder.in_transaction = False
                tracker.commit(segment, message.data_start, commit_epoch(event.timestamp))
                return
        tracker.commit(segment, 0, None)

    def _observe_latency(self, finished: list[Txn]) -> None:
        observe = self.metrics.commit_to_ack.observe
        now = time.time()
        for done in finished:
            if done.commit_times:
                for stamp in done.commit_times:
                    observe(max(0.0, now - stamp))
            elif done.commit_time is not None:
                observe(max(0.0, now - done.commit_time))

    def _write_ready(self, now: float) -> None:
        """Send what is queued on every connected node that is not in a retry delay."""
        for channel in self.channels.values():
            if (
                channel.queue
                and channel.sock is not None
                and not channel.connecting
                and now >= channel.retry_at
            ):
                channel.on_writable()

    def _register_nodes(
        self, selector: selectors.BaseSelector, registered: dict[str, tuple[Any, int]], now: float
    ) -> None:
        # Registered by socket object, unregistering stale entries before registering new
        # ones: a reconnect may reuse a closed socket's fd number.
        wanted: dict[str, tuple[Any, int]] = {}
        for node, channel in self.channels.items():
            if channel.sock is None and channel.pending:
                channel.ensure_connected()
            if channel.sock is not None:
                events = selectors.EVENT_READ
                if channel.wants_write and now >= channel.retry_at:
                    events |= selectors.EVENT_WRITE
                wanted[node] = (channel.sock, events)
        for node, current in list(registered.items()):
            new = wanted.get(node)
            if new is None or new[0] is not current[0] or new[1] != current[1]:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(current[0])
                del registered[node]
        for node, new in wanted.items():
            if node not in registered:
                selector.register(new[0], new[1], self.channels[node])
                registered[node] = new

    def _on_row(self, message: XLogData, txn: Txn) -> None:
        """A row record declined by the C decoder: Python's fast planner, else ``plan``."""
        payload = message.payload
        kind = payload[11:12]  # b'{"action":"X"...'
        if kind in _ROW_ACTIONS and b'"type":"numeric' not in payload:
            try:
                record = orjson.loads(payload)
            except orjson.JSONDecodeError:
                record = {}  # decode_v2 below reports it
            planner = self._fast.get((record.get("schema"), record.get("table")))
            if planner is not None:
                change_kind = _ROW_ACTIONS[kind]
                pairs = planner.keys(record, change_kind)
                if pairs is not None:
                    self._changes[(planner.table, change_kind)] += 1
                    self._submit_deletes(pairs, planner.table, txn, planner.redelete)
                    return
        event = _decode(message)
        if isinstance(event, Change):
            self._on_change(event, txn)

    def _on_change(self, change: Change, txn: Txn) -> None:
        self._changes[(change.qualified_table, change.kind)] += 1
        if self._watch_partitions and not self.rules.rules_for(change.schema, change.table):
            self._resolve_partition((change.schema, change.table))
        result = plan(change, self.rules)
        for skipped in result.skipped:
            self.skips.report(skipped)
        if not result.operations:
            return
        channels = self.channels
        rules = self.rules.rules
        now = time.monotonic()
        operations = result.operations
        if any(op.op == "refresh" and op.value is None for op in operations):
            operations = tuple(self._query_value(op, change) for op in operations)
        for routed in self.router.route(operations):
            op = routed.operation
            channels[routed.node].submit(op, txn)
            delay = rules[op.rule].redelete
            if delay and op.op == "delete":
                self._schedule_redelete((op.pool, routed.node, op.key), now + delay, op.table)

    def _query_value(self, op: Operation, change: Change) -> Operation:
        """Fill a query refresh's value; no row (or a failing query) becomes a delete."""
        query = self.rules.rules[op.rule].value_query
        if op.op != "refresh" or op.value is not None or query is None:
            return op
        try:
            value = self._values.value(query, change.new or {})
        except SourceError as exc:
            self.log.warning(
                "refresh query failed; deleting instead",
                rule=op.rule,
                table=op.table,
                error=str(exc),
            )
            value = None
        if value is None:
            return replace(op, op="delete", value=None, ttl=None)
        return replace(op, value=value)

    def _submit_deletes(
        self, pairs: list[tuple[str, str]], table: str, txn: Txn, redelete: float | None
    ) -> None:
        placements = self.router.placements
        channels = self.channels
        due = time.monotonic() + redelete if redelete else 0.0
        for pool, key in pairs:
            op = Operation("delete", key, pool, table)
            key_bytes = key.encode()
            placement = placements[pool]
            if isinstance(placement, Rendezvous) and not placement.fallback_depth:
                nodes: tuple[str, ...] = (placement.owner(key),)
            else:
                nodes = placement.owners(key)
            for node in nodes:
                channels[node].submit_delete(op, key_bytes, txn)
                if redelete:
                    self._schedule_redelete((pool, node, key), due, table)

    def _schedule_redelete(self, target: tuple[str, str, str], due: float, table: str) -> None:
        for pool, node, key in self._redeletes.schedule(target, due):
            self._send_redelete(pool, node, key, table)

    def _send_redelete(self, pool: str, node: str, key: str, table: str = "") -> None:
        channel = self.channels.get(node)
        if channel is not None and channel.submit_redelete(
            Operation("delete", key, pool, table or "redelete")
        ):
            self._op_results[(pool, "redelete", "sent")] += 1

    def _build_fast_planners(self) -> None:
        """Compile a FastPlanner for every table (and partition alias) with delete rules."""
        self._fast = fast_planners(self.rules)
        self._hot_dirty = True

    def _resolve_partition(self, name: TableName) -> None:
        if name in self._unknown_tables:
            return
        rows = (
            self._admin.query(
                "SELECT n.nspname, c.relname FROM pg_partition_ancestors(%s::regclass) a"
                " JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid ="
                " c.relnamespace WHERE a.relid <> %s::regclass",
                (self._regclass(name), self._regclass(name)),
            )
            if self._table_exists(name)
            else []
        )
        parent = next(((s, t) for s, t in rows if (s, t) in self.rules.by_table), None)
        self._unknown_tables[name] = parent
        if parent is not None:
            self.rules.aliases[name] = parent
            if FastPlanner.eligible(self.rules.rules_for(*name)):
                self._fast[name] = FastPlanner(self.rules.rules_for(*name), ".".join(name))
                self._hot_dirty = True
            self.log.info(
                "new partition watched", partition=".".join(name), parent=".".join(parent)
            )

    @staticmethod
    def _regclass(name: TableName) -> str:
        return ".".join('"' + part.replace('"', '""') + '"' for part in name)

    def _table_exists(self, name: TableName) -> bool:
        return bool(
            self._admin.query(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s",
                name,
            )
        )

    def _complete(self, entries: list[Entry]) -> None:
        results = self._op_results
        for entry in entries:
            op = entry.op
            if entry.batch:
                results[(op.pool, "delete", "ok")] += entry.deleted
                if entry.count > entry.deleted:
                    results[(op.pool, "delete", "not_found")] += entry.count - entry.deleted
            elif op is FLUSH_OP:
                results[("*", "flush_all", entry.outcome)] += 1
            else:
                results[(op.pool, op.op, entry.outcome or "ok")] += 1

    def _notice(self, severity: str, message: str) -> None:
        """wal2json reports dropped changes only as notices: count and log them."""
        match = _NO_IDENTITY.search(message)
        if match is None:
            self.log.info("server notice", severity=severity, message=message)
            return
        table = (match["schema"].replace('""', '"'), match["table"].replace('""', '"'))
        rules = self.rules.rules_for(*table)
        for rule in rules or ():
            self.skips.report(
                SkippedKey(
                    rule.index,
                    ".".join(table),
                    "*",
                    f"wal2json dropped an {match['op']}: the table has no replica identity "
                    "(ALTER TABLE ... REPLICA IDENTITY FULL, or add a primary key)",
                    kind="identity",
                )
            )

    def _node_event(self, node: str, event: str, count: int, message: str) -> None:
        if count:
            self._op_results[("*", event, "dropped")] += count
        self.log.warning(
            "memcached node " + event.replace("_", " "),
            node=node,
            operations=count or None,
            detail=message,
        )

    def _node_error(self, node: str, reason: str) -> None:
        # Every error is counted; a node's log lines are limited to one per second (with
        # how many were not logged) so a failing node cannot flood the log.
        self.metrics.memcached_errors.labels(node).inc()
        now = time.monotonic()
        last, suppressed = self._node_logged.get(node, (-1.0, 0))
        if now - last < 1.0:
            self._node_logged[node] = (last, suppressed + 1)
            return
        self._node_logged[node] = (now, 0)
        self.log.warning(
            "memcached node error", node=node, reason=reason, suppressed=suppressed or None
        )

    def _publish(self, confirmed: int, wal_end: int) -> None:
        metrics = self.metrics
        if self._hot is not None:
            self._take_hot_counts(self._hot)
        metrics.confirmed_lsn.set(confirmed)
        if wal_end:
            metrics.replication_lag.set(max(0, wal_end - confirmed))
        for node, channel in self.channels.items():
            metrics.pending.labels(node).set(channel.pending)
        for (pool, op, result), count in self._op_results.items():
            metrics.operations.labels(pool, op, result).inc(count)
        self._op_results.clear()
        for (table, kind), count in self._changes.items():
            metrics.changes.labels(table, kind).inc(count)
        self._changes.clear()
        self.health.confirmed_lsn = f"{confirmed >> 32:X}/{confirmed & 0xFFFFFFFF:X}"

    # -- nodes without a stream -----------------------------------------------------------

    def _service_nodes(self, timeout: float) -> None:
        """Keep memcached work moving while PostgreSQL is away (reconnect backoff)."""
        busy = [c for c in self.channels.values() if c.pending]
        if not busy:
            time.sleep(max(0.0, timeout))
            return
        selector = selectors.DefaultSelector()
        registered: dict[str, tuple[Any, int]] = {}
        try:
            self._register_nodes(selector, registered, time.monotonic())
            for key, events in selector.select(max(0.0, timeout)):
                channel: NodeChannel = key.data
                if events & selectors.EVENT_READ:
                    self._complete(channel.on_readable())
                if events & selectors.EVENT_WRITE:
                    channel.on_writable()
        finally:
            selector.close()

    def _drain_nodes(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while any(c.pending for c in self.channels.values()) and time.monotonic() < end:
            self._service_nodes(0.05)


def install_signal_handlers(
    daemon: Daemon, log: Any, hook: Callable[[int], None] | None = None
) -> None:
    """SIGTERM/SIGINT ask the loop to stop; a second signal is not needed to exit."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        daemon.request_stop()
        if hook is not None:
            hook(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
