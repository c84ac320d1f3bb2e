"""In-memory edges for running the daemon in process: memcached nodes and a change source.

``MemoryMemcached`` is a ``Connector`` (``sinks/memcached/connector.py``): each connection
is a ``socket.socketpair()`` whose daemon end is the transport and whose other end is
served by a thread speaking the memcached text commands the daemon sends, over one dict
per node. Every command a node executes is recorded (node, incarnation, order), and a node
can be paused (connections accepted, nothing answered), failed (refused, connections
closed), started again (same data) or restarted (new pid, empty); it can answer the next
commands with an error, trickle its replies in pieces, have its transports take several
``finish()`` calls (a TLS-like handshake) or refuse in ``finish()``, and serve real TCP
for the production ``TcpConnector``.

``MemorySource`` is a ``ChangeSource`` fed from a list of transactions. Its sessions use
an ``AckTracker`` the way real sources must: a ``Txn`` per transaction, every change fed
with it, a commit at an increasing position, and only what ``tracker.advance()`` returns
confirmed. A reconnecting session streams again from the confirmed position, like a slot.

``InProcessDaemon`` runs the real ``Supervisor`` over both in a thread; ``Harness``
starts daemons over a set of fake nodes and a source, and stops and closes them all.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymemcache.client.rendezvous import RendezvousHash

from invalidator.config import Config, EnvOverrides, parse_config
from invalidator.core.changes import Change
from invalidator.core.operations import Operation
from invalidator.core.rules import plan
from invalidator.core.tracker import AckTracker, Txn, commit_times
from invalidator.errors import SourceError
from invalidator.runtime.discovery import Member
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.pipeline import ValueSource
from invalidator.runtime.supervisor import Supervisor
from invalidator.sinks.memcached.connector import Connector
from invalidator.sinks.memcached.protocol import delete_request
from invalidator.sources.base import Feed

# One order for everything the fakes record, across the daemon's and the servers' threads
# (``next`` on an itertools.count is atomic under the GIL).
_SEQUENCE = itertools.count(1)
POLL = 0.01
T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``condition`` until it is truthy (returned); fail naming ``what`` if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for: {what}")
        time.sleep(POLL)


# -- memcached --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One command a node executed."""

    seq: int  # global order (see _SEQUENCE)
    node: str
    pid: int  # the node's incarnation
    verb: str
    key: str  # "" for stats, flush_all, version
    value: bytes | None  # set/add data
    args: tuple[str, ...] = ()  # everything after the verb, e.g. ("user:1", "0", "300", "9")


class _PairTransport:
    """The daemon's end of a socketpair, as a ``Transport``: ``finish`` takes ``steps``
    calls (a handshake, as TLS's) or raises ``refusal`` (an asynchronous connect refused)."""

    def __init__(self, sock: socket.socket, steps: int = 0, refusal: OSError | None = None):
        self.sock = sock
        self.steps = steps
        self.refusal = refusal

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return True

    def finish(self) -> bool:
        if self.refusal is not None:
            raise self.refusal
        if self.steps:
            self.steps -= 1
            return False
        return True

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.steps or self.refusal is not None:
            raise AssertionError("send() before finish() returned True")
        return self.sock.send(data)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


class _Connection:
    def __init__(self, node: MemoryNode, server: socket.socket, client: socket.socket | None):
        self.node = node
        self.pid = node.pid
        self.server = server
        self.client = client
        self.closed = False
        self.thread = threading.Thread(target=self._serve, name=f"memcached {node.name}")
        self.thread.daemon = True

    def cut(self) -> None:
        """Close from the server's side: the daemon reads EOF. (Under the node's lock when
        called by the node: nothing more is executed on this connection once it returns.)"""
        self.closed = True
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        node = self.node
        sock = self.server
        sock.settimeout(POLL)
        buffer = bytearray()
        try:
            while not self.closed:
                if node.paused:
                    node.resumed.wait(POLL)
                    continue
                # What arrived (perhaps while paused) first, then wait for more.
                replies = node.execute(buffer, self)
                try:
                    self._send(replies)
                except OSError:
                    break
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                buffer += data
        finally:
            self.closed = True
            sock.close()

    def _send(self, replies: bytes) -> None:
        if not replies:
            return
        chunk = self.node.reply_chunk or len(replies)
        for start in range(0, len(replies), chunk):
            if start:
                time.sleep(0.002)  # let the daemon read each piece on its own
            self.server.sendall(replies[start : start + chunk])


