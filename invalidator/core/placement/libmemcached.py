"""libmemcached's placement (used by pylibmc and php-memcached), as libmemcached 1.1.4
computes it: the behaviours that decide it, modula and the consistent (ketama) continuum.

``Settings`` is the part of a ``memcached_st`` that placement reads; ``Settings.set``
changes it exactly as ``memcached_behavior_set`` does (including its side effects:
``KETAMA_WEIGHTED`` switches the key hash to md5, a server weight above 1 turns weighted
ketama on under a consistent distribution). Each client module (``pylibmc``,
``php_memcached``) translates its own option names into these calls, in the order the
client makes them. ``Libmemcached`` places keys over the servers as
``memcached_generate_hash`` does (hosts.cc ``update_continuum``, hash.cc ``dispatch_host``).
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace

from invalidator.core.placement import hashkit
from invalidator.core.placement import hot_spec as hot
from invalidator.core.placement.servers import parse_server, split_weight

DEFAULT_PORT = 11211
POINTS_PER_SERVER = 100  # MEMCACHED_POINTS_PER_SERVER
POINTS_PER_SERVER_KETAMA = 160  # MEMCACHED_POINTS_PER_SERVER_KETAMA

# memcached_server_distribution_t
MODULA = 0
CONSISTENT = 1
CONSISTENT_KETAMA = 2
RANDOM = 3
CONSISTENT_KETAMA_SPY = 4
CONSISTENT_WEIGHTED = 5
VIRTUAL_BUCKET = 6
_CONSISTENT = frozenset({CONSISTENT, CONSISTENT_KETAMA, CONSISTENT_KETAMA_SPY, CONSISTENT_WEIGHTED})
_UNSUPPORTED_DISTRIBUTION = {
    RANDOM: "random (each key on a random node: no placement to follow)",
    VIRTUAL_BUCKET: "virtual bucket (needs the app's bucket map)",
}

# memcached_behavior_t values that change placement
BEHAVIOR_HASH = 2
BEHAVIOR_KETAMA = 3
BEHAVIOR_SORT_HOSTS = 12
BEHAVIOR_DISTRIBUTION = 9
BEHAVIOR_KETAMA_WEIGHTED = 16
BEHAVIOR_KETAMA_HASH = 17


@dataclass(frozen=True, slots=True)
class Settings:
    """What placement reads from a ``memcached_st``: libmemcached's defaults."""

    distribution: int = MODULA
    key_hash: int = 0  # one_at_a_time
    distribution_hash: int = 0  # set by KETAMA_HASH; 1.1.4 never reads it for placement
    weighted: bool = False
    sort_hosts: bool = False

    def set_distribution(self, distribution: int) -> Settings:
        """``memcached_behavior_set_distribution``."""
        if distribution in _UNSUPPORTED_DISTRIBUTION:
            raise ValueError(
                f"distribution {_UNSUPPORTED_DISTRIBUTION[distribution]} is not supported"
            )
        if distribution not in (MODULA, *_CONSISTENT):
            raise ValueError(f"invalid distribution {distribution!r}")
        weighted = self.weighted
        if distribution in (CONSISTENT, CONSISTENT_KETAMA):
            weighted = False
        elif distribution == CONSISTENT_WEIGHTED:
            weighted = True
        return replace(self, distribution=distribution, weighted=weighted)

    def set(self, behavior: int, value: int) -> Settings:
        """``memcached_behavior_set(behavior, value)`` for the behaviours that place keys."""
        if behavior == BEHAVIOR_DISTRIBUTION:
            return self.set_distribution(value)
        if behavior == BEHAVIOR_KETAMA:
            return self.set_distribution(CONSISTENT_KETAMA if value else MODULA)
        if behavior == BEHAVIOR_KETAMA_WEIGHTED:
            if not value:  # libmemcached turns plain ketama on here
                return self.set(BEHAVIOR_KETAMA, 1)
            md5 = hashkit.NUMBER["md5"]
            return replace(self, key_hash=md5, distribution_hash=md5).set_distribution(
                CONSISTENT_WEIGHTED
            )
        if behavior == BEHAVIOR_HASH:
            return replace(self, key_hash=_hash_number(value))
        if behavior == BEHAVIOR_KETAMA_HASH:
            return replace(self, distribution_hash=_hash_number(value))
        if behavior == BEHAVIOR_SORT_HOSTS:
            return replace(self, sort_hosts=bool(value))
        raise ValueError(f"behavior {behavior} does not change placement")

    def get(self, behavior: int) -> int:
        """``memcached_behavior_get`` for the same behaviours (php-memcached compares
        before it sets)."""
        consistent = self.distribution in _CONSISTENT
        values = {
            BEHAVIOR_DISTRIBUTION: self.distribution,
            BEHAVIOR_KETAMA: int(consistent),
            BEHAVIOR_KETAMA_WEIGHTED: int(consistent and self.weighted),
            BEHAVIOR_HASH: self.key_hash,
            BEHAVIOR_KETAMA_HASH: self.distribution_hash,
            BEHAVIOR_SORT_HOSTS: int(self.sort_hosts),
        }
        return values[behavior]


