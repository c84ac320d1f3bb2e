"""spymemcached's placement: the Java client's node locators (``net.spy.memcached``).

``behaviors``: ``locator`` — ``array_mod`` (the default: ``hash % servers``) or
``consistent`` (``KetamaNodeLocator``, as ``KetamaConnectionFactory`` or
``ConnectionFactoryBuilder.setLocatorType(CONSISTENT)``) — and ``hash``, a
``DefaultHashAlgorithm``: ``native`` (the default, ``String.hashCode``), ``crc``,
``fnv1_64``, ``fnv1a_64``, ``fnv1_32``, ``fnv1a_32``, ``ketama`` (MD5). The Java names
(``ARRAY_MOD``, ``KETAMA_HASH``) are accepted too.

The consistent continuum names a node by ``InetSocketAddress.toString()`` without the
leading ``/`` (Java 14+ form: ``10.0.0.1:11211``, ``[fd00:0:0:0:0:0:0:2]:11211``): 160
points each (40 MD5 digests of 4 words with ``ketama``, else 160 hashes of
``"<node>-<i>"``); a key goes to the first point at or after its hash, wrapping. A
hostname's node name holds the address DNS gave the app at start, so it is refused:
list those servers by IP. Weights (``KetamaConnectionFactory``'s map; ``"host:port
weight"`` here) give each node ``floor(weight/total * 40 * nodes)`` MD5 digests,
computed in Java ``float`` as the library does.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from invalidator.core.placement.hot_spec import CONTINUUM, MODULA, HotSpec
from invalidator.core.placement.java_string import hash_code, utf16_units
from invalidator.core.placement.servers import node_name, parse_server, split_weight

REPETITIONS = 160  # DefaultKetamaNodeLocatorConfiguration.getNodeRepetitions()
LOCATORS = ("array_mod", "consistent")
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_FNV_64_INIT, _FNV_64_PRIME = 0xCBF29CE484222325, 0x100000001B3
_FNV_32_INIT, _FNV_32_PRIME = 2166136261, 16777619


def _crc(key: str) -> int:
    return (zlib.crc32(key.encode("utf-8", "surrogatepass")) >> 16) & 0x7FFF


def _fnv(init: int, prime: int, mask: int, xor_first: bool) -> Callable[[str], int]:
    def fnv(key: str) -> int:
        h = init
        for unit in utf16_units(key):
            h = ((h ^ unit) * prime) & mask if xor_first else ((h * prime) & mask) ^ unit
        return h & _M32

    return fnv


def _ketama(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode("utf-8", "surrogatepass")).digest()[:4], "little")


# DefaultHashAlgorithm.hash: every result is truncated to 32 bits.
HASHES: dict[str, Callable[[str], int]] = {
    "native": hash_code,
    "crc": _crc,
    "fnv1_64": _fnv(_FNV_64_INIT, _FNV_64_PRIME, _M64, xor_first=False),
    "fnv1a_64": _fnv(_FNV_64_INIT, _FNV_64_PRIME, _M64, xor_first=True),
    "fnv1_32": _fnv(_FNV_32_INIT, _FNV_32_PRIME, _M32, xor_first=False),
    "fnv1a_32": _fnv(_FNV_32_INIT, _FNV_32_PRIME, _M32, xor_first=True),
    "ketama": _ketama,
}


# The same hashes as C computes them (invalidator/core/placement/hot_spec.py KEY_HASHES).
_HOT_KEY_HASHES = {
    "native": "java_hashcode",
    "crc": "crc32_hi15",
    "fnv1_64": "fnv1_64_utf16",
    "fnv1a_64": "fnv1a_64_utf16",
    "fnv1_32": "fnv1_32_utf16",
    "fnv1a_32": "fnv1a_32_utf16",
    "ketama": "md5_le32",
}


def _float(value: float) -> float:
    """``value`` rounded to a Java ``float``."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def socket_key(server: str) -> str:
    """The node's name in the continuum: ``String.valueOf(InetSocketAddress)`` minus ``/``."""
    host, port = parse_server(server)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"client 'spymemcached' (consistent locator): {server!r} is a name, and the "
            "library hashes the address DNS gave the app ('host/IP:port'); list it by IP"
        ) from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise ValueError(f"client 'spymemcached': scoped IPv6 address {server!r}")
        if address.ipv4_mapped is not None:
            return f"{address.ipv4_mapped}:{port}"
        groups = struct.unpack(">8H", address.packed)
        return "[" + ":".join(f"{g:x}" for g in groups) + f"]:{port}"
    return f"{address}:{port}"


