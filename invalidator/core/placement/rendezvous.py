"""pymemcache's placement: ``Rendezvous`` reproduces ``pymemcache.client.hash.HashClient``.

Node names are
``f"{host}:{port}"`` of the configured strings (no DNS), the score of a node is
``murmur3_32(f"{node}-{key}", seed=0)`` and the highest wins; ties go to the larger node
string. pymemcache's murmur3 hashes ``ord(c) & 0xFF`` of each *character* (the 4th byte of
a block is masked too, by the final ``& 0xFFFFFFFF``), so hashing those bytes with the C
MurmurHash3 x86_32 of ``mmh3`` gives the same score for every str, ASCII or not.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

from invalidator.core.placement.servers import node_name

_hash = mmh3.hash


def hash_bytes(text: str) -> bytes:
    """The bytes pymemcache's murmur3 effectively hashes for ``text``."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return bytes(ord(c) & 0xFF for c in text)


class Rendezvous:
    """Highest-random-weight placement, identical to pymemcache's ``HashClient``.

    ``fallback_depth`` adds the next N choices: where apps' clients write a key while its
    owner is marked dead.
    """

    def __init__(self, servers: Sequence[str], fallback_depth: int = 0):
        if not servers:
            raise ValueError("rendezvous placement needs at least one server")
        self.nodes = tuple(node_name(s) for s in servers)
        self.fallback_depth = fallback_depth
        self._prefixes = tuple((f"{n}-".encode("latin-1", "replace"), n) for n in self.nodes)
        self._exact_prefixes = all(n.isascii() for n in self.nodes)
        exact_in_c = fallback_depth == 0 and self._exact_prefixes
        self.hot_mode = "rendezvous" if exact_in_c else None

    def owner(self, key: str) -> str:
        """The single node ``HashClient`` picks for ``key``."""
        try:
            kb = key.encode("latin-1")
        except UnicodeEncodeError:
            kb = hash_bytes(key)
        if not self._exact_prefixes:
            return self._rank(key)[0]
        best = -1
        winner = ""
        h = _hash
        for prefix, node in self._prefixes:
            score = h(prefix + kb, 0, False)
            if score > best or (score == best and node > winner):
                best = score
                winner = node
        return winner

    def _rank(self, key: str) -> list[str]:
        scored = [(_hash(hash_bytes(f"{node}-{key}"), 0, False), node) for node in self.nodes]
        scored.sort(reverse=True)
        return [node for _, node in scored]

    def owners(self, key: str) -> tuple[str, ...]:
        if self.fallback_depth == 0:
            return (self.owner(key),)
        return tuple(self._rank(key)[: 1 + self.fallback_depth])
