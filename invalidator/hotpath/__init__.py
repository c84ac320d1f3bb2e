"""The C delete hot path (``_hotpath.c``) wired to the daemon's rules and placements.

``HotPath`` compiles what the C decoder can do exactly as the Python engine would: tables
whose rules are plain deletes (a ``FastPlanner``) without re-deletes, on pools placed by
plain rendezvous (pymemcache ``HashClient``) or broadcast. Everything else — and every
unusual record of those tables — is declined by the decoder and handled in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from invalidator.core.fastpath import FastPlanner, fast_planners
from invalidator.core.operations import Operation
from invalidator.core.placement import Broadcast, Placement, Rendezvous
from invalidator.core.rules import RuleSet, TableName
from invalidator.hotpath import _hotpath

_KINDS = {"insert": _hotpath.INSERT, "update": _hotpath.UPDATE, "delete": _hotpath.DELETE}


@dataclass(frozen=True, slots=True)
class Slot:
    """One request buffer of the decoder: a pool's node."""

    pool: str
    node: str


def _pool_spec(placement: Placement) -> tuple[int, list[str]] | None:
    """(mode, nodes) when the C decoder places keys exactly as ``placement``, else None."""
    if type(placement) is Broadcast:
        return _hotpath.BROADCAST, list(placement.nodes)
    if (
        type(placement) is Rendezvous
        and placement.fallback_depth == 0
        and all(node.isascii() for node in placement.nodes)
    ):
        return _hotpath.RENDEZVOUS, list(placement.nodes)
    return None


class HotPath:
    """A ``_hotpath.Decoder`` for the eligible tables, with its slots and table names."""

    def __init__(
        self, planners: Mapping[TableName, FastPlanner], placements: Mapping[str, Placement]
    ):
        pool_index: dict[str, int] = {}
        pool_specs: list[tuple[int, list[tuple[bytes, bytes, int]]]] = []
        self.slots: list[Slot] = []
        for pool, placement in placements.items():
            spec = _pool_spec(placement)
            if spec is None:
                continue
            mode, nodes = spec
            entries: list[tuple[bytes, bytes, int]] = []
            for node in nodes:
                entries.append((f"{node}-".encode(), node.encode(), len(self.slots)))
                self.slots.append(Slot(pool, node))
            pool_index[pool] = len(pool_specs)
            pool_specs.append((mode, entries))
        self.tables: list[str] = []  # "schema.table" per decoder table index (metrics)
        table_specs = []
        for (schema, table), planner in planners.items():
            table_spec = _table_spec(schema, table, planner, pool_index)
            if table_spec is not None:
                table_specs.append(table_spec)
                self.tables.append(planner.table)
        self.decoder = _hotpath.Decoder(table_specs, pool_specs, len(self.slots))
        # The operation each slot's batches are accounted to (pool label; no single key).
        self.batch_ops = [Operation("delete", "", slot.pool, "*") for slot in self.slots]

    @classmethod
    def for_rules(cls, rules: RuleSet, placements: Mapping[str, Placement]) -> HotPath:
        return cls(fast_planners(rules), placements)

    def __len__(self) -> int:
        return len(self.tables)


def _table_spec(
    schema: str, table: str, planner: FastPlanner, pool_index: Mapping[str, int]
) -> tuple[bytes, bytes, int, list[bytes], list[tuple[int, list[bytes], list[int]]]] | None:
    if planner.redelete or not planner.kinds:
        return None
    if any(pool not in pool_index for pool, _ in planner.templates):
        return None
    columns: list[str] = []
    templates: list[tuple[int, list[bytes], list[int]]] = []
    for pool, template in planner.templates:
        if not all(_printable_ascii(lit) for lit in template.literals):
            return None  # every key would be declined: leave the table to Python
        indexes: list[int] = []
        for column in template.columns:
            if column not in columns:
                columns.append(column)
            indexes.append(columns.index(column))
        templates.append((pool_index[pool], [lit.encode() for lit in template.literals], indexes))
    if len(columns) > 64:
        return None
    kinds = sum(_KINDS[k] for k in planner.kinds)
    return schema.encode(), table.encode(), kinds, [c.encode() for c in columns], templates


def _printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(ch) <= 0x7E for ch in text)


def feed_all(decoder: _hotpath.Decoder, messages: Sequence[bytes]) -> list[int]:
    """Indexes of the messages the decoder declined (for tests and tools)."""
    declined: list[int] = []
    batch = list(messages)
    i = 0
    while i < len(batch):
        i = decoder.feed_many(batch, i)
        if i < len(messages):
            declined.append(i)
            i += 1
    return declined
