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

_SYSTEM = "SELECT system_identifier::text FROM pg_control_system()"
MISMATCH_RETRY = 10.0  # a replica of another cluster: check again this often

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
        primary_dsn: str | None = None,
    ):
        self.label = replica_label(dsn)
        self._dsn = dsn
        self._primary_dsn = primary_dsn
        self._primary_system: str | None = None
        self._on_advance = on_advance
        self._clock = clock
        self.replayed: int | None = None  # None until the first answer
        self.error: str | None = None
        self.last_ok = 0.0  # clock() of the last answer
        self.started = 0.0  # clock() when polling began
        self.active = False  # someone waits: poll fast
        self.mismatched = False  # it is another cluster's server, not a standby of ours
        self._kick = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"replica {self.label}", daemon=True)

    def start(self) -> None:
        self.started = self._clock()
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
                    mismatch = self._other_cluster(conn)
                    self.mismatched = mismatch is not None
                    if mismatch is None:
                        self._poll(conn)
                    else:
                        self.error = mismatch
            except psycopg.Error as exc:
                self.error = str(source_error("replica unreachable", exc, self._dsn))
            if not self._stopping:
                self._kick.wait(
                    MISMATCH_RETRY if self.error and "standby of" in self.error else RETRY
                )
                self._kick.clear()

    def _other_cluster(self, conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
        """Why this is not a standby of the primary (another system identifier: its
        positions mean nothing here), or None. Unchecked without the primary's DSN."""
        if self._primary_dsn is None:
            return None
        if self._primary_system is None:
            try:
                with psycopg.connect(
                    self._primary_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as primary:
                    row = primary.execute(_SYSTEM).fetchone()
            except psycopg.Error as exc:
                raise psycopg.OperationalError(
                    str(source_error("primary unreachable", exc, self._primary_dsn))
                ) from None
            self._primary_system = str(row[0]) if row is not None else ""
        row = conn.execute(_SYSTEM).fetchone()
        system = str(row[0]) if row is not None else ""
        if system == self._primary_system:
            return None
        return (
            f"{self.label} is not a standby of the primary (system identifier {system},"
            f" the primary's {self._primary_system}): its replay positions mean nothing here"
        )

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


def replica_status(dsn: str, primary_dsn: str | None) -> dict[str, object]:
    """One replica as ``invalidator status`` and ``check`` show it: replayed position, how
    far behind the primary's WAL end (bytes), its last replayed commit (seconds), whether it
    is a standby of the primary's cluster (system identifier) — or the error."""
    record: dict[str, object] = {"replica": replica_label(dsn)}
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            row = conn.execute(
                _REPLAYED + ", extract(epoch FROM now() - pg_last_xact_replay_timestamp()),"
                " (SELECT system_identifier::text FROM pg_control_system())"
            ).fetchone()
        replayed, age, system = row if row is not None else (None, None, None)
        record["replayed_lsn"] = replayed
        record["last_replay_age_seconds"] = float(age) if age is not None else None
        if primary_dsn is not None:
            try:
                with psycopg.connect(
                    primary_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as primary:
                    end, primary_system = primary.execute(
                        "SELECT pg_current_wal_lsn()::text, system_identifier::text"
                        " FROM pg_control_system()"
                    ).fetchone() or (None, None)
            except psycopg.Error as exc:
                record["error"] = str(source_error("primary unreachable", exc, primary_dsn))
                return record
            record["standby_of_primary"] = system == primary_system
            if end is not None and replayed is not None and system == primary_system:
                record["bytes_behind"] = max(0, lsn_to_int(str(end)) - lsn_to_int(str(replayed)))
    except psycopg.Error as exc:
        record["error"] = str(source_error("replica unreachable", exc, dsn))
    return record
