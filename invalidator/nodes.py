"""Non-blocking, pipelined connections to memcached nodes, driven by the daemon's loop.

Each node has its own queue and its own socket, so a slow or dead node never holds up the
others (no head-of-line blocking across nodes). Requests are written back to back; replies
come back in order and complete the oldest in-flight entry. On a connection failure the
in-flight entries go back to the front of the queue and are resent after a backoff:
deletes and sets are idempotent, and per-key order is kept because the queue order is.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .memcache_protocol import add_request, classify, incr_request, request_for
from .operations import Operation
from .tracker import Txn

MAX_WRITE = 256 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0


@dataclass(slots=True, eq=False)
class Entry:
    """One operation for one node and the transactions waiting on it."""

    op: Operation
    request: bytes
    txns: list[Txn] = field(default_factory=list)
    follow_up: str = ""  # "" | "add" | "incr": the bump protocol's second and third steps
    outcome: str = ""  # set when finished: "ok" or "not_found" (a delete of an absent key)


class NodeChannel:
    """One node: queue → socket → in-flight FIFO → completions."""

    def __init__(
        self,
        node: str,
        address: tuple[str, int],
        *,
        on_error: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.node = node
        self.address = address
        self.on_error = on_error
        self.clock = clock
        self.sock: socket.socket | None = None
        self.connecting = False
        self.queue: deque[Entry] = deque()
        self.inflight: deque[Entry] = deque()
        self.unsent_deletes: dict[str, Entry] = {}
        self.outbuf = bytearray()
        self.inbuf = bytearray()
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN
        self.failures = 0
        self.last_error = ""

    # -- submitting ---------------------------------------------------------------------

    def submit(self, op: Operation, txn: Txn) -> None:
        """Queue ``op`` for ``txn``; a delete of a key already queued and unsent is shared."""
        txn.outstanding += 1
        if op.op == "delete":
            entry = self.unsent_deletes.get(op.key)
            if entry is not None:
                # Not yet sent, so it will run after this commit too: one delete serves both.
                entry.txns.append(txn)
                return
            entry = Entry(op, request_for(op), [txn])
            self.unsent_deletes[op.key] = entry
        else:
            entry = Entry(op, request_for(op), [txn])
        self.queue.append(entry)

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.inflight)

    # -- connection ---------------------------------------------------------------------

    def ensure_connected(self) -> bool:
        """Start a non-blocking connect if due; True when a socket exists."""
        if self.sock is not None:
            return True
        if self.clock() < self.retry_at:
            return False
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_STREAM
        )
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._failed(f"cannot connect: {errno.errorcode.get(code, code)}")
            return False
        self.sock = sock
        self.connecting = code != 0
        return True

    def _connected(self) -> bool:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._failed(f"cannot connect: {errno.errorcode.get(code, code)}")
            return False
        self.connecting = False
        return True

    def _failed(self, reason: str) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.connecting = False
        # Unanswered requests go back in front, in order; they will be sent again.
        while self.inflight:
            self.queue.appendleft(self.inflight.pop())
        self.outbuf.clear()
        self.inbuf.clear()
        self.failures += 1
        self.last_error = reason
        self.retry_at = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.on_error(self.node, reason)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- I/O ----------------------------------------------------------------------------

    @property
    def wants_write(self) -> bool:
        return self.sock is not None and (self.connecting or bool(self.outbuf or self.queue))

    def on_writable(self) -> None:
        """Move queued requests to the socket as far as it takes them."""
        if self.sock is None:
            return
        if self.connecting and not self._connected():
            return
        if not self.outbuf:
            self._fill()
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf[:MAX_WRITE])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(f"send failed: {exc.strerror or exc}")
                return
            del self.outbuf[:sent]
            if not self.outbuf:
                self._fill()

    def _fill(self) -> None:
        queue = self.queue
        inflight = self.inflight
        unsent = self.unsent_deletes
        out = self.outbuf
        while queue and len(out) < MAX_WRITE:
            entry = queue.popleft()
            if entry.op.op == "delete" and unsent.get(entry.op.key) is entry:
                del unsent[entry.op.key]
            out += entry.request
            inflight.append(entry)

    def on_readable(self) -> list[Entry]:
        """Read replies; settle and return the entries that are finished (acknowledged)."""
        if self.sock is None:
            return []
        if self.connecting and not self._connected():
            return []
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            self._failed(f"receive failed: {exc.strerror or exc}")
            return []
        if not data:
            self._failed("connection closed by the server")
            return []
        self.inbuf += data
        done: list[Entry] = []
        buf = self.inbuf
        start = 0
        inflight = self.inflight
        while True:
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end])
            start = end + 2
            if not inflight:
                self._failed(f"unexpected reply {line[:40]!r}")
                return done
            entry = inflight.popleft()
            if self._reply(entry, line):
                for txn in entry.txns:
                    txn.outstanding -= 1
                done.append(entry)
        del buf[:start]
        if done:
            self.backoff = BACKOFF_MIN
        return done

    def _reply(self, entry: Entry, line: bytes) -> bool:
        outcome = classify(line).outcome
        op = entry.op
        if outcome in ("ok", "not_found") and not (op.op == "bump" and outcome == "not_found"):
            entry.outcome = outcome
            return True
        if op.op == "bump" and outcome == "not_found" and entry.follow_up != "add":
            # The counter does not exist: create it with 1, atomically (add).
            entry.follow_up = "add"
            entry.outcome = "created"
            entry.request = add_request(op.key.encode(), b"1")
            self.queue.appendleft(entry)
            return False
        if op.op == "bump" and entry.follow_up == "add" and outcome == "not_stored":
            # Someone created it between our incr and add: increment theirs.
            entry.follow_up = "incr"
            entry.request = incr_request(op.key.encode())
            self.queue.appendleft(entry)
            return False
        if outcome == "not_stored" and op.op == "refresh":
            entry.outcome = outcome
            return True
        # An error reply (SERVER_ERROR out of memory, ...): retry later, never drop.
        self.on_error(self.node, f"{op.op} {op.key}: {line[:80].decode('latin-1')}")
        self.queue.appendleft(entry)
        self.retry_at = self.clock() + self.backoff
        return False