def _md5_points(name: str, iteration: int) -> list[int]:
    digest = hashlib.md5(f"{name}-{iteration}".encode()).digest()
    return [int.from_bytes(digest[4 * h : 4 * h + 4], "little") for h in range(4)]


def _choice(behaviors: Mapping[str, Any], field: str, default: str, choices: Sequence[str]) -> str:
    value = str(behaviors.get(field, default)).lower()
    value = value.removesuffix("_hash") if field == "hash" else value
    if value not in choices:
        raise ValueError(
            f"client 'spymemcached': {field} {behaviors[field]!r} is not one of {tuple(choices)}"
        )
    return value


class Spymemcached:
    """``locator.getPrimary(key)`` of the locator the app's connection factory builds."""

    def __init__(self, servers: Sequence[str], behaviors: Mapping[str, Any] | None = None):
        options = dict(behaviors or {})
        unknown = sorted(set(options) - {"locator", "hash"})
        if unknown:
            raise ValueError(
                f"client 'spymemcached': unsupported behaviors {unknown} "
                "(placement options: locator, hash)"
            )
        locator = _choice(options, "locator", "array_mod", LOCATORS)
        hash_name = _choice(options, "hash", "native", tuple(HASHES))
        if not servers:
            raise ValueError("spymemcached placement needs at least one server")
        entries = [split_weight(s) for s in servers]
        self.nodes = tuple(node_name(s) for s, _ in entries)
        self._hash = HASHES[hash_name]
        self._hot_key_hash = _HOT_KEY_HASHES[hash_name]
        self._consistent = locator == "consistent"
        self.hot_mode: str | None = CONTINUUM if self._consistent else MODULA
        weights = [w for _, w in entries]
        if any(w is not None for w in weights):
            if not self._consistent:
                raise ValueError(
                    "client 'spymemcached': weights need locator: consistent "
                    "(KetamaConnectionFactory's weights map)"
                )
            if any(w is None for w in weights):
                raise ValueError("client 'spymemcached': give every server a weight, or none")
        if self._consistent:
            self._build_continuum([s for s, _ in entries], weights, hash_name)

    def _build_continuum(
        self, servers: list[str], weights: list[int | None], hash_name: str
    ) -> None:
        continuum: dict[int, str] = {}  # TreeMap.put: a later node takes a shared point
        total = sum(w or 0 for w in weights)
        for server, node, weight in zip(servers, self.nodes, weights, strict=True):
            name = socket_key(server)
            if weight is not None:
                percent = _float(weight / total)
                share = _float(_float(_float(percent * REPETITIONS) / 4) * len(servers))
                iterations = math.floor(_float(share + 0.0000000001))
                positions = [p for i in range(iterations) for p in _md5_points(name, i)]
            elif hash_name == "ketama":
                positions = [p for i in range(REPETITIONS // 4) for p in _md5_points(name, i)]
            else:
                positions = [self._hash(f"{name}-{i}") for i in range(REPETITIONS)]
            for position in positions:
                continuum[position] = node
        self._points = sorted(continuum)
        self._owners = [continuum[p] for p in self._points]

    def hot_spec(self) -> HotSpec:
        if not self._consistent:
            return HotSpec.modula(self._hot_key_hash, len(self.nodes))
        return HotSpec.continuum(
            CONTINUUM, self._hot_key_hash, self._points, self._owners, self.nodes
        )

    def owners(self, key: str) -> tuple[str, ...]:
        value = self._hash(key)
        if not self._consistent:
            return (self.nodes[value % len(self.nodes)],)
        at = bisect.bisect_left(self._points, value)
        return (self._owners[at if at < len(self._points) else 0],)
