"""memjs's placement: ``Client#getServer`` of the npm ``memjs`` package.

The key's Java-style string hash (``h = 31*h + c`` over UTF-16 code units, 32-bit signed),
made non-negative with ``Math.abs``, modulo the number of servers, in the order of the
``Client.create("host:port,...")`` string; one server takes every key. Names play no part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.core.placement.hot_spec import MODULA, HotSpec
from invalidator.core.placement.java_string import hash_code, signed
from invalidator.core.placement.servers import node_name


def string_hash(key: str) -> int:
    """memjs ``utils.hashCode``: ``Math.abs`` of Java's ``String.hashCode``."""
    return abs(signed(hash_code(key)))


class MemJS:
    """``Math.abs(hashCode(key)) % servers.length``, as memjs's ``Client#server`` picks."""

    def __init__(self, servers: Sequence[str], behaviors: Mapping[str, Any] | None = None):
        if behaviors:
            raise ValueError(
                f"client 'memjs' takes no behaviors (got {sorted(behaviors)}): "
                "its placement has no options"
            )
        if not servers:
            raise ValueError("memjs placement needs at least one server")
        self.nodes = tuple(node_name(s) for s in servers)
        self.hot_mode: str | None = MODULA

    def hot_spec(self) -> HotSpec:
        return HotSpec.modula("java_hashcode_abs", len(self.nodes))

    def owners(self, key: str) -> tuple[str, ...]:
        if len(self.nodes) == 1:
            return self.nodes
        return (self.nodes[string_hash(key) % len(self.nodes)],)
