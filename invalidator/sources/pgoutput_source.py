"""The pgoutput source: PostgreSQL's built-in plugin, on every managed PostgreSQL.

The slot, the C hot path's batches, continuity, acknowledgement and idle advance are the
wal2json source's (``logical.SlotSession``); what differs is the publication
(``publication.py``), kept in step with the rules before every session, and the decoding:
the C decoder is built for pgoutput, and what it declines goes through
``pgoutput.PgOutputDecoder`` and ``plan()``; each unit is confirmable at its last commit's
end LSN once every node acknowledged its work. Protocol version 1 is requested, without
``streaming`` (a large transaction is sent at its commit, as wal2json sends it) and without
``messages`` (no rule reads them).
"""

from __future__ import annotations

from typing import Any

from invalidator.config import SourceConfig
from invalidator.core.changes import int_to_lsn
from invalidator.core.rules import RuleSet
from invalidator.errors import DecodeError, SourceError
from invalidator.hotpath import HotPath
from invalidator.sources.base import Feed, Session
from invalidator.sources.continuity import PUBLICATION_EXTENDED
from invalidator.sources.logical import LogicalSource, SlotSession
from invalidator.sources.pgoutput import PgOutputDecoder
from invalidator.sources.publication import Publication, qualified
from invalidator.sources.replication import XLogData

PLUGIN = "pgoutput"
# An XLogData header (positions 0) around a stored Relation message, to replay it into C.
RELATION_HEADER = b"w" + bytes(24)
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
        # Partitions are published through their root: a rule on a partition whose root
        # also has rules would never see a change (they arrive under the root's name).
        watched = set(feed.rules.tables)
        shadowed = sorted(
            (part, root) for part, root in self.admin.partitions(watched).items() if part in watched
        )
        if shadowed:
            raise SourceError(
                "; ".join(
                    f"rules on partition {qualified(part)} never match with pgoutput: its "
                    f"changes arrive as {qualified(root)}'s (publish_via_partition_root); "
                    f"write them on {qualified(root)}"
                    for part, root in shadowed
                )
            )
        # What the publication lacks now was never decoded for the slot's changes so far:
        # adding it does not bring them back, so with a slot already there it is a gap.
        lacking = self.publication.lacking(feed.rules)
        if lacking and self.admin.slot_status(self.slot).exists:
            self.continuity.declare(
                PUBLICATION_EXTENDED,
                f"publication {self.publication.name} lacked {'; '.join(lacking)}: changes "
                "the slot holds were decoded without them",
                feed.gap,
            )
        try:
            done = self.publication.sync(feed.rules)
        except SourceError as exc:
            # Not allowed to alter it (only the tables' owner may), but nothing is missing.
            if not self.publication.covers(feed.rules):
                raise
            done = "in step with the rules"
            feed.log.warning(
                "publication left as it is: it cannot be altered, and covers the rules",
                publication=self.publication.name,
                error=str(exc),
            )
        if not done.endswith("in step with the rules"):
            feed.log.info("publication changed", detail=done)
        gap = self.prepare_slot(feed)
        feed.resolve_partition = None  # partitions are published as their root
        return PgOutputSession(self, feed, gap)


class PgOutputSession(SlotSession):
    """One START_REPLICATION session of the pgoutput plugin: batches through the C hot path
    (built for pgoutput), what it declines through the Python decoder and ``plan()``."""

    pgoutput = True

    def __init__(self, source: PgOutputSource, feed: Feed, gap: str | None = None):
        # A fresh decoder per session: the server announces every relation again. C
        # declines every Relation message, so this one learns them all too.
        self.decoder = PgOutputDecoder()
        super().__init__(source, feed, stream_options(source.publication.name), gap)

    def _prime(self, hot: HotPath) -> None:
        """A C decoder rebuilt mid-session (rules or pool members changed) learns the
        relations announced so far: the server does not send them again."""
        for payload in self.decoder.relation_messages.values():
            hot.decoder.feed(RELATION_HEADER + payload)

    def _declined(self, hot: HotPath, message: XLogData) -> None:
        """A message C left to Python: a unit of its own (a Relation message, a change C
        does not take, a TRUNCATE, or a message to report)."""
        unit = self.tracker.begin()
        try:
            events = self.decoder.decode(message.payload, message.data_start)
        except DecodeError as exc:
            # Never confirm past a message we could not read: stop this session loudly.
            raise SourceError(
                f"undecodable pgoutput message at {int_to_lsn(message.data_start)}: {exc}"
            ) from None
        decoder = self.decoder
        self._feed_declined(
            hot, events, unit, lambda _commit: (decoder.commit_end, decoder.commit_time)
        )
