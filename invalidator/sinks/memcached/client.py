"""The memcached edge: route operations to nodes and apply them with pipelined requests.

One connection per node, TCP_NODELAY on (a request behind an unanswered one must not wait
for a delayed ACK). Operations of one node are written in one go and their replies read
back in order, so order per key is the order given.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from invalidator.config import PoolConfig
from invalidator.core.operations import Operation
from invalidator.core.placement import Placement, node_name, parse_server, placement_for
from invalidator.errors import NodeError
from invalidator.sinks.memcached.protocol import (
    Outcome,
    ReplyReader,
    add_request,
    classify,
    incr_request,
    request_for,
)

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Routed:
    """An operation bound for one node."""

    operation: Operation
    node: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What a node answered to one operation."""

    operation: Operation
    node: str
    outcome: Outcome
    detail: str = ""


class Router:
    """Pool name → placement, and node name → address."""

    def __init__(self, pools: Mapping[str, PoolConfig]):
        self.placements: dict[str, Placement] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        for name, pool in pools.items():
            if not pool.servers:
                continue  # discovered pools are resolved by the daemon
            self.placements[name] = placement_for(pool.hashing, pool.servers, pool.fallback_depth)
            for server in pool.servers:
                self.addresses[node_name(server)] = parse_server(server)

    def route(self, operations: Iterable[Operation]) -> list[Routed]:
        """Each operation once per owning node, in the given order."""
        placements = self.placements
        routed: list[Routed] = []
        for op in operations:
            placement = placements[op.pool]
            nodes = placement.nodes if op.op == "flush" else placement.owners(op.key)
            for node in nodes:
                routed.append(Routed(op, node))
        return routed


def by_node(routed: Iterable[Routed]) -> dict[str, list[Operation]]:
    """Group routed operations per node, keeping their order."""
    groups: dict[str, list[Operation]] = {}
    for item in routed:
        groups.setdefault(item.node, []).append(item.operation)
    return groups


class NodeConnection:
    """A blocking, pipelining connection to one memcached node."""

    def __init__(self, node: str, address: tuple[str, int], timeout: float = DEFAULT_TIMEOUT):
        self.node = node
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = ReplyReader()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as exc:
                raise NodeError(self.node, f"cannot connect: {exc.strerror or exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._reader = ReplyReader()
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def roundtrip(self, requests: Sequence[bytes]) -> list[bytes]:
        """Send ``requests`` pipelined; return their reply lines in order."""
        sock = self._connect()
        try:
            sock.sendall(b"".join(requests))
            lines: list[bytes] = []
            while len(lines) < len(requests):
                data = sock.recv(262144)
                if not data:
                    raise NodeError(self.node, "connection closed by the server")
                lines.extend(self._reader.feed(data))
        except OSError as exc:
            self.close()
            raise NodeError(self.node, f"{type(exc).__name__}: {exc}") from None
        except NodeError:
            self.close()
            raise
        return lines

    def apply(self, operations: Sequence[Operation]) -> list[Applied]:
        """Apply ``operations`` in order; ``bump`` creates a missing counter with ``add``."""
        replies = [
            classify(line) for line in self.roundtrip([request_for(op) for op in operations])
        ]
        results = [
            Applied(op, self.node, r.outcome, r.line.decode("latin-1"))
            for op, r in zip(operations, replies, strict=True)
        ]
        missing = [
            i
            for i, a in enumerate(results)
            if a.operation.op == "bump" and a.outcome == "not_found"
        ]
        if missing:
            results = self._create_counters(results, missing)
        return results

    def _create_counters(self, results: list[Applied], indexes: list[int]) -> list[Applied]:
        # add "1" is atomic: if another writer created the counter first, incr it instead.
        keys = [results[i].operation.key.encode() for i in indexes]
        added = self.roundtrip([add_request(k, b"1") for k in keys])
        retry = [
            (i, k)
            for i, k, line in zip(indexes, keys, added, strict=True)
            if classify(line).outcome != "ok"
        ]
        retried = self.roundtrip([incr_request(k) for _, k in retry]) if retry else []
        for i in indexes:
            results[i] = Applied(results[i].operation, self.node, "ok", "created")
        for (i, _), line in zip(retry, retried, strict=True):
            reply = classify(line)
            results[i] = Applied(
                results[i].operation, self.node, reply.outcome, line.decode("latin-1")
            )
        return results


class MemcachedSink:
    """Applies operations to every pool's nodes, one pipelined batch per node."""

    def __init__(self, router: Router, timeout: float = DEFAULT_TIMEOUT):
        self.router = router
        self.connections = {
            node: NodeConnection(node, address, timeout)
            for node, address in router.addresses.items()
        }

    def apply(self, operations: Iterable[Operation]) -> tuple[list[Applied], list[NodeError]]:
        """Apply everything; a failing node does not stop the others."""
        applied: list[Applied] = []
        failures: list[NodeError] = []
        for node, ops in by_node(self.router.route(operations)).items():
            try:
                applied.extend(self.connections[node].apply(ops))
            except NodeError as exc:
                failures.append(exc)
        return applied, failures

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()