class MemoryNode:
    """One fake memcached server: its data, its incarnation and what it was asked."""

    def __init__(self, name: str, address: tuple[str, int]):
        self.name = name
        self.address = address
        self.pid = 1000 + next(_SEQUENCE)
        self.started = time.time()
        self.data: dict[str, bytes] = {}
        self.commands: list[Command] = []  # executed
        self.errored: list[Command] = []  # answered by answer_next(), not executed
        self.connections: list[_Connection] = []
        self.refusing = False
        self.paused = False
        self.resumed = threading.Event()
        self.resumed.set()
        self.refused = 0  # connection attempts refused
        self.refuse_on: str = "open"  # while refusing: "open" fails, or the transport's "finish"
        self.handshake_steps = 0  # finish() calls a new transport takes to be ready
        self.reply_chunk: int | None = None  # replies sent in pieces of this many bytes
        self._errors: deque[bytes] = deque()  # replies that replace the next commands'
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    # -- abilities -----------------------------------------------------------------------

    def pause(self) -> None:
        """Accept connections and requests, answer nothing (a SIGSTOPped process): once
        this returns, no command is executed until ``resume``."""
        with self._lock:
            self.resumed.clear()
            self.paused = True

    def resume(self) -> None:
        """Answer again, starting with what arrived while paused."""
        self.paused = False
        self.resumed.set()

    def fail(self) -> None:
        """Refuse connections and close the open ones (a stopped process)."""
        with self._lock:
            self.refusing = True
            self._cut_all()

    def start(self) -> None:
        """Accept connections again; the data and pid are kept (a network partition healed)."""
        self.refusing = False

    def restart(self) -> None:
        """A new process: open connections closed, new pid, started now, no data."""
        with self._lock:
            self._cut_all()
            self.pid = 1000 + next(_SEQUENCE)
            self.started = time.time()
            self.data.clear()
        self.refusing = False
        self.resume()

    def answer_next(self, line: bytes, count: int = 1) -> None:
        """The next ``count`` commands (other than ``stats``) get ``line`` and do nothing."""
        with self._lock:
            self._errors.extend([line] * count)

    # -- what tests read -----------------------------------------------------------------

    def received(self, verb: str | None = None, *, pid: int | None = None) -> list[Command]:
        """Commands executed, oldest first (of one verb, of one incarnation)."""
        return [
            c
            for c in list(self.commands)
            if (verb is None or c.verb == verb) and (pid is None or c.pid == pid)
        ]

    def deleted(self) -> list[str]:
        """Keys of every ``delete`` executed, in order (repeats included)."""
        return [c.key for c in self.received("delete")]

    # -- serving -------------------------------------------------------------------------

    def serve_tcp(self, *, listening: bool = True) -> tuple[str, int]:
        """Serve on a TCP port of 127.0.0.1 too (for the real ``TcpConnector``); returns
        it. ``listening=False``: bound but refusing connections until ``listen_tcp()``."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self._listener = listener
        if listening:
            self.listen_tcp()
        host, port = listener.getsockname()
        return host, port

    def listen_tcp(self) -> None:
        assert self._listener is not None
        self._listener.listen()
        self._acceptor = threading.Thread(target=self._accept, name=f"accept {self.name}")
        self._acceptor.daemon = True
        self._acceptor.start()

    def stop_tcp(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._acceptor is not None:
                self._acceptor.join(5.0)
            listener.close()

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        listener.settimeout(POLL)
        while self._listener is listener:
            try:
                server, _ = listener.accept()
            except TimeoutError:
                continue
            connection = _Connection(self, server, None)
            self.connections.append(connection)
            connection.thread.start()

    def connect(self) -> socket.socket:
        """A new connection served by a thread; returns the daemon's end."""
        if self.refusing:
            self.refused += 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, "cannot connect: ECONNREFUSED")
        server, client = socket.socketpair()
        connection = _Connection(self, server, client)
        self.connections.append(connection)  # all kept: close() closes both ends of each
        connection.thread.start()
        return client

    def _cut_all(self) -> None:
        for connection in list(self.connections):
            connection.cut()

    def execute(self, buffer: bytearray, connection: _Connection) -> bytes:
        """Run the complete commands in ``buffer`` (consumed) unless paused, closed or
        restarted meanwhile; returns the replies."""
        out = bytearray()
        while True:
            eol = buffer.find(b"\r\n")
            if eol < 0:
                break
            parts = bytes(buffer[:eol]).split()
            verb = parts[0].decode() if parts else ""
            value = None
            end = eol + 2
            if verb in ("set", "add"):
                size = int(parts[4])
                if len(buffer) < end + size + 2:
                    break  # the data block is still coming
                value = bytes(buffer[end : end + size])
                end += size + 2
            with self._lock:
                if self.paused or connection.pid != self.pid or connection.closed:
                    break
                del buffer[:end]
                out += self._run(verb, [p.decode() for p in parts[1:]], value)
        return bytes(out)

    def _run(self, verb: str, args: list[str], value: bytes | None) -> bytes:
        key = args[0] if args and verb not in ("stats", "flush_all", "version") else ""
        command = Command(next(_SEQUENCE), self.name, self.pid, verb, key, value, tuple(args))
        if verb != "stats" and self._errors:
            self.errored.append(command)
            return self._errors.popleft() + b"\r\n"
        self.commands.append(command)
        data = self.data
        if verb == "stats":
            now = time.time()
            return b"STAT pid %d\r\nSTAT uptime %d\r\nSTAT time %d\r\nEND\r\n" % (
                self.pid,
                int(now - self.started),
                int(now),
            )
        if verb == "delete":
            return b"DELETED\r\n" if data.pop(key, None) is not None else b"NOT_FOUND\r\n"
        if verb == "set" and value is not None:
            data[key] = value
            return b"STORED\r\n"
        if verb == "add" and value is not None:
            if key in data:
                return b"NOT_STORED\r\n"
            data[key] = value
            return b"STORED\r\n"
        if verb == "incr" and key:
            if key not in data:
                return b"NOT_FOUND\r\n"
            data[key] = b"%d" % (int(data[key]) + int(args[1]))
            return data[key] + b"\r\n"
        if verb == "flush_all":
            data.clear()
            return b"OK\r\n"
        if verb == "version":
            return b"VERSION 1.6.0-memory\r\n"
        return b"ERROR\r\n"


