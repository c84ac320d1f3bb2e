"""python-memcached's placement (``memcache.Client``, PyPI ``python-memcached``).

Each server fills ``weight`` consecutive buckets, in the configured order; a key's bucket
is ``((crc32(utf8 key) & 0xffffffff) >> 16) & 0x7fff`` modulo the bucket count. When that
server cannot be connected, the client rehashes ``str(hash) + str(attempt)`` and tries
again: ``fallback_depth`` adds those next choices. Server strings never enter the hash,
so only order and weights matter.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from invalidator.core.placement.hot_spec import MODULA, HotSpec
from invalidator.core.placement.servers import node_name, split_weight

_SERVER_RETRIES = 10  # memcache.Client._SERVER_RETRIES


def server_hash(data: bytes) -> int:
    """python-memcached's ``cmemcache_hash``."""
    return (zlib.crc32(data) >> 16) & 0x7FFF


class PythonMemcached:
    """Keys placed as ``memcache.Client(servers)`` places them (weights as bucket repeats)."""

    def __init__(self, servers: Sequence[str], fallback_depth: int = 0):
        if not servers:
            raise ValueError("python-memcached placement needs at least one server")
        self.nodes = tuple(node_name(s) for s in servers)
        self.fallback_depth = fallback_depth
        # the rehash chain of fallback_depth stays Python's
        self.hot_mode: str | None = MODULA if fallback_depth == 0 else None
        buckets: list[str] = []
        for server, node in zip(servers, self.nodes, strict=True):
            buckets.extend([node] * (split_weight(server)[1] or 1))
        self._buckets = tuple(buckets)

    def hot_spec(self) -> HotSpec | None:
        """C's lookup: the same hash, modulo the same buckets (no fallback_depth)."""
        if self.hot_mode is None:
            return None
        index = {node: i for i, node in reversed(list(enumerate(self.nodes)))}
        return HotSpec(MODULA, "crc32_hi15", (), tuple(index[n] for n in self._buckets))

    def owner(self, key: str) -> str:
        """The node ``Client._get_server`` picks for ``key`` while it answers."""
        return self._buckets[server_hash(key.encode()) % len(self._buckets)]

    def owners(self, key: str) -> tuple[str, ...]:
        """The owner, then the next ``fallback_depth`` distinct nodes of the client's
        rehash chain (it gives up after ``_SERVER_RETRIES`` = 10 tries)."""
        value = server_hash(key.encode())
        chosen: list[str] = []
        for attempt in range(_SERVER_RETRIES):
            node = self._buckets[value % len(self._buckets)]
            if node not in chosen:
                chosen.append(node)
                if len(chosen) > self.fallback_depth:
                    break
            value = server_hash(f"{value}{attempt}".encode("ascii"))
        return tuple(chosen)
