"""The blocking memcached client of the commands (``replay --apply``, ``warm``, ``check``,
``audit``) and of the audit probe's thread.

One connection per node; a node's operations are written in one go and their replies
read back in order, so order per key is the order given.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from invalidator.core.operations import Operation
from invalidator.core.routing import Router, by_node
from invalidator.errors import NodeError
from invalidator.sinks.memcached.connector import PLAIN, Connector
from invalidator.sinks.memcached.protocol import (
    BumpStep,
    Item,
    Outcome,
    ReplyReader,
    ValuesReader,
    bump_next,
    classify,
    gets_request,
    request_for,
)

DEFAULT_TIMEOUT = 5.0
GET_BATCH = 100  # keys per `gets` request
MAX_BUMP_ROUNDS = 4  # incr, add, incr again, add again: then report what it answered


@dataclass(frozen=True, slots=True)
class Applied:
    """What a node answered to one operation."""

    operation: Operation
    node: str
    outcome: Outcome
    detail: str = ""


class NodeConnection:
    """A blocking, pipelining connection to one memcached node."""

    def __init__(
        self,
        node: str,
        address: tuple[str, int],
        timeout: float = DEFAULT_TIMEOUT,
        connector: Connector = PLAIN,
    ):
        self.node = node
        self.address = address
        self.timeout = timeout
        self.connector = connector
        self._sock: socket.socket | None = None
        self._reader = ReplyReader()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = self.connector.open_blocking(self.address, self.timeout)
            except OSError as exc:
                raise NodeError(self.node, f"cannot connect: {exc.strerror or exc}") from None
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

    def gets_many(self, keys: Sequence[str]) -> dict[str, Item]:
        """What this node holds for ``keys`` (absent keys left out), with CAS uniques, in
        pipelined ``gets`` requests of at most ``GET_BATCH`` keys."""
        if not keys:
            return {}
        encoded = [k.encode("utf-8") for k in keys]
        requests = [
            gets_request(encoded[i : i + GET_BATCH]) for i in range(0, len(encoded), GET_BATCH)
        ]
        sock = self._connect()
        reader = ValuesReader()
        found: dict[bytes, Item] = {}
        done = 0
        try:
            sock.sendall(b"".join(requests))
            while done < len(requests):
                data = sock.recv(262144)
                if not data:
                    raise NodeError(self.node, "connection closed by the server")
                for reply in reader.feed(data):
                    found.update(reply)
                    done += 1
        except OSError as exc:
            self.close()
            raise NodeError(self.node, f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            self.close()
            raise NodeError(self.node, str(exc)) from None
        except NodeError:
            self.close()
            raise
        return {key.decode("utf-8"): value for key, value in found.items()}

    def apply(self, operations: Sequence[Operation]) -> list[Applied]:
        """Apply ``operations`` in order; a ``bump`` follows the bump protocol (a missing
        counter is created) in further pipelined rounds."""
        replies = [
            classify(line) for line in self.roundtrip([request_for(op) for op in operations])
        ]
        results = [
            Applied(op, self.node, r.outcome, r.line.decode("latin-1"))
            for op, r in zip(operations, replies, strict=True)
        ]
        steps: dict[int, BumpStep] = {
            i: "incr" for i, op in enumerate(operations) if op.op == "bump"
        }
        for _ in range(MAX_BUMP_ROUNDS):
            following: dict[int, tuple[BumpStep, bytes]] = {}
            for i, step in steps.items():
                nxt = bump_next(step, operations[i].key.encode(), results[i].outcome)
                if nxt is not None:
                    following[i] = nxt
            if not following:
                break
            lines = self.roundtrip([request for _, request in following.values()])
            steps = {}
            for (i, (step, _)), line in zip(following.items(), lines, strict=True):
                outcome = classify(line).outcome
                detail = "created" if step == "add" and outcome == "ok" else line.decode("latin-1")
                results[i] = Applied(operations[i], self.node, outcome, detail)
                steps[i] = step
        return results


class MemcachedSink:
    """Applies operations to every pool's nodes, one pipelined batch per node."""

    def __init__(
        self,
        router: Router,
        addresses: Mapping[str, tuple[str, int]],
        timeout: float = DEFAULT_TIMEOUT,
        connector: Connector = PLAIN,
        connectors: Mapping[str, Connector] | None = None,
    ):
        """``connectors``: node → its pool's connector (TLS); the others use ``connector``."""
        self.router = router
        chosen = connectors or {}
        self.connections = {
            node: NodeConnection(node, address, timeout, chosen.get(node, connector))
            for node, address in addresses.items()
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