class MemoryMemcached:
    """Fake memcached nodes reachable through this ``Connector``."""

    def __init__(self, names: Iterable[str] = ()):
        self.nodes: dict[str, MemoryNode] = {}
        self._by_address: dict[tuple[str, int], MemoryNode] = {}
        for name in names:
            self.add(name)

    def add(self, name: str, address: tuple[str, int] | None = None) -> MemoryNode:
        """A node named ``name`` ("host:port"), reachable at ``address`` (default: its name).
        A name added again is a new process at another address (a rescheduled pod): the
        name then means the new one; the old one stays reachable at its address."""
        if address is None:
            host, _, port = name.rpartition(":")
            address = (host, int(port))
        node = MemoryNode(name, address)
        self.nodes[name] = node
        self._by_address[address] = node
        return node

    def __getitem__(self, name: str) -> MemoryNode:
        return self.nodes[name]

    def every_node(self) -> list[MemoryNode]:
        """Every node ever added (also those whose name now means another process)."""
        return list(self._by_address.values())

    def received(self, verb: str | None = None) -> list[Command]:
        """Every node's commands, in the order they were executed."""
        every = [c for node in self.every_node() for c in node.received(verb)]
        return sorted(every, key=lambda c: c.seq)

    # -- Connector ------------------------------------------------------------------------

    def _node(self, address: tuple[str, int]) -> MemoryNode:
        node = self._by_address.get(address)
        if node is None:
            raise OSError(errno.EHOSTUNREACH, f"cannot resolve {address[0]}: no such node")
        return node

    def open(self, address: tuple[str, int]) -> _PairTransport:
        node = self._node(address)
        if node.refusing and node.refuse_on == "finish":
            node.refused += 1
            client, server = socket.socketpair()
            server.close()
            refusal = ConnectionRefusedError(errno.ECONNREFUSED, "cannot connect: ECONNREFUSED")
            return _PairTransport(client, refusal=refusal)
        client = node.connect()
        client.setblocking(False)
        return _PairTransport(client, steps=node.handshake_steps)

    def open_blocking(self, address: tuple[str, int], timeout: float) -> socket.socket:
        client = self._node(address).connect()
        client.settimeout(timeout)
        return client

    def close(self) -> None:
        """Close every connection (both ends) and wait for the serving threads."""
        for node in self.every_node():
            node.resume()
            node.stop_tcp()
            for connection in node.connections:
                connection.cut()
                connection.thread.join(5.0)
                if connection.client is not None:
                    connection.client.close()


