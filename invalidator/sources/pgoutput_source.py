"""The pgoutput source: PostgreSQL's built-in plugin, on every managed PostgreSQL.

The slot, continuity, acknowledgement and idle advance are the wal2json source's
(``logical.SlotSession``); what differs is the publication (``publication.py``), kept in
step with the rules before every session, and the decoding: each XLogData payload goes
through ``pgoutput.PgOutputDecoder`` and ``plan()``, one ``Txn`` per transaction,
confirmable at its commit's end LSN once every node acknowledged its work. Protocol
version 1 is requested, without ``streaming`` (a large transaction is sent at its commit,
as wal2json sends it) and without ``messages`` (no rule reads them).
"""

from __future__ import annotations

from typing import Any

from invalidator.config import SourceConfig
from invalidator.core.changes import Begin, Change, Commit, int_to_lsn
from invalidator.core.rules import RuleSet
from invalidator.core.tracker import Txn
from invalidator.errors import DecodeError, SourceError
from invalidator.sources.base import Feed, Session
from invalidator.sources.logical import (
    BACKLOG_BYTES,
    BACKLOG_COALESCE,
    READ_BATCH,
    READ_BATCH_BACKLOG,
    LogicalSource,
    SlotSession,
)
from invalidator.sources.pgoutput import PgOutputDecoder
from invalidator.sources.publication import Publication, qualified
from invalidator.sources.replication import Keepalive, ProtocolError, parse_message

PLUGIN = "pgoutput"
PROTO_VERSION = "1"


def stream_options(publication: str) -> dict[str, str]:
    """START_REPLICATION options for pgoutput (names are [a-z0-9_]: no quoting needed)."""
    return {"proto_version": PROTO_VERSION, "publication_names": publication}


class PgOutputSource(LogicalSource):
    """``source.kind: pgoutput``: a publication of the rules' tables and a pgoutput slot."""

    kind = "pgoutput"
    plugin = PLUGIN

    def __init__(self, config: SourceConfig, dsn: str, rules: RuleSet):
        super().__init__(config, dsn)
        self.rules = rules
        self.publication = Publication(self.admin, config.publication_name)
        self.target = f"slot {config.slot}, publication {config.publication_name}"

    def setup(self) -> str:
        # The publication first: a slot decodes with the catalogue as of each change, and a
        # publication created after the slot is unknown to changes decoded before it.
        published = self.publication.sync(self.rules)
        return f"{published}\n{super().setup()}"

    def teardown(self) -> str:
        slot = super().teardown()
        dropped = self.publication.drop()
        state = "dropped" if dropped else "did not exist"
        return f"{slot}\npublication {self.publication.name}: {state}"

    def status(self) -> tuple[dict[str, Any], bool]:
        record, usable = super().status()
        published = self.publication.read()
        record["publication"] = {
            "name": self.publication.name,
            "exists": published.exists,
            "tables": {
                qualified(name): list(columns) if columns is not None else None
                for name, columns in sorted(published.tables.items())
            },
        }
        return record, usable and published.exists

    def open(self, feed: Feed) -> Session:
        done = self.publication.sync(feed.rules)
        if not done.endswith("in step with the rules"):
            feed.log.info("publication changed", detail=done)
        gap = self.prepare_slot(feed)
        feed.resolve_partition = None  # partitions are published as their root
        return PgOutputSession(self, feed, gap)


class PgOutputSession(SlotSession):
    """One START_REPLICATION session of the pgoutput plugin, decoded in Python."""

    def __init__(self, source: PgOutputSource, feed: Feed, gap: str | None = None):
        # A fresh decoder per session: the server announces every relation again.
        self.decoder = PgOutputDecoder()
        self.txn: Txn | None = None
        self.position = 0
        super().__init__(source, feed, stream_options(source.publication.name), gap)

    @property
    def in_transaction(self) -> bool:
        return self.decoder.in_transaction

    def read(self, ready: bool, now: float) -> None:
        if not ready:
            return
        limit = READ_BATCH_BACKLOG if self.buffered_data else READ_BATCH
        raw = self.stream.read_raw(limit)
        # A full batch may leave messages in libpq's buffer, which the socket will not
        # signal again: read again on the next turn without waiting.
        self.buffered_data = len(raw) == limit
        decode = self.decoder.decode
        on_change = self.feed.on_change
        tracker = self.tracker
        for data in raw:
            try:
                message = parse_message(data)
            except ProtocolError as exc:
                raise SourceError(f"replication protocol: {exc}") from None
            if isinstance(message, Keepalive):
                self.wal_end = max(self.wal_end, message.wal_end)
                if message.reply_requested:
                    self.last_status = 0.0
                continue
            self.position = message.data_start
            self.wal_end = max(self.wal_end, message.wal_end)
            try:
                events = decode(message.payload, message.data_start)
            except DecodeError as exc:
                # Never confirm past a message we could not read: stop this session loudly.
                raise SourceError(
                    f"undecodable pgoutput message at {int_to_lsn(message.data_start)}: {exc}"
                ) from None
            for event in events:
                if isinstance(event, Change):
                    txn = self.txn
                    if txn is None:
                        txn = self.txn = tracker.begin()
                    on_change(event, txn)
                elif isinstance(event, Begin):
                    self.txn = tracker.begin()
                elif isinstance(event, Commit):
                    txn = self.txn if self.txn is not None else tracker.begin()
                    tracker.commit(txn, self.decoder.commit_end, self.decoder.commit_time)
                    self.txn = None
        if not self.buffered_data and self.server_end - self.position > BACKLOG_BYTES:
            self.hold_until = now + BACKLOG_COALESCE
