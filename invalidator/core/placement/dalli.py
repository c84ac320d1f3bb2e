"""dalli's placement: ``Dalli::Ring`` of the Ruby ``dalli`` gem (3.x).

Each server named ``host:port`` (IPv6 unbracketed, port 11211 when not written) gets
``floor(servers * 160 * weight / total_weight)`` points: the first 32 bits of
``SHA1("<name>:<i>")``. A key's CRC-32 (of its UTF-8 bytes) goes to the last point at or
below it, wrapping to the highest point; one server takes every key. The app's weights
(``"host:port:weight"``) are written ``"host:port weight"`` here.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.core.placement.hot_spec import CONTINUUM_BELOW, HotSpec
from invalidator.core.placement.servers import node_name, split_weight

POINTS_PER_SERVER = 160


class Dalli:
    """``Dalli::Ring#server_for_key`` over the app's server list, every server alive."""

    def __init__(self, servers: Sequence[str], behaviors: Mapping[str, Any] | None = None):
        if behaviors:
            raise ValueError(
                f"client 'dalli' takes no behaviors (got {sorted(behaviors)}): a namespace "
                "belongs in the key template ('<namespace>:...')"
            )
        if not servers:
            raise ValueError("dalli placement needs at least one server")
        entries = [split_weight(s) for s in servers]
        self.nodes = tuple(node_name(s) for s, _ in entries)
        self.hot_mode: str | None = CONTINUUM_BELOW
        weights = [w or 1 for _, w in entries]
        total = sum(weights)
        points: list[tuple[int, str]] = []
        for node, weight in zip(self.nodes, weights, strict=True):
            for i in range(math.floor(len(self.nodes) * POINTS_PER_SERVER * weight / total)):
                digest = hashlib.sha1(f"{node}:{i}".encode()).digest()
                points.append((int.from_bytes(digest[:4], "big"), node))
        points.sort(key=lambda point: point[0])
        self._values = [value for value, _ in points]
        self._owners = [node for _, node in points]

    def hot_spec(self) -> HotSpec:
        """The last point at or below the key's CRC-32, wrapping to the highest."""
        return HotSpec.continuum(CONTINUUM_BELOW, "crc32", self._values, self._owners, self.nodes)

    def owners(self, key: str) -> tuple[str, ...]:
        if len(self.nodes) == 1:
            return self.nodes
        value = zlib.crc32(key.encode("utf-8", "surrogatepass"))
        return (self._owners[bisect.bisect_right(self._values, value) - 1],)