# -- the source -------------------------------------------------------------------------


@dataclass(slots=True)
class Transaction:
    """One committed transaction of the fake WAL."""

    position: int  # what confirming it means (a commit's next LSN)
    changes: tuple[Change, ...]
    commit_time: float  # Unix seconds, as PostgreSQL's commit timestamp
    batched: bool = False  # fed as the C hot path does: per-node delete batches


@dataclass(slots=True)
class Confirmation:
    seq: int  # global order (see _SEQUENCE)
    position: int


class MemorySource:
    """A ``ChangeSource`` over an in-memory, append-only log of committed transactions."""

    kind = "memory"
    target = "memory log"

    def __init__(self, transactions: Iterable[Sequence[Change]] = (), *, step: int = 0x100):
        self.step = step
        self.log: list[Transaction] = []
        self.confirmed = 0  # the "slot's" confirmed position: sessions resume after it
        self.confirmations: list[Confirmation] = []
        self.sessions: list[MemorySession] = []
        self.open_errors: deque[SourceError] = deque()
        self.read_errors: deque[str] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._closed = False
        for changes in transactions:
            self.commit(changes)

    def commit(
        self, changes: Sequence[Change], commit_time: float | None = None, *, batched: bool = False
    ) -> int:
        """Append a committed transaction; returns its position. ``batched``: its deletes
        are fed the way the C hot path feeds them (``Feed.submit_batch`` per node)."""
        with self._lock:
            position = (len(self.log) + 1) * self.step
            when = time.time() if commit_time is None else commit_time
            self.log.append(Transaction(position, tuple(changes), when, batched))
            if not self._closed:
                os.write(self._wake_w, b"!")
        return position

    def fail_open(self, error: str | SourceError, times: int = 1) -> None:
        """The next ``times`` opens raise ``error`` (a message: a SourceError)."""
        self.open_errors.extend([SourceError(error) if isinstance(error, str) else error] * times)

    def fail_read(self, message: str) -> None:
        """The next read raises SourceError(message) (the connection dropped)."""
        self.read_errors.append(message)

    def confirmed_at(self, position: int) -> Confirmation | None:
        """The first confirmation that reached ``position``."""
        return next((c for c in list(self.confirmations) if c.position >= position), None)

    # -- ChangeSource ---------------------------------------------------------------------

    def setup(self) -> str:
        return "nothing to set up"

    def teardown(self) -> str:
        return "nothing to tear down"

    def status(self) -> tuple[dict[str, Any], bool]:
        return {"source": "memory", "confirmed": self.confirmed}, True

    def open(self, feed: Feed) -> MemorySession:
        if self.open_errors:
            raise self.open_errors.popleft()
        session = MemorySession(self, feed)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _confirm(self, position: int) -> None:
        if position > self.confirmed:
            self.confirmed = position
            self.confirmations.append(Confirmation(next(_SEQUENCE), position))


