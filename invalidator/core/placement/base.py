"""The placement interface: which nodes must receive a key's operation."""

from __future__ import annotations

from typing import Protocol


class Placement(Protocol):
    """Maps a key to the nodes that must receive its operation."""

    nodes: tuple[str, ...]
    # The C hot path's name for this exact placement ("rendezvous", "broadcast", or for a
    # key hashed alone "modula", "continuum", "continuum_below" with the tables of its
    # hot_spec(): hot_spec.HotSpecified), or None when only Python reproduces it.
    hot_mode: str | None

    def owners(self, key: str) -> tuple[str, ...]:
        """The nodes to send ``key``'s operation to (primary first)."""
        ...
