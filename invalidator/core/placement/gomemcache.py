"""gomemcache's placement: ``memcache.ServerList.PickServer`` of github.com/bradfitz/gomemcache.

The key's bytes (UTF-8, as Go strings hold them) go through CRC-32 (IEEE), modulo the
number of servers, in the order given to ``memcache.New``; one server takes every key.
Addresses play no part, so the node names are only the order. No options change it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.core.placement.hot_spec import MODULA, HotSpec
from invalidator.core.placement.servers import node_name


class GoMemcache:
    """``crc32.ChecksumIEEE(key) % len(servers)``, as gomemcache's ``ServerList`` picks."""

    def __init__(self, servers: Sequence[str], behaviors: Mapping[str, Any] | None = None):
        if behaviors:
            raise ValueError(
                f"client 'gomemcache' takes no behaviors (got {sorted(behaviors)}): "
                "its placement has no options"
            )
        if not servers:
            raise ValueError("gomemcache placement needs at least one server")
        self.nodes = tuple(node_name(s) for s in servers)
        self.hot_mode: str | None = MODULA

    def hot_spec(self) -> HotSpec:
        return HotSpec.modula("crc32", len(self.nodes))

    def owners(self, key: str) -> tuple[str, ...]:
        if len(self.nodes) == 1:
            return self.nodes
        return (self.nodes[zlib.crc32(key.encode("utf-8")) % len(self.nodes)],)
