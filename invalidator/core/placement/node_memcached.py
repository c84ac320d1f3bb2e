"""The npm ``memcached`` package's placement: its ``hashring`` (3.x) continuum.

Each server string as the app wrote it (``host:port``; IPv6 unbracketed, ``::1:11211``,
the form the package can connect to; a bare host for the default port) gets
``floor(weight/total * 40 * servers)`` digests of ``"<name>-<i>"``, each giving 4 points
(3 with ``compatibility: hash_ring``): little-endian 32-bit words of the digest. With the
default ``compatibility: ketama`` a server on port 11211 is named by its host alone. A key
hashes to the first word of its digest and goes to the first point at or after it
(wrapping); one server takes every key.

``behaviors``: ``algorithm`` (the digest; default ``md5``) and ``compatibility``
(``ketama``, the default, or ``hash_ring``), as passed to ``new Memcached(servers, options)``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from invalidator.core.placement.hot_spec import CONTINUUM, HotSpec
from invalidator.core.placement.servers import DEFAULT_PORT, node_name, parse_server, split_weight

VNODES = 40
ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
COMPATIBILITY = {"ketama": 4, "hash_ring": 3}
# The algorithms whose key hash C computes (the others are placed by Python).
_HOT_KEY_HASHES = {"md5": "md5_le32", "sha1": "sha1_le32"}


def app_string(server: str) -> str:
    """The server string the app gives the package for a ``pools.NAME.servers`` entry."""
    host, port = parse_server(server)
    text = server.strip()
    written_port = ":" in text and not text.endswith("]")
    return f"{host}:{port}" if written_port else host


def _uses_default_port(name: str) -> bool:
    """hashring's test: the second ``:``-field of the name is the number 11211."""
    fields = name.split(":")
    return len(fields) > 1 and fields[1].strip().isdigit() and int(fields[1]) == DEFAULT_PORT


class NodeMemcached:
    """The ``memcached`` package's ``HashRing.get(key)`` over its server list."""

    def __init__(self, servers: Sequence[str], behaviors: Mapping[str, Any] | None = None):
        options = dict(behaviors or {})
        algorithm = options.pop("algorithm", "md5")
        compatibility = options.pop("compatibility", "ketama")
        if options:
            raise ValueError(
                f"client 'node-memcached': unsupported behaviors {sorted(options)} "
                "(placement options: algorithm, compatibility)"
            )
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"client 'node-memcached': algorithm {algorithm!r} is not one of {ALGORITHMS}"
            )
        if compatibility not in COMPATIBILITY:
            raise ValueError(
                f"client 'node-memcached': compatibility {compatibility!r} is not one of "
                f"{sorted(COMPATIBILITY)}"
            )
        if not servers:
            raise ValueError("node-memcached placement needs at least one server")
        entries = [split_weight(s) for s in servers]
        self.nodes = tuple(node_name(s) for s, _ in entries)
        self.hot_mode: str | None = CONTINUUM if algorithm in _HOT_KEY_HASHES else None
        self._algorithm = algorithm
        replicas = COMPATIBILITY[compatibility]
        by_default_port = compatibility == "ketama"
        weights = [w or 1 for _, w in entries]
        total = sum(weights)
        points: list[tuple[int, int]] = []
        for index, ((server, _), weight) in enumerate(zip(entries, weights, strict=True)):
            name = app_string(server)
            hashed = name.split(":")[0] if by_default_port and _uses_default_port(name) else name
            for i in range(math.floor(weight / total * VNODES * len(entries))):
                digest = hashlib.new(algorithm, f"{hashed}-{i}".encode()).digest()
                for j in range(replicas):
                    points.append((int.from_bytes(digest[4 * j : 4 * j + 4], "little"), index))
        points.sort(key=lambda point: point[0])  # stable, as V8's sort
        self._values = [value for value, _ in points]
        self._owners = [self.nodes[index] for _, index in points]

    def hot_spec(self) -> HotSpec | None:
        key_hash = _HOT_KEY_HASHES.get(self._algorithm)
        if key_hash is None:
            return None
        return HotSpec.continuum(CONTINUUM, key_hash, self._values, self._owners, self.nodes)

    def owners(self, key: str) -> tuple[str, ...]:
        if len(self.nodes) == 1:
            return self.nodes
        digest = hashlib.new(self._algorithm, key.encode("utf-8", "surrogatepass")).digest()
        value = int.from_bytes(digest[:4], "little")
        at = bisect.bisect_left(self._values, value)
        return (self._owners[at if at < len(self._values) else 0],)
