"""Every node gets every operation: small pools, or apps whose placement is unknown."""

from __future__ import annotations

from collections.abc import Sequence

from invalidator.core.placement.servers import node_name


class Broadcast:
    """Every node gets every operation (for small pools or unknown client hashing)."""

    def __init__(self, servers: Sequence[str]):
        if not servers:
            raise ValueError("broadcast placement needs at least one server")
        self.nodes = tuple(node_name(s) for s in servers)
        self.hot_mode: str | None = "broadcast"

    def owners(self, key: str) -> tuple[str, ...]:
        return self.nodes
