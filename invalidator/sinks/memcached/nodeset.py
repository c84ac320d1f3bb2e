"""Every memcached node of every pool, their channels, and where each pool's keys go.

The daemon's one view of the cache: ``submit`` routes operations through the pools'
placements onto node channels; the loop drives the channels' sockets. Membership changes
(``set_members``) add channels, move addresses and remove nodes no pool uses any more;
``version`` moves on every placement change so the C hot path knows to rebuild.
"""

from __future__ import annotations

import contextlib
import selectors
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from invalidator.core.operations import Operation
from invalidator.core.placement import Placement
from invalidator.core.routing import Routed, Router
from invalidator.core.tracker import Txn
from invalidator.sinks.memcached.channel import Entry, NodeChannel
from invalidator.sinks.memcached.connector import PLAIN, Connector

NODE_WINDOW = 50_000  # a healthy node's queued + in-flight operations before reading pauses


class NodeSet:
    """Node name → channel, and the router whose placements name those nodes."""

    def __init__(
        self,
        placements: Mapping[str, Placement],
        addresses: Mapping[str, tuple[str, int]],
        *,
        max_queue: Mapping[str, int],
        on_error: Callable[[str, str], None],
        on_event: Callable[[str, str, int, str], None],
        connector: Connector = PLAIN,
        connectors: Mapping[str, Connector] | None = None,
    ):
        self.router = Router(placements)
        self.channels: dict[str, NodeChannel] = {}
        self.version = 0
        self._on_error = on_error
        self._on_event = on_event
        self._connector = connector
        # Pool → its connector (TLS pools); pools not listed use ``connector``.
        self._connectors = dict(connectors or {})
        self._registered: dict[str, tuple[Any, int]] = {}
        for pool, placement in placements.items():
            for node in placement.nodes:
                self.ensure(node, addresses[node], max_queue[pool], pool)

    # -- membership -----------------------------------------------------------------------

    def connector_for(self, pool: str | None) -> Connector:
        if pool is None:
            return self._connector
        return self._connectors.get(pool, self._connector)

    def ensure(
        self, node: str, address: tuple[str, int], max_queue: int, pool: str | None = None
    ) -> None:
        """A channel for ``node`` of ``pool`` at ``address`` (a new address: reconnect
        there), connected with the pool's connector."""
        channel = self.channels.get(node)
        connector = self.connector_for(pool)
        if channel is None:
            self.channels[node] = NodeChannel(
                node,
                address,
                on_error=self._on_error,
                on_event=self._on_event,
                max_queue=max_queue,
                connector=connector,
            )
            return
        if channel.connector is not connector:
            # Static pools cannot do this (a config error); a discovered node that is also
            # another pool's node keeps the transport it has, loudly.
            self._on_event(
                node,
                "transport_conflict",
                0,
                f"also in pool {pool!r} with different tls settings; keeping its first pool's",
            )
        channel.max_queue = min(channel.max_queue, max_queue)
        if channel.address != address:
            channel.move_to(address)

    def set_placement(self, pool: str, placement: Placement) -> None:
        self.router.placements[pool] = placement
        self.version += 1

    def remove_unused(self) -> list[tuple[str, int]]:
        """Drop nodes that no pool places keys on; returns (node, operations dropped)."""
        used = {n for p in self.router.placements.values() for n in p.nodes}
        removed = []
        for node in [n for n in self.channels if n not in used]:
            # Removed from every pool: whatever it held is no longer read by anyone.
            channel = self.channels.pop(node)
            removed.append((node, channel.drop_all()))
            channel.close()
        return removed

    # -- work -----------------------------------------------------------------------------

    def submit(self, operations: Iterable[Operation], txn: Txn | None) -> list[Routed]:
        """Queue each operation on every owning node, in order; returns where each went."""
        channels = self.channels
        routed = self.router.route(operations)
        for item in routed:
            channels[item.node].submit(item.operation, txn)
        return routed

    def submit_batch(self, node: str, op: Operation, requests: bytes, count: int, txn: Txn) -> None:
        self.channels[node].submit_batch(op, requests, count, txn)

    def redelete(self, node: str, op: Operation) -> bool:
        """A second delete no transaction waits for; False if one is already queued."""
        channel = self.channels.get(node)
        if channel is None or op.key in channel.unsent_deletes:
            return False
        channel.submit(op, None)
        return True

    @property
    def pending(self) -> int:
        return sum(c.pending for c in self.channels.values())

    def pending_by_node(self) -> dict[str, int]:
        return {node: c.pending for node, c in self.channels.items()}

    def below_window(self) -> bool:
        """Only a healthy node's full window pauses reading: an unreachable node's queue
        is bounded by its own overflow (flush_all on return) instead."""
        return all(c.pending < NODE_WINDOW for c in self.channels.values() if c.healthy)

    @property
    def wants_write(self) -> bool:
        return any(c.wants_write for c in self.channels.values())

    # -- I/O (driven by the loop) ---------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        for channel in self.channels.values():
            channel.check_timeout(now)

    def register(self, selector: selectors.BaseSelector, now: float) -> None:
        """Keep the selector's node entries in step with the channels' transports.

        Registered by transport object, unregistering stale entries before registering
        new ones: a reconnect may reuse a closed socket's fd number."""
        wanted: dict[str, tuple[Any, int]] = {}
        for node, channel in self.channels.items():
            if channel.transport is None and channel.pending:
                channel.ensure_connected()
            if channel.transport is not None:
                events = selectors.EVENT_READ
                if channel.wants_write and now >= channel.retry_at:
                    events |= selectors.EVENT_WRITE
                wanted[node] = (channel.transport, events)
        registered = self._registered
        for node, current in list(registered.items()):
            new = wanted.get(node)
            if new is None or new[0] is not current[0] or new[1] != current[1]:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(current[0])
                del registered[node]
        for node, new in wanted.items():
            if node not in registered:
                selector.register(new[0], new[1], self.channels[node])
                registered[node] = new

    def forget_selector(self) -> None:
        """The selector was closed: register everything afresh next time."""
        self._registered.clear()

    @staticmethod
    def on_event(channel: NodeChannel, events: int) -> list[Entry]:
        """Serve one selector event of ``channel``; returns the settled entries."""
        done = channel.on_readable() if events & selectors.EVENT_READ else []
        if events & selectors.EVENT_WRITE:
            channel.on_writable()
        return done

    def write_ready(self, now: float) -> None:
        """Send what is queued on every connected node that is not in a retry delay."""
        for channel in self.channels.values():
            if (
                channel.queue
                and channel.transport is not None
                and not channel.connecting
                and now >= channel.retry_at
            ):
                channel.on_writable()

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