class MemorySession:
    """One connected run: streams the log after the confirmed position into the feed."""

    def __init__(self, source: MemorySource, feed: Feed):
        self.source = source
        self.feed = feed
        self.tracker = AckTracker(source.confirmed)
        self.next = sum(1 for t in source.log if t.position <= source.confirmed)
        self.streamed: list[tuple[Transaction, Txn]] = []
        self.turns = 0  # after_turn calls: one per loop turn
        self.closed = False
        feed.streaming(source="memory", resume_after=source.confirmed)

    def fileno(self) -> int:
        return self.source._wake_r

    def may_read(self, now: float) -> bool:
        return True

    def buffered(self) -> bool:
        return self.next < len(self.source.log)

    def read(self, ready: bool, now: float) -> None:
        source = self.source
        if source.read_errors:
            raise SourceError(source.read_errors.popleft())
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(source._wake_r, 4096)
        tracker = self.tracker
        while self.next < len(source.log):
            transaction = source.log[self.next]
            self.next += 1
            txn = tracker.begin()
            if transaction.batched:
                self._submit_batches(transaction.changes, txn)
            else:
                for change in transaction.changes:
                    self.feed.on_change(change, txn)
            tracker.commit(txn, transaction.position, transaction.commit_time)
            self.streamed.append((transaction, txn))

    def _submit_batches(self, changes: Sequence[Change], txn: Txn) -> None:
        """What the C hot path hands the feed for delete rules: per pool and node, one blob
        of pipelined ``delete`` requests (keys rendered and placed as plan() and the
        pool's placement do), and the changes counted by table and kind."""
        feed = self.feed
        placements = feed.placements()
        batches: dict[tuple[str, str], list[bytes]] = {}
        for change in changes:
            feed.count_changes(change.qualified_table, change.kind, 1)
            for op in plan(change, feed.rules).operations:
                assert op.op == "delete", "the hot path only takes delete rules"
                for node in placements[op.pool].owners(op.key):
                    batches.setdefault((op.pool, node), []).append(delete_request(op.key.encode()))
        for (pool, node), requests in batches.items():
            op = Operation("delete", "", pool, "*")
            feed.submit_batch(node, op, b"".join(requests), len(requests), txn)

    def after_turn(self, now: float) -> float:
        self.turns += 1
        finished = self.tracker.advance()
        if finished:
            self.source._confirm(self.tracker.confirmed)
            self.feed.acknowledged(commit_times(finished))
        return 0.2

    def progress(self) -> tuple[int, int]:
        log = self.source.log
        return self.tracker.confirmed, log[-1].position if log else 0

    def close(self) -> None:
        self.tracker.advance()
        self.source._confirm(self.tracker.confirmed)
        self.closed = True


# -- the daemon -------------------------------------------------------------------------


