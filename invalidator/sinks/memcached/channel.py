"""Non-blocking, pipelined connections to memcached nodes, driven by the daemon's loop.

Each node has its own queue and socket, so a slow or dead node never holds up the others.
Requests are written back to back; replies come back in order and settle the oldest
in-flight entry. Failures, in order of severity:

* connection lost, refused, or no reply for ``request_timeout`` (a stopped process still
  accepts TCP connections): unanswered entries go back to the front of the queue and are
  resent after a backoff. Deletes and sets are idempotent; per-key order is queue order.
* the node restarted (a ``stats`` handshake on every connect compares pid and start
  time): its data is gone, so its queued work is dropped, as SPEC allows.
* the queue of an unreachable node passes ``max_queue``: the queued entries are replaced
  by one ``flush_all`` to send when the node answers again, so memory stays bounded and the
  stream never waits for a dead node. The oldest dropped transaction stays open until the
  flush is acknowledged (a barrier): the confirmed WAL position cannot pass lost work.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn
from invalidator.hotpath._hotpath import scan_deletes
from invalidator.sinks.memcached.protocol import add_request, classify, incr_request, request_for

MAX_WRITE = 256 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
REQUEST_TIMEOUT = 2.0
MAX_QUEUE = 100_000
RESTART_MARGIN = 1.0  # memcached reports its start in whole seconds
FLUSH_OP = Operation("delete", "", "", "")  # marker op of the flush_all entry


@dataclass(slots=True, eq=False)
class Entry:
    """One operation for one node and the transactions waiting on it."""

    op: Operation
    request: bytes
    txns: list[Txn] = field(default_factory=list)
    follow_up: str = ""  # "" | "add" | "incr": the bump protocol's second and third steps
    outcome: str = ""  # when finished: ok | not_found | not_stored | created | dropped
    count: int = 1  # requests in ``request``: > 1 only for a batch of deletes
    batch: bool = False  # ``request`` is ``count`` deletes (the C hot path's output)
    remaining: int = 0  # a batch in flight: replies still to come
    deleted: int = 0  # a batch: replies that were DELETED (the rest NOT_FOUND)


def _settle(entry: Entry) -> None:
    for txn in entry.txns:
        txn.outstanding -= 1


class NodeChannel:
    """One node: queue → socket → in-flight FIFO → settled entries."""

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
    ):
        self.node = node
        self.address = address
        self.on_error = on_error
        # (node, event, operations affected, message): rare events, always logged
        self.on_event = on_event or (lambda node, event, count, message: None)
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_queue = max_queue
        self.sock: socket.socket | None = None
        self.connecting = False
        self.handshake = False
        self.identity: tuple[int, int] | None = None  # (pid, start time) from stats
        self.queue: deque[Entry] = deque()
        self.inflight: deque[Entry] = deque()
        self.unsent_deletes: dict[str, Entry] = {}
        self.flush: Entry | None = None
        self.ops = 0  # requests queued or in flight (a batch counts each of its deletes)
        self.outbuf = bytearray()
        self.inbuf = bytearray()
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN
        self.last_progress = 0.0
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
        self.ops += 1
        if self.ops > self.max_queue and not self.healthy:
            self._overflow()

    def submit_delete(self, op: Operation, key_bytes: bytes, txn: Txn) -> None:
        """``submit`` for a delete whose key is already encoded (the hot path)."""
        txn.outstanding += 1
        entry = self.unsent_deletes.get(op.key)
        if entry is not None:
            entry.txns.append(txn)
            return
        entry = Entry(op, b"delete " + key_bytes + b"\r\n", [txn])
        self.unsent_deletes[op.key] = entry
        self.queue.append(entry)
        self.ops += 1
        if self.ops > self.max_queue and not self.healthy:
            self._overflow()

    def submit_batch(self, op: Operation, requests: bytes, count: int, txn: Txn) -> None:
        """``count`` pipelined deletes (``delete <key>\r\n`` each) as one entry for ``txn``.

        ``op`` names the pool (its key is empty). The batch is settled when all ``count``
        replies are in; after a connection failure it is resent whole (deletes are
        idempotent)."""
        txn.outstanding += 1
        self.queue.append(Entry(op, requests, [txn], count=count, batch=True))
        self.ops += count
        if self.ops > self.max_queue and not self.healthy:
            self._overflow()

    def drop_all(self) -> int:
        """The node left the pool: settle everything queued or in flight for it."""
        entries = list(self.inflight) + list(self.queue)
        self.inflight.clear()
        self.queue.clear()
        self.unsent_deletes.clear()
        self.flush = None
        self.ops = 0
        for entry in entries:
            entry.outcome = "dropped"
            _settle(entry)
        return sum(entry.count for entry in entries)

    def submit_redelete(self, op: Operation) -> bool:
        """A second delete that no transaction waits for; False if one is already queued."""
        if op.key in self.unsent_deletes:
            return False  # an unsent delete of this key will run later anyway
        entry = Entry(op, b"delete " + op.key.encode() + b"\r\n", [])
        self.unsent_deletes[op.key] = entry
        self.queue.append(entry)
        self.ops += 1
        return True

    @property
    def pending(self) -> int:
        """Requests queued or in flight."""
        return self.ops

    def _recount(self) -> None:
        self.ops = sum(e.count for e in self.queue) + sum(e.count for e in self.inflight)

    @property
    def healthy(self) -> bool:
        """Connected and not in a failure backoff: its queue is expected to drain."""
        return self.sock is not None and not self.connecting and self.failures == 0

    def _overflow(self) -> None:
        # Replace the unreachable node's queue by one flush_all; keep the oldest dropped
        # transaction open until the flush is acknowledged (see the module docstring).
        dropped = [e for e in self.queue if e is not self.flush]
        if not dropped:
            return
        # The oldest transaction with dropped work (re-deletes carry none) holds the line.
        barrier = next((e.txns[0] for e in dropped if e.txns), None)
        for entry in dropped:
            _settle(entry)
        self.queue.clear()
        self.unsent_deletes.clear()
        if self.flush is None:
            if barrier is not None:
                barrier.outstanding += 1
            self.flush = Entry(FLUSH_OP, b"flush_all\r\n", [barrier] if barrier else [])
        self.queue.append(self.flush)
        self._recount()
        operations = sum(e.count for e in dropped)
        self.on_event(
            self.node,
            "overflow_flush",
            operations,
            f"queue over {self.max_queue} while unreachable: "
            f"{operations} operations replaced by flush_all on return",
        )

    # -- connection ---------------------------------------------------------------------

    def ensure_connected(self) -> bool:
        """Start a non-blocking connect if due; True when a socket exists."""
        if self.sock is not None:
            return True
        if self.clock() < self.retry_at:
            return False
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._failed(f"cannot connect: {errno.errorcode.get(code, code)}")
            return False
        self.sock = sock
        self.connecting = code != 0
        # First ask who the server is: a changed pid or start time means it restarted.
        self.handshake = True
        self.outbuf = bytearray(b"stats\r\n")
        self.last_progress = self.clock()
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
        self.handshake = False
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
        if self.ops > self.max_queue:
            self._overflow()

    def check_timeout(self, now: float) -> None:
        """Fail the connection if requests have waited ``request_timeout`` with no reply."""
        waiting = self.inflight or self.handshake or self.connecting
        if self.sock is not None and waiting and now - self.last_progress > self.request_timeout:
            self._failed(f"no reply for {self.request_timeout:g}s")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _handshake_done(self, reply: bytes) -> None:
        stats: dict[bytes, bytes] = {}
        for line in reply.split(b"\r\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT":
                stats[parts[1]] = parts[2]
        try:
            identity = (int(stats[b"pid"]), int(stats[b"time"]) - int(stats[b"uptime"]))
        except (KeyError, ValueError):
            identity = None
        previous = self.identity
        self.handshake = False
        self.failures = 0
        self.backoff = BACKOFF_MIN
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

    def _drop_before(self, started: float) -> None:
        """Drop queued work of transactions that committed before the node (re)started:
        its data is gone, so nothing they changed can be stale there. Work of later (or
        still streaming) transactions is kept and sent."""
        kept: deque[Entry] = deque()
        dropped = 0
        for entry in self.queue:
            moot = entry is not self.flush and all(
                txn.commit_time is not None and txn.commit_time < started for txn in entry.txns
            )
            if moot:
                entry.outcome = "dropped"
                _settle(entry)
                dropped += entry.count
                if self.unsent_deletes.get(entry.op.key) is entry:
                    del self.unsent_deletes[entry.op.key]
            else:
                kept.append(entry)
        self.queue = kept
        self._recount()
        if dropped:
            self.on_event(
                self.node,
                "restart_dropped",
                dropped,
                f"{dropped} operations of transactions committed before the restart dropped",
            )

    # -- I/O ----------------------------------------------------------------------------

    @property
    def wants_write(self) -> bool:
        if self.sock is None:
            return False
        if self.connecting or self.outbuf:
            return True
        return bool(self.queue) and not self.handshake

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
                if entry.op.op == "delete" and entry is not flush:
                    if line == b"NOT_FOUND":
                        entry.outcome = "not_found"
                    elif line == b"DELETED":
                        entry.outcome = "ok"
                    elif not self._reply(entry, line):
                        if self.sock is None:
                            return done  # the connection was failed: the rest is resent
                        continue
                elif not self._reply(entry, line):
                    if self.sock is None:
                        return done
                    continue
            for txn in entry.txns:
                txn.outstanding -= 1
            self.ops -= entry.count
            done.append(entry)
        if self.sock is not None:
            self.inbuf = bytearray(data[pos:])
        if done:
            self.backoff = BACKOFF_MIN
            self.failures = 0
        return done

    def _reply(self, entry: Entry, line: bytes) -> bool:
        outcome = classify(line).outcome
        op = entry.op
        if entry is self.flush:
            if outcome == "ok":
                self.flush = None
                entry.outcome = "flushed"
                return True
        elif outcome in ("ok", "not_found") and not (op.op == "bump" and outcome == "not_found"):
            entry.outcome = outcome
            return True
        elif op.op == "bump" and outcome == "not_found" and entry.follow_up != "add":
            # The counter does not exist: create it with 1, atomically (add).
            entry.follow_up = "add"
            entry.outcome = "created"
            entry.request = add_request(op.key.encode(), b"1")
            self.queue.appendleft(entry)
            return False
        elif op.op == "bump" and entry.follow_up == "add" and outcome == "not_stored":
            # Someone created it between our incr and add: increment theirs.
            entry.follow_up = "incr"
            entry.request = incr_request(op.key.encode())
            self.queue.appendleft(entry)
            return False
        elif outcome == "not_stored" and op.op == "refresh":
            entry.outcome = outcome
            return True
        # An error reply (SERVER_ERROR out of memory, ...): retry later, never drop. Fail
        # the connection so this and every later unanswered request are resent in their
        # original order: a refresh must never be overtaken by an older value.
        self.inflight.appendleft(entry)
        self._failed(f"{op.op} {op.key}: {line[:80].decode('latin-1')}")
        return False
