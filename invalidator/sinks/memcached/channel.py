"""Non-blocking, pipelined connections to memcached nodes, driven by the daemon's loop.

Each node has its own queue and transport, so a slow or dead node never holds up the
others. Requests are written back to back; replies come back in order and settle the
oldest in-flight entry. Failures, in order of severity:

* connection lost, refused, unresolvable, or no reply for ``request_timeout`` (a stopped
  process still accepts TCP connections): unanswered entries go back to the front of the
  queue and are resent after a backoff. Deletes and sets are idempotent; per-key order is
  queue order.
* the node restarted (a ``stats`` handshake on every connect compares pid and start
  time): its data is gone, so its queued work is dropped, as SPEC allows.
* the queue of an unreachable node passes ``max_queue``: it becomes one ``flush_all`` to
  send when the node answers again (see ``queue``), so memory stays bounded and the
  stream never waits for a dead node.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from invalidator.hotpath._hotpath import scan_deletes
from invalidator.sinks.memcached.connector import PLAIN, Connector, Transport
from invalidator.sinks.memcached.protocol import (
    STATS_REQUEST,
    bump_next,
    classify,
    parse_identity,
)
from invalidator.sinks.memcached.queue import FLUSH_OP, MAX_QUEUE, Entry, NodeQueue

__all__ = ["FLUSH_OP", "MAX_QUEUE", "Entry", "NodeChannel"]

MAX_WRITE = 256 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
REQUEST_TIMEOUT = 2.0
RESTART_MARGIN = 1.0  # memcached reports its start in whole seconds


class NodeChannel(NodeQueue):
    """One node: queue → transport → in-flight FIFO → settled entries."""

    def __init__(
        self,
        node: str,
        address: tuple[str, int],
        *,
        on_error: Callable[[str, str], None],
        on_event: Callable[[str, str, int, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = REQUEST_TIMEOUT,
        max_queue: int = MAX_QUEUE,
        connector: Connector = PLAIN,
    ):
        super().__init__()
        self.node = node
        self.address = address
        self.on_error = on_error
        # (node, event, operations affected, message): rare events, always logged
        self.on_event = on_event or (lambda node, event, count, message: None)
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_queue = max_queue
        self.connector = connector
        self.transport: Transport | None = None
        self.connecting = False
        self.handshake = False
        self.identity: tuple[int, int] | None = None  # (pid, start time) from stats
        self.outbuf = bytearray()
        self.inbuf = bytearray()
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN
        self.last_progress = 0.0
        self.failures = 0
        self.last_error = ""

    @property
    def healthy(self) -> bool:
        """Connected and not in a failure backoff: its queue is expected to drain."""
        return self.transport is not None and not self.connecting and self.failures == 0

    @property
    def unreachable(self) -> bool:
        return self.failures > 0

    # -- connection ---------------------------------------------------------------------

    def ensure_connected(self) -> bool:
        """Start a non-blocking connect if due; True when a transport exists."""
        if self.transport is not None:
            return True
        if self.clock() < self.retry_at:
            return False
        try:
            self.transport = self.connector.open(self.address)
        except BlockingIOError:
            return False  # the name is being resolved (off the loop): try again next turn
        except OSError as exc:
            self._failed(exc.strerror or str(exc))
            return False
        self.connecting = True
        # First ask who the server is: a changed pid or start time means it restarted.
        self.handshake = True
        self.outbuf = bytearray(STATS_REQUEST)
        self.last_progress = self.clock()
        return True

    def _ready(self) -> bool:
        """Finish connecting (and any handshake of the transport); False while not yet."""
        assert self.transport is not None
        try:
            if not self.transport.finish():
                return False
        except OSError as exc:
            self._failed(exc.strerror or str(exc))
            return False
        self.connecting = False
        return True

    def move_to(self, address: tuple[str, int]) -> None:
        """The pod behind the node's stable name moved: reconnect to ``address`` now, and
        send everything not yet answered again there (the old address never will)."""
        self.address = address
        self._disconnect()
        self.retry_at = 0.0

    def _disconnect(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.connecting = False
        self.handshake = False
        # Unanswered requests go back in front, in order; they will be sent again.
        while self.inflight:
            self.queue.appendleft(self.inflight.pop())
        self.outbuf.clear()
        self.inbuf.clear()

    def _failed(self, reason: str) -> None:
        self._disconnect()
        self.failures += 1
        self.last_error = reason
        self.retry_at = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.on_error(self.node, reason)
        if self.ops > self.max_queue:
            self._overflow()

    def check_timeout(self, now: float) -> None:
        """Fail the connection if requests have waited ``request_timeout`` with no reply."""
        waiting = self.inflight or self.handshake or self.connecting
        if (
            self.transport is not None
            and waiting
            and now - self.last_progress > self.request_timeout
        ):
            what = " (connecting)" if self.connecting else ""
            self._failed(f"no reply for {self.request_timeout:g}s{what}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _handshake_done(self, reply: bytes) -> None:
        identity = parse_identity(reply)
        previous = self.identity
        self.handshake = False
        self._answering()
        if identity is None:
            return
        self.identity = identity
        restarted = previous is not None and (
            identity[0] != previous[0] or abs(identity[1] - previous[1]) > 2
        )
        if restarted and previous is not None:
            self.on_event(
                self.node,
                "restarted",
                0,
                f"restarted (pid {previous[0]} → {identity[0]}): its cache is empty",
            )
            self._drop_before(identity[1] - RESTART_MARGIN)

    # -- I/O ----------------------------------------------------------------------------

    @property
    def wants_write(self) -> bool:
        if self.transport is None:
            return False
        if self.connecting:
            # A TLS handshake waiting for the server's bytes waits for READ only.
            return self.transport.wants_write
        if self.outbuf:
            return True
        return bool(self.queue) and not self.handshake

    def on_writable(self) -> None:
        """Move queued requests to the transport as far as it takes them."""
        if self.transport is None:
            return
        if self.connecting and not self._ready():
            return
        if not self.outbuf:
            self._fill()
        while self.outbuf:
            try:
                sent = self.transport.send(self.outbuf[:MAX_WRITE])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(f"send failed: {exc.strerror or exc}")
                return
            del self.outbuf[:sent]
            if not self.outbuf:
                self._fill()

    def _fill(self) -> None:
        if self.handshake:
            return
        queue = self.queue
        inflight = self.inflight
        unsent = self.unsent_deletes
        out = self.outbuf
        if queue and not inflight:
            self.last_progress = self.clock()  # the timeout counts from the first request
        while queue and len(out) < MAX_WRITE:
            entry = queue.popleft()
            if entry.batch:
                entry.remaining = entry.count  # (again, if it is being resent)
                entry.deleted = 0
            elif entry.op.op == "delete" and unsent.get(entry.op.key) is entry:
                del unsent[entry.op.key]
            out += entry.request
            inflight.append(entry)

    def on_readable(self) -> list[Entry]:
        """Read replies; settle and return the entries that are finished (acknowledged)."""
        if self.transport is None:
            return []
        if self.connecting and not self._ready():
            return []
        try:
            data = self.transport.recv(262144)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            self._failed(f"receive failed: {exc.strerror or exc}")
            return []
        if not data:
            self._failed("connection closed by the server")
            return []
        self.last_progress = self.clock()
        self.inbuf += data
        buf = self.inbuf
        start = 0
        if self.handshake:
            end = buf.find(b"END\r\n")
            if end < 0:
                return []
            self._handshake_done(bytes(buf[:end]))
            start = end + 5
        done: list[Entry] = []
        inflight = self.inflight
        data = bytes(buf)
        end = len(data)
        pos = start
        flush = self.flush
        while pos < end:
            if not inflight:
                self._failed(f"unexpected reply {data[pos : pos + 40]!r}")
                return done
            entry = inflight[0]
            if entry.batch:
                lines, deleted, pos = scan_deletes(data, pos, entry.remaining)
                entry.remaining -= lines
                entry.deleted += deleted
                if entry.remaining:
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        break  # the rest of the batch's replies are still coming
                    # An error reply within a batch (SERVER_ERROR ...): fail the connection;
                    # the whole batch is resent after the backoff, like any unanswered work.
                    line = data[pos:eol]
                    self._failed(f"delete (batch of {entry.count}): {line[:80].decode('latin-1')}")
                    return done
                inflight.popleft()
                entry.outcome = "ok"
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    break
                line = data[pos:eol]
                pos = eol + 2
                inflight.popleft()
                # The common case inline: a plain delete answered DELETED or NOT_FOUND.
                if entry.op.op == "delete" and entry is not flush and line == b"DELETED":
                    entry.outcome = "ok"
                elif entry.op.op == "delete" and entry is not flush and line == b"NOT_FOUND":
                    entry.outcome = "not_found"
                elif not self._reply(entry, line):
                    if self.transport is None:
                        return done  # the connection was failed: the rest is resent
                    continue
            for txn in entry.txns:
                txn.outstanding -= 1
            self.ops -= entry.count
            done.append(entry)
        if self.transport is not None:
            self.inbuf = bytearray(data[pos:])
        if done:
            self._answering()
        return done

    def _answering(self) -> None:
        """The node answered: after failures, say it is back (once), and reset the backoff."""
        if self.failures:
            self.on_event(
                self.node,
                "back",
                0,
                f"answering again after {self.failures} failed attempts (last: {self.last_error})",
            )
        self.failures = 0
        self.backoff = BACKOFF_MIN

    def _reply(self, entry: Entry, line: bytes) -> bool:
        """Settle ``entry`` by its reply line; False when it is not finished (requeued)."""
        outcome = classify(line).outcome
        op = entry.op
        if entry is self.flush:
            if outcome == "ok":
                self.flush = None
                entry.outcome = "flushed"
                return True
        elif op.op == "bump":
            following = bump_next(entry.step, op.key.encode(), outcome)
            if following is not None:
                entry.step, entry.request = following
                self.queue.appendleft(entry)
                return False
            if outcome == "ok":
                entry.outcome = "created" if entry.step == "add" else "ok"
                return True
        elif outcome in ("ok", "not_found") or (outcome == "not_stored" and op.op == "refresh"):
            entry.outcome = outcome
            return True
        # An error reply (SERVER_ERROR out of memory, ...): retry later, never drop. Fail
        # the connection so this and every later unanswered request are resent in their
        # original order: a refresh must never be overtaken by an older value.
        self.inflight.appendleft(entry)
        self._failed(f"{op.op} {op.key}: {line[:80].decode('latin-1')}")
        return False
