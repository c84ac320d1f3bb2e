"""What the C hot path needs to place keys exactly as a placement does.

Python computes everything (continuum points, their owners, buckets); C only hashes the
key with ``key_hash`` and looks the hash up, so the placement modules stay the one
specification. ``Placement.hot_mode`` names the lookup; ``hot_spec()`` gives the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# hot_mode of the placements that hash a key alone (rendezvous and broadcast need no spec)
MODULA = "modula"  # table[hash % len(table)]
CONTINUUM = "continuum"  # table[first point >= hash], wrapping to the first point
CONTINUUM_BELOW = "continuum_below"  # table[last point <= hash], wrapping to the last point

# The key hashes C implements (invalidator/hotpath/placement.c), over the key's UTF-8 bytes:
KEY_HASHES = (
    "crc32",  # zlib.crc32
    "crc32_hi15",  # (crc32 >> 16) & 0x7fff
    "java_hashcode",  # String.hashCode over UTF-16 units, unsigned
    "java_hashcode_abs",  # Math.abs of the signed String.hashCode
    "fnv1_32_utf16",  # FNV over UTF-16 units (spymemcached), low 32 bits
    "fnv1a_32_utf16",
    "fnv1_64_utf16",
    "fnv1a_64_utf16",
    "md5_le32",  # the first 4 bytes of MD5, little-endian
    "sha1_le32",  # the first 4 bytes of SHA-1, little-endian
    # libmemcached's (hashkit.py), bytes read through a signed char:
    "libmemcached_one_at_a_time",
    "libmemcached_fnv1_64",
    "libmemcached_fnv1a_64",
    "libmemcached_fnv1_32",
    "libmemcached_fnv1a_32",
    "libmemcached_murmur",
    "libmemcached_jenkins",
)


@dataclass(frozen=True, slots=True)
class HotSpec:
    """One placement's lookup for C: the mode, the key hash, and the tables Python built.

    ``table`` holds node indexes into ``Placement.nodes``: one per continuum point (in
    ``points`` order) or one per modula bucket. Every node wins only through these."""

    mode: str
    key_hash: str
    points: tuple[int, ...] = ()
    table: tuple[int, ...] = ()

    @classmethod
    def modula(cls, key_hash: str, nodes: int) -> HotSpec:
        """``nodes[hash % len(nodes)]``."""
        return cls(MODULA, key_hash, (), tuple(range(nodes)))

    @classmethod
    def continuum(
        cls,
        mode: str,
        key_hash: str,
        points: Sequence[int],
        owners: Sequence[str],
        nodes: Sequence[str],
    ) -> HotSpec:
        """A sorted continuum whose point ``i`` belongs to the node named ``owners[i]``."""
        index = {node: i for i, node in reversed(list(enumerate(nodes)))}
        return cls(mode, key_hash, tuple(points), tuple(index[o] for o in owners))


@runtime_checkable
class HotSpecified(Protocol):
    """A placement C reproduces by hashing the key alone (``hot_mode`` modula/continuum)."""

    def hot_spec(self) -> HotSpec | None:
        """The lookup C follows, or None when only Python reproduces this placement."""
        ...
