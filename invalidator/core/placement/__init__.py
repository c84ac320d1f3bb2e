"""Which memcached node owns a key, exactly as the apps' clients decide.

One module per client's placement; ``placement_for`` picks one from plain pool settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from invalidator.core.placement.base import Placement
from invalidator.core.placement.broadcast import Broadcast
from invalidator.core.placement.dalli import Dalli
from invalidator.core.placement.gomemcache import GoMemcache
from invalidator.core.placement.grace import GracePlacement
from invalidator.core.placement.memjs import MemJS
from invalidator.core.placement.node_memcached import NodeMemcached
from invalidator.core.placement.rendezvous import Rendezvous, hash_bytes
from invalidator.core.placement.servers import node_name, parse_server
from invalidator.core.placement.spymemcached import Spymemcached

__all__ = [
    "Broadcast",
    "Dalli",
    "GoMemcache",
    "GracePlacement",
    "MemJS",
    "NodeMemcached",
    "Placement",
    "Rendezvous",
    "Spymemcached",
    "hash_bytes",
    "node_name",
    "parse_server",
    "placement_for",
]


def placement_for(
    client: str,
    servers: Sequence[str],
    behaviors: Mapping[str, Any] | None = None,
    fallback_depth: int = 0,
) -> Placement:
    """The placement of the apps' ``client`` library with its ``behaviors`` over
    ``servers``, in their order (``rendezvous`` is the older name of ``pymemcache``).

    ``mcrouter``: the router places keys itself, so every operation goes to the router
    node(s) listed, each of them (routers may front different pools; deletes repeat
    harmlessly)."""
    chosen = _CLIENTS.get(client)
    if chosen is not None:
        if fallback_depth:
            raise ValueError(f"client {client!r}: fallback_depth is only for pymemcache")
        return chosen(servers, behaviors or {})
    if behaviors:
        raise ValueError(f"client {client!r} takes no behaviors (got {sorted(behaviors)})")
    if client in ("broadcast", "mcrouter"):
        return Broadcast(servers)
    if client in ("pymemcache", "rendezvous"):
        return Rendezvous(servers, fallback_depth)
    raise ValueError(f"unknown client {client!r}")


# Clients whose placement class takes (servers, behaviors) and nothing else.
_CLIENTS: dict[str, Callable[[Sequence[str], Mapping[str, Any]], Placement]] = {
    "dalli": Dalli,
    "gomemcache": GoMemcache,
    "memjs": MemJS,
    "node-memcached": NodeMemcached,
    "spymemcached": Spymemcached,
}
