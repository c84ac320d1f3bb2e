"""The source interface: where committed changes come from, and how work is acknowledged.

A ``ChangeSource`` is one kind of source (wal2json logical replication, the notify
outbox, ...). The commands call ``setup``/``teardown``/``status``; the daemon's
supervisor calls ``open`` for each connected run, which returns a ``Session`` that the
event loop drives: it reads when its socket is ready, feeds changes to the pipeline with
the transaction (``Txn``) their work is accounted to, and after every turn acknowledges
what memcached has confirmed — never more. Adding a source is one module implementing
these two protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from invalidator.core.changes import Change
from invalidator.core.operations import Operation, SkippedKey
from invalidator.core.placement import Placement
from invalidator.core.rules import RuleSet, TableName
from invalidator.core.tracker import Txn


class Feed(Protocol):
    """What a session feeds: the daemon's pipeline (rules → placement → nodes), as seen
    from a source. Declared here so that sources depend on no runtime module."""

    rules: RuleSet
    log: Any
    # Called for a change of a table no rule names (a partition created after start).
    resolve_partition: Callable[[TableName], None] | None

    @property
    def version(self) -> int:
        """Moves whenever rules or placements change (the C hot path is rebuilt)."""
        ...

    def placements(self) -> Mapping[str, Placement]: ...

    def set_rules(self, rules: RuleSet) -> None:
        """Replace the rules (e.g. with the partitions found at start)."""
        ...

    def on_change(self, change: Change, txn: Txn) -> None:
        """Plan a change and queue its operations for ``txn``."""
        ...

    def submit_batch(self, node: str, op: Operation, requests: bytes, count: int, txn: Txn) -> None:
        """Queue ``count`` pipelined deletes (the C hot path's output) for ``txn``."""
        ...

    def add_partition(self, partition: TableName, parent: TableName) -> None:
        """Rules of ``parent`` apply to ``partition`` from now on."""
        ...

    def count_changes(self, table: str, kind: str, count: int) -> None: ...

    def report(self, skipped: SkippedKey) -> None: ...

    def acknowledged(self, commit_times: Iterable[float]) -> None:
        """Work of transactions committed at these times is confirmed (latency metric)."""
        ...

    def gap(self, reason: str, detail: str) -> None:
        """Continuity was lost (changes may have been missed): count and log it loudly."""
        ...

    def answer_gap(self, policy: str, reason: str, txn: Txn) -> int:
        """Queue what ``source.on_gap`` asks for (flush pools, bump counters) for ``txn``;
        returns how many operations."""
        ...

    def streaming(self, **context: Any) -> None:
        """The session streams now (ready; logged with ``context``)."""
        ...


class Session(Protocol):
    """One connected run of a source, driven by the event loop."""

    def fileno(self) -> int:
        """The socket whose readability means there is something to read."""
        ...

    def may_read(self, now: float) -> bool:
        """Whether to read now (False: hold off, e.g. a backlog being coalesced)."""
        ...

    def buffered(self) -> bool:
        """Data already received and not yet read: read again without waiting."""
        ...

    def read(self, ready: bool, now: float) -> None:
        """Take what arrived (``ready``: the socket signalled) and feed the pipeline."""
        ...

    def after_turn(self, now: float) -> float:
        """Acknowledge what memcached confirmed; returns how soon to call again (s)."""
        ...

    def progress(self) -> tuple[int, int]:
        """(confirmed position, server's position) for the metrics; 0 where unknown."""
        ...

    def close(self) -> None:
        """Confirm what is done and disconnect."""
        ...


class ChangeSource(Protocol):
    """A kind of source: its database objects and its sessions."""

    kind: str
    target: str  # what it streams from, for logs and /readyz ("slot cache_invalidator")

    def setup(self) -> str:
        """Create what the source needs; returns a line saying what was done."""
        ...

    def teardown(self) -> str:
        """Drop what ``setup`` created; returns a line saying what was done."""
        ...

    def status(self) -> tuple[dict[str, Any], bool]:
        """Where the source stands (JSON-ready, no secrets) and whether it is usable."""
        ...

    def open(self, feed: Feed) -> Session:
        """Connect and start streaming into ``feed``; raises SourceError."""
        ...

    def close(self) -> None:
        """Release connections kept between sessions."""
        ...
