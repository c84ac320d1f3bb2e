"""The streaming replication protocol's CopyBoth messages, as pure functions.

Server → client (big-endian): XLogData ``w`` = dataStart, walEnd, sendTime, payload from
byte 25; primary keepalive ``k`` = walEnd, sendTime, replyRequested. Client → server:
standby status update ``r`` = write, flush, apply, clientTime, replyRequested. Times are
microseconds since 2000-01-01 UTC. The slot's ``confirmed_flush_lsn`` follows ``flush``.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

PG_EPOCH_OFFSET = 946_684_800  # seconds from 1970-01-01 to 2000-01-01
_XLOG = struct.Struct("!cQQq")
_KEEPALIVE = struct.Struct("!cQqB")
_STATUS = struct.Struct("!cQQQqB")


class ProtocolError(ValueError):
    """A CopyBoth message we cannot parse."""


@dataclass(frozen=True, slots=True)
class XLogData:
    """One decoded output message (one wal2json record) at ``data_start``."""

    data_start: int
    wal_end: int
    send_time: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The server's current WAL end; ``reply_requested`` asks for a status update now."""

    wal_end: int
    send_time: int
    reply_requested: bool


def parse_message(data: bytes | memoryview) -> XLogData | Keepalive:
    """Parse one CopyData message from the server."""
    kind = data[:1]
    if kind == b"w":
        if len(data) < _XLOG.size:
            raise ProtocolError("short XLogData message")
        _, start, end, sent = _XLOG.unpack_from(data)
        return XLogData(start, end, sent, bytes(data[_XLOG.size :]))
    if kind == b"k":
        if len(data) < _KEEPALIVE.size:
            raise ProtocolError("short keepalive message")
        _, end, sent, reply = _KEEPALIVE.unpack_from(data)
        return Keepalive(end, sent, bool(reply))
    raise ProtocolError(f"unknown CopyData message type {bytes(kind)!r}")


def pg_now(now: float | None = None) -> int:
    """Microseconds since 2000-01-01 UTC."""
    return round(((time.time() if now is None else now) - PG_EPOCH_OFFSET) * 1_000_000)


def standby_status(flush: int, *, now: float | None = None, reply: bool = False) -> bytes:
    """A status update confirming ``flush`` (also reported as written and applied)."""
    return _STATUS.pack(b"r", flush, flush, flush, pg_now(now), 1 if reply else 0)
