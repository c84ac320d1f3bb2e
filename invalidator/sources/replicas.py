"""How far each read replica has replayed: one connection and one thread per replica.

The replication loop never waits on a replica. A ``ReplicaPoller`` asks its replica for
``pg_last_wal_replay_lsn()`` on its own thread — every few milliseconds while operations
wait for it, once a second otherwise — and publishes the position; ``on_advance`` wakes
the loop when it moves. A replica that cannot be reached keeps its last known position
(replay never goes backwards) and says why in ``error`` (password-free).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from invalidator.core.changes import lsn_to_int
from invalidator.sources.postgres import server_of, source_error

FAST_POLL = 0.003  # while operations wait for this replica
SLOW_POLL = 1.0  # otherwise: the lag metric and reachability only
RETRY = 1.0  # after a failed connection or query
CONNECT_TIMEOUT = 5

# On a standby: what it has replayed. On a server that is not in recovery (the primary
# listed by mistake, or a promoted replica), its WAL end: everything is visible there.
_REPLAYED = (
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_lsn() END::text"
)


def replica_label(dsn: str) -> str:
    """The replica as metrics and logs name it: ``host:port/dbname``, never a password."""
    server = server_of(dsn) or "replica"
    try:
        dbname = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    except psycopg.Error:
        dbname = None
    return f"{server}/{dbname}" if dbname else server


class ReplicaPoller:
    """Polls one replica's replayed position on a thread of its own."""

    def __init__(
        self,
        dsn: str,
        on_advance: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label = replica_label(dsn)
        self._dsn = dsn
        self._on_advance = on_advance
        self._clock = clock
        self.replayed: int | None = None  # None until the first answer
        self.error: str | None = None
        self.last_ok = 0.0  # clock() of the last answer
        self.active = False  # someone waits: poll fast
        self._kick = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"replica {self.label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Poll now (operations started waiting)."""
        self._kick.set()

    def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        self._thread.join(timeout=CONNECT_TIMEOUT + 1)

    def _run(self) -> None:
        while not self._stopping:
            try:
                with psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as conn:
                    self._poll(conn)
            except psycopg.Error as exc:
                self.error = str(source_error("replica unreachable", exc, self._dsn))
            if not self._stopping:
                self._kick.wait(RETRY)
                self._kick.clear()

    def _poll(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        while not self._stopping:
            row = conn.execute(_REPLAYED).fetchone()
            lsn = lsn_to_int(str(row[0])) if row is not None and row[0] is not None else None
            self.last_ok = self._clock()
            self.error = None
            if lsn is not None and (self.replayed is None or lsn > self.replayed):
                self.replayed = lsn
                self._on_advance()
            self._kick.wait(FAST_POLL if self.active else SLOW_POLL)
            self._kick.clear()