@dataclass
class RecordingLog:
    """A structlog-shaped logger that keeps (level, event, fields)."""

    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _record(self, level: str, event: str, **fields: Any) -> None:
        self.records.append((level, event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        self._record("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._record("error", event, **fields)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [f for _, e, f in list(self.records) if e == event]


class SkewClock:
    """``time.monotonic`` plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class InProcessDaemon:
    """The real ``Supervisor`` (rules, pipeline, nodes, membership, telemetry, loop) over a
    ``MemorySource`` and ``MemoryMemcached``, run in a thread."""

    def __init__(
        self,
        config: Config,
        source: MemorySource,
        memcached: MemoryMemcached,
        *,
        drain_timeout: float = 2.0,
        resolver: Callable[[str, tuple[str, ...] | None], list[Member]] | None = None,
        values: ValueSource | None = None,
        connector: Connector | None = None,
    ):
        self.source = source
        self.memcached = memcached
        self.metrics = Metrics()
        self.log = RecordingLog()
        self.supervisor = Supervisor(
            config,
            source,
            metrics=self.metrics,
            log=self.log,
            values=values,
            drain_timeout=drain_timeout,
            connector=connector or memcached,
            **({"resolver": resolver} if resolver is not None else {}),
        )
        self.result: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="invalidator", daemon=True)

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Run the loop, pipeline, telemetry and node channels on ``clock`` (before start)."""
        supervisor = self.supervisor
        supervisor.loop.clock = supervisor.pipeline.clock = supervisor.telemetry.clock = clock
        for channel in supervisor.nodes.channels.values():
            channel.clock = clock

    def _run(self) -> None:
        try:
            self.result = self.supervisor.run()
        except BaseException as exc:
            self.error = exc
        finally:
            gc.unfreeze()  # run() freezes what exists, for a process's lifetime

    def start(self) -> InProcessDaemon:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for run() to return; whether it did."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> int | None:
        """request_stop() and wait for run() to return; its exit code."""
        self.supervisor.request_stop()
        if not self.join(timeout):
            raise AssertionError(f"the daemon did not stop within {timeout:g}s")
        return self.result

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the daemon's registry, e.g. ``metric("operations_total", pool=...)``."""
        return self.metrics.registry.get_sample_value("invalidator_" + name, labels)

    def wait_metric(self, name: str, value: float, what: str = "", **labels: str) -> None:
        wait_until(
            lambda: self.metric(name, **labels) == value,
            what or f"invalidator_{name}{labels} == {value}",
        )


# -- test scaffolding -------------------------------------------------------------------

A, B, C = "mc-a:11211", "mc-b:11211", "mc-c:11211"
USERS_RULE: dict[str, Any] = {"table": "users", "keys": ["user:{id}"]}


def make_config(*rules: dict[str, Any], servers: Sequence[str] = (A, B, C), **pool: Any) -> Config:
    """One pool ``default`` over ``servers`` (plus ``pool`` settings) and ``rules``."""
    settings = {"servers": list(servers), **pool} if servers else dict(pool)
    return parse_config(
        {"pools": {"default": settings}, "rules": list(rules) or [dict(USERS_RULE)]},
        "test",
        EnvOverrides(),
    )


def updated(user_id: int, table: str = "users", **columns: Any) -> Change:
    """An UPDATE of row ``user_id`` (old image: the key column only, as REPLICA IDENTITY)."""
    return Change("update", "public", table, new={"id": user_id, **columns}, old={"id": user_id})


def owner(key: str, servers: Sequence[str] = (A, B, C)) -> str:
    """The node pymemcache's ``HashClient`` stores ``key`` on (apps' placement)."""
    return str(RendezvousHash(nodes=list(servers)).get_node(key))


def ids_on(node: str, count: int = 1, servers: Sequence[str] = (A, B, C)) -> list[int]:
    """The first ``count`` user ids whose ``user:{id}`` key lives on ``node``."""
    return [i for i in range(1, 100 * count + 100) if owner(f"user:{i}", servers) == node][:count]


class Harness:
    """Fake nodes, a fake source and the daemons started over them; stops and closes all."""

    def __init__(self, nodes: Iterable[str] = (A, B, C)):
        self.memcached = MemoryMemcached(nodes)
        self.source = MemorySource()
        self.daemons: list[InProcessDaemon] = []

    def start(self, config: Config, **options: Any) -> InProcessDaemon:
        daemon = InProcessDaemon(config, self.source, self.memcached, **options).start()
        self.daemons.append(daemon)
        return daemon

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.memcached.every_node():
            node.start()
            node.resume()
        try:
            for daemon in self.daemons:
                if daemon.running:
                    daemon.stop()
        finally:
            self.memcached.close()
            self.source.close()