def _hash_number(value: int) -> int:
    if value not in hashkit.BY_NUMBER:
        name = hashkit.NAME.get(value, str(value))
        raise ValueError(f"hash {name} is not available in libmemcached 1.1.4 as packaged")
    return value


def _f32(x: float) -> float:
    """Round to an IEEE single, as C ``float`` arithmetic does after each operation."""
    value: float = struct.unpack("f", struct.pack("f", x))[0]
    return value


def _weighted_points(weight: int, total: int, servers: int) -> int:
    """Points of one server on a weighted continuum, with the C code's float arithmetic."""
    pct = _f32(_f32(weight) / _f32(total))
    x = _f32(pct * POINTS_PER_SERVER_KETAMA)
    x = _f32(x / 4)
    x = _f32(x * _f32(servers))
    x = _f32(x + _f32(0.0000000001))
    return int(int(x) * 4)


class Libmemcached:
    """Keys placed as libmemcached places them over ``servers`` (in their order; entries may
    carry a weight, ``"host:port 2"``) with ``settings``."""

    def __init__(self, servers: Sequence[str], settings: Settings, client: str = "libmemcached"):
        if not servers:
            raise ValueError(f"{client} placement needs at least one server")
        entries = []
        for server in servers:
            address, weight = split_weight(server)
            host, port = parse_server(address)
            entries.append((host, port, weight or 1))
        # A server added with a weight above 1 turns weighted ketama on (server_add).
        if settings.distribution in _CONSISTENT and any(w > 1 for _, _, w in entries):
            settings = replace(settings, weighted=True)
        self.nodes = tuple(f"{host}:{port}" for host, port, _ in entries)  # as configured
        if settings.sort_hosts:  # libmemcached's server list, sorted by host then port
            entries.sort(key=lambda e: (e[0].encode(), e[1]))
        self.settings = settings
        self._list = tuple(f"{host}:{port}" for host, port, _ in entries)
        self._hash = hashkit.BY_NUMBER[settings.key_hash]
        self._modula = settings.distribution == MODULA
        self.hot_mode: str | None = hot.MODULA if self._modula else hot.CONTINUUM
        self._points: list[int] = []
        self._owners: list[str] = []
        if not self._modula and len(entries) > 1:
            self._build_continuum(entries)

    def _build_continuum(self, entries: list[tuple[str, int, int]]) -> None:
        settings = self.settings
        spy = settings.distribution == CONSISTENT_KETAMA_SPY
        total = sum(w for _, _, w in entries)
        points: list[tuple[int, int]] = []
        for index, (host, port, weight) in enumerate(entries):
            if settings.weighted:
                per_server, per_hash = _weighted_points(weight, total, len(entries)), 4
            else:
                per_server, per_hash = POINTS_PER_SERVER, 1
            for i in range(per_server // per_hash):
                if spy:
                    text = f"/{host}:{port}-{i}"
                elif port == DEFAULT_PORT:
                    text = f"{host}-{i}"
                else:
                    text = f"{host}:{port}-{i}"
                data = text.encode()
                if settings.weighted:
                    digest = hashlib.md5(data).digest()
                    for x in range(4):
                        value = int.from_bytes(digest[4 * x : 4 * x + 4], "little")
                        points.append((value, index))
                else:
                    points.append((self._hash(data), index))
        points.sort()
        self._points = [value for value, _ in points]
        self._owners = [self._list[index] for _, index in points]

    def hot_spec(self) -> hot.HotSpec:
        """C's lookup: the same hash over the same server list (maybe sorted) or continuum."""
        key_hash = hashkit.HOT_NAME[self.settings.key_hash]
        if self._modula:
            index = {node: i for i, node in reversed(list(enumerate(self.nodes)))}
            return hot.HotSpec(hot.MODULA, key_hash, (), tuple(index[n] for n in self._list))
        return hot.HotSpec.continuum(
            hot.CONTINUUM, key_hash, self._points, self._owners, self.nodes
        )

    def owner(self, key: str) -> str:
        """The node libmemcached sends ``key`` to (``memcached_generate_hash``)."""
        if len(self._list) == 1:
            return self._list[0]
        value = self._hash(key.encode())
        if self._modula:
            return self._list[value % len(self._list)]
        at = bisect_left(self._points, value)
        return self._owners[at if at < len(self._points) else 0]

    def owners(self, key: str) -> tuple[str, ...]:
        return (self.owner(key),)
