"""pylibmc's behaviours, as ``pylibmc.Client(servers, behaviors=...)`` applies them to
libmemcached: names and values as pylibmc takes them, applied in pylibmc's own fixed order
(``PylibMC_behaviors`` in its C module: hash, ketama_hash, ketama, ketama_weighted,
distribution, ..., _sort_hosts), all before the servers are added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.core.placement import hashkit, libmemcached
from invalidator.core.placement.libmemcached import Libmemcached, Settings

# pylibmc.distributions (its names have spaces where libmemcached's have underscores).
DISTRIBUTIONS = {
    "modula": libmemcached.MODULA,
    "consistent": libmemcached.CONSISTENT,
    "random": libmemcached.RANDOM,
    "consistent ketama": libmemcached.CONSISTENT_KETAMA,
    "consistent ketama spy": libmemcached.CONSISTENT_KETAMA_SPY,
    "consistent weighted": libmemcached.CONSISTENT_WEIGHTED,
    "virtual bucket": libmemcached.VIRTUAL_BUCKET,
}

# Behaviours that change placement, in the order pylibmc sets them.
_ORDER = ("hash", "ketama_hash", "ketama", "ketama_weighted", "distribution", "_sort_hosts")
_FLAGS = {
    "hash": libmemcached.BEHAVIOR_HASH,
    "ketama_hash": libmemcached.BEHAVIOR_KETAMA_HASH,
    "ketama": libmemcached.BEHAVIOR_KETAMA,
    "ketama_weighted": libmemcached.BEHAVIOR_KETAMA_WEIGHTED,
    "distribution": libmemcached.BEHAVIOR_DISTRIBUTION,
    "_sort_hosts": libmemcached.BEHAVIOR_SORT_HOSTS,
}
# Behaviours that only change how the app talks to a node, never where a key goes while
# every node answers (auto_eject/remove_failed move keys only off a failing node).
NEUTRAL = frozenset(
    {
        "no_block",
        "tcp_nodelay",
        "tcp_keepalive",
        "cas",
        "buffer_requests",
        "verify_keys",
        "connect_timeout",
        "send_timeout",
        "receive_timeout",
        "auto_eject",
        "retry_timeout",
        "remove_failed",
        "failure_limit",
        "dead_timeout",
        "pickle_protocol",
        "_io_msg_watermark",
        "_io_bytes_watermark",
        "_io_key_prefetch",
        "_noreply",
        "_poll_timeout",
        "_socket_send_size",
        "_socket_recv_size",
    }
)
# Placement options not reproduced: refused rather than ignored.
_UNSUPPORTED = {
    "num_replicas": "num_replicas (libmemcached replicas write a key to several nodes)",
    "_hash_with_prefix_key": "_hash_with_prefix_key (the namespace is hashed with the key)",
    "namespace": "namespace (libmemcached prefixes keys the app never sees)",
}


def _flag(name: str, value: Any) -> int:
    if isinstance(value, bool | int):
        return int(value)
    raise ValueError(f"behaviors.{name}: expected true/false or a number, got {value!r}")


def _value(name: str, value: Any) -> int:
    """A behaviour's value as pylibmc turns it into libmemcached's number."""
    if name == "hash" or (name == "ketama_hash" and isinstance(value, str)):
        if value not in hashkit.NUMBER:
            known = ", ".join(hashkit.NUMBER)
            raise ValueError(f"behaviors.{name}: unknown hash {value!r} (pylibmc's: {known})")
        return hashkit.NUMBER[value]
    if name == "distribution":
        if value not in DISTRIBUTIONS:
            known = ", ".join(DISTRIBUTIONS)
            raise ValueError(
                f"behaviors.distribution: unknown distribution {value!r} (pylibmc's: {known})"
            )
        return DISTRIBUTIONS[value]
    return _flag(name, value)


def settings(behaviors: Mapping[str, Any]) -> Settings:
    """libmemcached's settings after ``pylibmc.Client(servers, behaviors=behaviors)``."""
    known = set(_ORDER) | NEUTRAL | set(_UNSUPPORTED)
    unknown = sorted(set(behaviors) - known)
    if unknown:
        raise ValueError(
            f"unknown pylibmc behavior {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    for name, why in _UNSUPPORTED.items():
        if name in behaviors and behaviors[name] not in (0, False, None, ""):
            raise ValueError(f"pylibmc behavior {why} changes placement and is not supported")
    result = Settings()
    for name in _ORDER:
        if name in behaviors:
            try:
                result = result.set(_FLAGS[name], _value(name, behaviors[name]))
            except ValueError as exc:
                text = str(exc)
                raise ValueError(
                    text if text.startswith("behaviors.") else f"behaviors.{name}: {text}"
                ) from None
    return result


def placement(servers: Sequence[str], behaviors: Mapping[str, Any]) -> Libmemcached:
    """pylibmc's placement of keys over ``servers`` (``"host:port"``, optional weight)."""
    return Libmemcached(servers, settings(behaviors), client="pylibmc")
