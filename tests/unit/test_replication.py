"""The CopyBoth messages of the replication protocol, byte for byte."""

from __future__ import annotations

import struct

import pytest

from invalidator.core.changes import int_to_lsn, lsn_to_int
from invalidator.sources.replication import (
    Keepalive,
    ProtocolError,
    XLogData,
    parse_message,
    pg_now,
    standby_status,
)


def test_xlogdata_header_and_payload() -> None:
    """'w' + dataStart + walEnd + sendTime, payload from byte 25."""
    raw = struct.pack("!cQQq", b"w", 0x16B3748, 0x16B4000, 12345) + b'{"action":"B"}'
    assert parse_message(memoryview(raw)) == XLogData(
        0x16B3748, 0x16B4000, 12345, b'{"action":"B"}'
    )


def test_keepalive_with_reply_requested() -> None:
    """'k' + walEnd + sendTime + replyRequested."""
    raw = struct.pack("!cQqB", b"k", 99, 7, 1)
    assert parse_message(raw) == Keepalive(99, 7, True)


def test_standby_status_reports_flush_as_written_and_applied() -> None:
    """'r' + write, flush, apply (all the confirmed position) + clock + reply flag."""
    now = 946_684_800 + 1.5  # 1.5 s after the PostgreSQL epoch
    assert standby_status(0x10, now=now, reply=True) == struct.pack(
        "!cQQQqB", b"r", 0x10, 0x10, 0x10, 1_500_000, 1
    )


def test_pg_clock_counts_microseconds_since_2000() -> None:
    """The protocol's clock starts at 2000-01-01 UTC."""
    assert pg_now(946_684_800.000001) == 1


@pytest.mark.parametrize("raw", [b"w\x00", b"k", b"x" + bytes(30)])
def test_short_or_unknown_messages_are_protocol_errors(raw: bytes) -> None:
    """Truncated messages and unknown types are refused."""
    with pytest.raises(ProtocolError):
        parse_message(raw)


def test_lsn_text_round_trips() -> None:
    """'16/B374D848' ↔ 64-bit position."""
    assert lsn_to_int("16/B374D848") == 0x16B374D848
    assert int_to_lsn(0x16B374D848) == "16/B374D848"
