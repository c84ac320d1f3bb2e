"""Which memcached node owns a key, exactly as the apps' clients decide.

One module per client's placement; ``placement_for`` picks one from plain pool settings.
"""

from __future__ import annotations

from collections.abc import Sequence

from invalidator.core.placement.base import Placement
from invalidator.core.placement.broadcast import Broadcast
from invalidator.core.placement.grace import GracePlacement
from invalidator.core.placement.rendezvous import Rendezvous, hash_bytes
from invalidator.core.placement.servers import node_name, parse_server

__all__ = [
    "Broadcast",
    "GracePlacement",
    "Placement",
    "Rendezvous",
    "hash_bytes",
    "node_name",
    "parse_server",
    "placement_for",
]


def placement_for(hashing: str, servers: Sequence[str], fallback_depth: int = 0) -> Placement:
    """The placement a pool asks for (``hashing``) over ``servers``, in their order."""
    if hashing == "broadcast":
        return Broadcast(servers)
    return Rendezvous(servers, fallback_depth)
