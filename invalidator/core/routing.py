"""Operations bound for nodes: each pool's placement applied to each operation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from invalidator.core.operations import Operation
from invalidator.core.placement import Placement


@dataclass(frozen=True, slots=True)
class Routed:
    """An operation bound for one node."""

    operation: Operation
    node: str


class Router:
    """Pool name → placement; ``route`` sends each operation to every owning node."""

    def __init__(self, placements: Mapping[str, Placement] | None = None):
        self.placements: dict[str, Placement] = dict(placements or {})

    def route(self, operations: Iterable[Operation]) -> list[Routed]:
        """Each operation once per owning node, in the given order (a flush: every node)."""
        placements = self.placements
        routed: list[Routed] = []
        for op in operations:
            placement = placements[op.pool]
            nodes = placement.nodes if op.op == "flush" else placement.owners(op.key)
            for node in nodes:
                routed.append(Routed(op, node))
        return routed


def by_node(routed: Iterable[Routed]) -> dict[str, list[Operation]]:
    """Group routed operations per node, keeping their order."""
    groups: dict[str, list[Operation]] = {}
    for item in routed:
        groups.setdefault(item.node, []).append(item.operation)
    return groups
