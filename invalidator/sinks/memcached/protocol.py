"""memcached text protocol as pure functions: requests to bytes, reply bytes to outcomes.

Every request we send has a one-line reply, so a pipelined batch is N requests written at
once and N ``\\r\\n``-terminated lines read back, in order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from invalidator.core.operations import Operation

# memcached reads an exptime above 30 days as an absolute Unix time.
_RELATIVE_TTL_LIMIT = 60 * 60 * 24 * 30

Outcome = Literal["ok", "not_found", "not_stored", "error"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply line, classified."""

    outcome: Outcome
    line: bytes


def exptime(ttl: int | None, now: float | None = None) -> int:
    """The protocol's exptime for a TTL in seconds (0 = never expires)."""
    if not ttl:
        return 0
    if ttl > _RELATIVE_TTL_LIMIT:
        return int((time.time() if now is None else now) + ttl)
    return ttl


def delete_request(key: bytes) -> bytes:
    return b"delete " + key + b"\r\n"


def set_request(key: bytes, value: bytes, ttl: int | None, flags: int = 0) -> bytes:
    return b"set %s %d %d %d\r\n%s\r\n" % (key, flags, exptime(ttl), len(value), value)


def incr_request(key: bytes) -> bytes:
    return b"incr " + key + b" 1\r\n"


def add_request(key: bytes, value: bytes) -> bytes:
    return b"add %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)


FLUSH_REQUEST = b"flush_all\r\n"
STATS_REQUEST = b"stats\r\n"
VERSION_REQUEST = b"version\r\n"
BumpStep = Literal["incr", "add", "incr_again"]


def bump_next(step: BumpStep, key: bytes, outcome: Outcome) -> tuple[BumpStep, bytes] | None:
    """The bump protocol's next step after ``outcome``, or None when the bump is done.

    ``incr`` of a missing counter answers NOT_FOUND: create it with ``add "1"`` (atomic);
    if another writer created it in between (NOT_STORED), ``incr`` theirs (and should that
    one be gone again, start over with ``add``)."""
    if step != "add" and outcome == "not_found":
        return "add", add_request(key, b"1")
    if step == "add" and outcome == "not_stored":
        return "incr_again", incr_request(key)
    return None


def parse_identity(stats: bytes) -> tuple[int, int] | None:
    """(pid, start time) from a ``stats`` reply: a change means the server restarted."""
    values: dict[bytes, bytes] = {}
    for line in stats.split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            values[parts[1]] = parts[2]
    try:
        return int(values[b"pid"]), int(values[b"time"]) - int(values[b"uptime"])
    except (KeyError, ValueError):
        return None


def request_for(operation: Operation) -> bytes:
    """The first request of ``operation`` (``bump`` may need a follow-up ``add``)."""
    key = operation.key.encode("utf-8")
    if operation.op == "delete":
        return delete_request(key)
    if operation.op == "refresh":
        return set_request(key, operation.value or b"", operation.ttl)
    if operation.op == "flush":
        return FLUSH_REQUEST
    return incr_request(key)


_OUTCOMES: dict[bytes, Outcome] = {
    b"DELETED": "ok",
    b"STORED": "ok",
    b"OK": "ok",  # flush_all
    b"NOT_FOUND": "not_found",
    b"NOT_STORED": "not_stored",
    b"EXISTS": "not_stored",
}


def classify(line: bytes) -> Reply:
    """Classify one reply line (without ``\\r\\n``)."""
    outcome = _OUTCOMES.get(line)
    if outcome is not None:
        return Reply(outcome, line)
    if line.isdigit():
        return Reply("ok", line)  # incr's new value
    return Reply("error", line)  # ERROR, CLIENT_ERROR ..., SERVER_ERROR ...


def gets_request(keys: Sequence[bytes]) -> bytes:
    """One ``gets`` of several keys: a ``VALUE`` block per key found (with its CAS unique,
    which changes with every write of the key), then ``END``."""
    return b"gets " + b" ".join(keys) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Item:
    """A cached value and its CAS unique (0 when the reply carried none: ``get``)."""

    value: bytes
    cas: int


class ValuesReader:
    """Parses the replies to ``get``/``gets`` requests: ``VALUE <key> <flags> <bytes>
    [<cas>]``, the data, and ``END`` closing each request. ``feed`` returns the requests
    completed, each as a dict key → ``Item`` of what it found."""

    __slots__ = ("_buffer", "_found")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._found: dict[bytes, Item] = {}

    def feed(self, data: bytes) -> list[dict[bytes, Item]]:
        self._buffer += data
        done: list[dict[bytes, Item]] = []
        buffer = self._buffer
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            if line == b"END":
                done.append(self._found)
                self._found = {}
                start = end + 2
                continue
            parts = line.split(b" ")
            if (
                len(parts) not in (4, 5)
                or parts[0] != b"VALUE"
                or not all(p.isdigit() for p in parts[3:])
            ):
                raise ValueError(f"unexpected reply to get: {line[:60]!r}")
            size = int(parts[3])
            if len(buffer) < end + 2 + size + 2:
                break  # the value has not fully arrived
            cas = int(parts[4]) if len(parts) == 5 else 0
            self._found[parts[1]] = Item(bytes(buffer[end + 2 : end + 2 + size]), cas)
            start = end + 2 + size + 2
        del buffer[:start]
        return done


class ReplyReader:
    """Accumulates received bytes and yields complete reply lines."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if b"\n" not in data:
            return []  # no line can have completed
        *lines, rest = bytes(self._buffer).split(b"\r\n")
        self._buffer = bytearray(rest)
        return lines
