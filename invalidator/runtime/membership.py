"""Pools whose nodes come from DNS SRV: re-resolved on a timer, placed with a grace period.

On a change the pool's placement is rebuilt over the new members; for ``grace`` seconds
the old owners (still members) get each operation too, because apps whose own discovery
lags still read there. Initially a failure is fatal for this attempt (the supervisor
retries); later the last known membership is kept and the failure logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invalidator.config import Config
from invalidator.config.build import pool_placement
from invalidator.core.placement import GracePlacement
from invalidator.errors import SourceError
from invalidator.runtime.discovery import DiscoveryError, Member, resolve
from invalidator.sinks.memcached.nodeset import NodeSet

Resolver = Callable[[str, tuple[str, ...] | None], list[Member]]


class Membership:
    """The discovered pools of a config, kept in step with DNS."""

    def __init__(self, config: Config, nodes: NodeSet, log: Any, resolver: Resolver = resolve):
        self.config = config
        self.nodes = nodes
        self.log = log
        self.resolver = resolver
        self.discovered: dict[str, list[Member]] = {}
        self.next_due = 0.0  # next DNS lookup
        self._grace_ends = float("inf")  # earliest end of a grace period
        self.next_check = 0.0  # the earlier of the two
        self._pools = {n: p for n, p in config.pools.items() if p.discover is not None}

    def tick(self, now: float, *, initial: bool = False) -> None:
        """End expired grace periods; resolve every discovered pool if due (always when
        ``initial``). Cheap when nothing is due: the loop calls it every turn."""
        if not initial and now < self.next_check:
            return
        if now >= self._grace_ends:
            self._end_grace(now)
        if initial or now >= self.next_due:
            self._resolve(now, initial)
        self.next_check = min(self.next_due, self._grace_ends)

    def _resolve(self, now: float, initial: bool) -> None:
        for name, pool in self._pools.items():
            assert pool.discover is not None
            srv = pool.discover.srv
            try:
                members = self.resolver(srv, pool.discover.nameservers)
            except DiscoveryError as exc:
                if initial and name not in self.discovered:
                    raise SourceError(str(exc)) from None
                self.log.warning(
                    "discovery failed; keeping the last membership", pool=name, error=str(exc)
                )
                continue
            if not members:
                self.log.warning(
                    "discovery found no nodes; keeping the last membership", pool=name, srv=srv
                )
                if initial and name not in self.discovered:
                    raise SourceError(f"discover {srv}: no nodes")
                continue
            self._apply(name, members, pool.discover.grace, now)
        every = [p.discover.every for p in self._pools.values() if p.discover is not None]
        self.next_due = now + (min(every) if every else float("inf"))

    def _end_grace(self, now: float) -> None:
        """Grace placements whose time is up give way to their new placement."""
        ends = float("inf")
        for pool, placement in list(self.nodes.router.placements.items()):
            if isinstance(placement, GracePlacement):
                if placement.expired(now):
                    self.nodes.set_placement(pool, placement.new)
                else:
                    ends = min(ends, placement.until)
        self._grace_ends = ends

    def _apply(self, pool: str, members: list[Member], grace: float, now: float) -> None:
        previous = self.discovered.get(pool)
        if previous == members:
            return
        config = self.config.pools[pool]
        self.discovered[pool] = members
        for member in members:
            self.nodes.ensure(member.name, member.address, config.max_queue, pool)
        new = pool_placement(self.config, pool, tuple(m.name for m in members))
        old = self.nodes.router.placements.get(pool)
        if isinstance(old, GracePlacement):
            old = old.new
        if old is not None:
            self.nodes.set_placement(pool, GracePlacement(new, old, now + grace))
            self._grace_ends = min(self._grace_ends, now + grace)
        else:
            self.nodes.set_placement(pool, new)
        for node, dropped in self.nodes.remove_unused():
            self.log.info("memcached node removed", node=node, dropped_operations=dropped)
        self.log.info(
            "pool membership",
            pool=pool,
            nodes=sorted(m.name for m in members),
            previous=sorted(m.name for m in previous) if previous else None,
            grace_seconds=grace if old is not None else None,
        )
