"""Which memcached node owns a key, exactly as the apps' clients decide.

One module per client's placement; ``placement_for`` picks one from plain pool settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from invalidator.core.placement import php_memcached, pylibmc
from invalidator.core.placement.base import Placement
from invalidator.core.placement.broadcast import Broadcast
from invalidator.core.placement.dalli import Dalli
from invalidator.core.placement.gomemcache import GoMemcache
from invalidator.core.placement.grace import GracePlacement
from invalidator.core.placement.hot_spec import HotSpec, HotSpecified
from invalidator.core.placement.libmemcached import Libmemcached
from invalidator.core.placement.memjs import MemJS
from invalidator.core.placement.node_memcached import NodeMemcached
from invalidator.core.placement.python_memcached import PythonMemcached
from invalidator.core.placement.rendezvous import Rendezvous, hash_bytes
from invalidator.core.placement.servers import node_name, parse_server, split_weight
from invalidator.core.placement.spymemcached import Spymemcached

__all__ = [
    "CLIENTS",
    "Broadcast",
    "Dalli",
    "GoMemcache",
    "GracePlacement",
    "HotSpec",
    "HotSpecified",
    "Libmemcached",
    "MemJS",
    "NodeMemcached",
    "Placement",
    "PythonMemcached",
    "Rendezvous",
    "Spymemcached",
    "hash_bytes",
    "node_name",
    "parse_server",
    "placement_for",
    "split_weight",
]

# Every `pools.NAME.client` the configuration accepts (SPEC "Pools").
CLIENTS = (
    "pymemcache",
    "pylibmc",
    "python-memcached",
    "php-memcached",
    "dalli",
    "spymemcached",
    "gomemcache",
    "node-memcached",
    "memjs",
    "mcrouter",
    "broadcast",
)
# Clients whose server list takes weights ("host:port 2").
_WEIGHTED = frozenset(
    {"pylibmc", "php-memcached", "python-memcached", "dalli", "spymemcached", "node-memcached"}
)
# Clients whose placement takes options (`behaviors`).
_WITH_BEHAVIORS = frozenset({"pylibmc", "php-memcached", "spymemcached", "node-memcached"})
# Clients whose placement class takes (servers, behaviors) and nothing else.
_CLASSES: dict[str, Callable[[Sequence[str], Mapping[str, Any]], Placement]] = {
    "dalli": Dalli,
    "gomemcache": GoMemcache,
    "memjs": MemJS,
    "node-memcached": NodeMemcached,
    "spymemcached": Spymemcached,
}


def placement_for(
    client: str,
    servers: Sequence[str],
    behaviors: Mapping[str, Any] | None = None,
    fallback_depth: int = 0,
) -> Placement:
    """The placement of the apps' ``client`` library with its ``behaviors`` over
    ``servers``, in their order (``rendezvous`` is the older name of ``pymemcache``).
    Entries may carry a weight (``"host:port 2"``) for clients that take one. Raises
    ``ValueError`` naming what cannot be reproduced."""
    behaviors = behaviors or {}
    if client == "rendezvous":
        client = "pymemcache"
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r} (known: {', '.join(CLIENTS)})")
    if behaviors and client not in _WITH_BEHAVIORS:
        raise ValueError(f"client {client} takes no behaviors (got {', '.join(behaviors)})")
    weighted = [s for s in servers if split_weight(s)[1] is not None]
    if weighted and client not in _WEIGHTED:
        raise ValueError(f"client {client} takes no server weights (got {weighted[0]!r})")
    if fallback_depth and client in ("pylibmc", "php-memcached"):
        raise ValueError(
            f"fallback_depth is not available for client {client}: libmemcached's "
            "failover (auto_eject/remove_failed) is not reproduced; leave it 0"
        )
    chosen = _CLASSES.get(client)
    if chosen is not None:
        if fallback_depth:
            raise ValueError(f"client {client!r}: fallback_depth is not reproduced for it")
        return chosen(servers, behaviors)
    if client in ("broadcast", "mcrouter"):
        # mcrouter places keys itself: every operation goes to each router listed
        # (routers may front different pools; deletes repeat harmlessly).
        return Broadcast(servers)
    if client == "pymemcache":
        return Rendezvous(servers, fallback_depth)
    if client == "pylibmc":
        return pylibmc.placement(servers, behaviors)
    if client == "php-memcached":
        return php_memcached.placement(servers, behaviors)
    if client == "python-memcached":
        return PythonMemcached(servers, fallback_depth)
    raise ValueError(f"client {client} is not implemented yet")
