"""php-memcached's options (``Memcached::setOption``/``setOptions``), as they reach
libmemcached: the ``OPT_`` constant's name in lower case without ``OPT_``
(``Memcached::OPT_LIBKETAMA_COMPATIBLE`` → ``libketama_compatible``), values as the
constant's suffix in lower case (``Memcached::HASH_MD5`` → ``md5``,
``Memcached::DISTRIBUTION_CONSISTENT`` → ``consistent``) or true/false.

Options are applied in the order given, as ``setOptions`` does, and before the servers are
added (``setOptions`` then ``addServers``, as Laravel and Symfony do). Like php-memcached,
an option whose value is already in force is skipped, and turning
``libketama_compatible`` off resets the hash and modula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.core.placement import hashkit, libmemcached
from invalidator.core.placement.libmemcached import Libmemcached, Settings

HASHES = ("default", "md5", "crc", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur")
DISTRIBUTIONS = {
    "modula": libmemcached.MODULA,
    "consistent": libmemcached.CONSISTENT,
    "virtual_bucket": libmemcached.VIRTUAL_BUCKET,
}
_FLAGS = {
    "hash": libmemcached.BEHAVIOR_HASH,
    "libketama_hash": libmemcached.BEHAVIOR_KETAMA_HASH,
    "distribution": libmemcached.BEHAVIOR_DISTRIBUTION,
    "libketama_compatible": libmemcached.BEHAVIOR_KETAMA_WEIGHTED,
    "sort_hosts": libmemcached.BEHAVIOR_SORT_HOSTS,
}
# Options that never change where a key goes while every node answers.
NEUTRAL = frozenset(
    {
        "compression",
        "compression_type",
        "compression_level",
        "serializer",
        "user_flags",
        "store_retry_count",
        "item_size_limit",
        "binary_protocol",
        "no_block",
        "tcp_nodelay",
        "tcp_keepalive",
        "buffer_writes",
        "socket_send_size",
        "socket_recv_size",
        "connect_timeout",
        "retry_timeout",
        "dead_timeout",
        "send_timeout",
        "recv_timeout",
        "poll_timeout",
        "server_failure_limit",
        "server_timeout_limit",
        "auto_eject_hosts",
        "remove_failed_servers",
        "noreply",
        "verify_key",
        "randomize_replica_read",
    }
)
_UNSUPPORTED = {
    "number_of_replicas": "number_of_replicas (replicas write a key to several nodes)",
    "hash_with_prefix_key": "hash_with_prefix_key (the prefix is hashed with the key)",
    "prefix_key": "prefix_key (libmemcached prefixes keys the app never sees)",
    "use_udp": "use_udp",
}


def _value(name: str, value: Any) -> int:
    if name in ("hash", "libketama_hash"):
        if value not in HASHES:
            raise ValueError(
                f"behaviors.{name}: unknown hash {value!r} (php-memcached's: {', '.join(HASHES)})"
            )
        return hashkit.NUMBER[value]
    if name == "distribution":
        if value not in DISTRIBUTIONS:
            known = ", ".join(DISTRIBUTIONS)
            raise ValueError(
                f"behaviors.distribution: unknown distribution {value!r} (php-memcached's: {known})"
            )
        return DISTRIBUTIONS[value]
    if isinstance(value, bool | int):
        return int(value)
    raise ValueError(f"behaviors.{name}: expected true/false or a number, got {value!r}")


def settings(behaviors: Mapping[str, Any]) -> Settings:
    """libmemcached's settings after ``$m->setOptions(behaviors)`` on a new ``Memcached``."""
    known = set(_FLAGS) | NEUTRAL | set(_UNSUPPORTED)
    unknown = sorted(set(behaviors) - known)
    if unknown:
        raise ValueError(
            f"unknown php-memcached option {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    result = Settings()
    for name, raw in behaviors.items():
        if name in _UNSUPPORTED:
            if raw not in (0, False, None, ""):
                raise ValueError(
                    f"php-memcached option {_UNSUPPORTED[name]} changes placement "
                    "and is not supported"
                )
            continue
        if name not in _FLAGS:
            continue
        value = _value(name, raw)
        flag = _FLAGS[name]
        try:
            if flag == libmemcached.BEHAVIOR_KETAMA_WEIGHTED:
                result = result.set(flag, value)
                if not value:  # php-memcached's own clean-up
                    result = Settings(sort_hosts=result.sort_hosts)
            elif result.get(flag) != value:
                result = result.set(flag, value)
        except ValueError as exc:
            raise ValueError(f"behaviors.{name}: {exc}") from None
    return result


def placement(servers: Sequence[str], behaviors: Mapping[str, Any]) -> Libmemcached:
    """php-memcached's placement of keys over ``servers`` (``"host:port"``, optional
    weight as ``addServer``'s third argument)."""
    return Libmemcached(servers, settings(behaviors), client="php-memcached")
