"""The C delete hot path (``_hotpath.c``): its Python face, built from rules and placements.
It reads wal2json records or, built with ``pgoutput=True``, pgoutput protocol 1 messages.

The C decoder is an accelerator, never a second meaning: for the tables and pools it
takes, it must emit exactly the deletes ``plan()`` plans and the placements route (the
tests prove it over every fixture and generated records). It takes tables whose rules are
all plain deletes (no ``when_changed``, no re-delete) on pools whose placement says the C
code reproduces it (``Placement.hot_mode``). Everything else — and every unusual record
of those tables — it declines, and ``plan()`` handles it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from invalidator.core.operations import Operation
from invalidator.core.placement import Placement
from invalidator.core.rules import CompiledRule, RuleSet
from invalidator.hotpath import _hotpath

_KINDS = {"insert": _hotpath.INSERT, "update": _hotpath.UPDATE, "delete": _hotpath.DELETE}
_MODES = {"rendezvous": _hotpath.RENDEZVOUS, "broadcast": _hotpath.BROADCAST}
MAX_COLUMNS = 64

TableSpec = tuple[bytes, bytes, int, list[bytes], list[tuple[int, list[bytes], list[int]]]]


@dataclass(frozen=True, slots=True)
class Slot:
    """One request buffer of the decoder: a pool's node."""

    pool: str
    node: str


class HotPath:
    """A ``_hotpath.Decoder`` for the eligible tables, with its slots and table names."""

    def __init__(
        self, rules: RuleSet, placements: Mapping[str, Placement], *, pgoutput: bool = False
    ):
        """``pgoutput``: the decoder reads pgoutput protocol 1 messages, not wal2json."""
        pool_index: dict[str, int] = {}
        pool_specs: list[tuple[int, list[tuple[bytes, bytes, int]]]] = []
        self.slots: list[Slot] = []
        for pool, placement in placements.items():
            mode = _MODES.get(placement.hot_mode or "")
            if mode is None:
                continue
            entries: list[tuple[bytes, bytes, int]] = []
            for node in placement.nodes:
                entries.append((f"{node}-".encode(), node.encode(), len(self.slots)))
                self.slots.append(Slot(pool, node))
            pool_index[pool] = len(pool_specs)
            pool_specs.append((mode, entries))
        self.tables: list[str] = []  # "schema.table" per decoder table index (metrics)
        table_specs = []
        for schema, table in list(rules.by_table) + list(rules.aliases):
            spec = table_spec(schema, table, rules.rules_for(schema, table), pool_index)
            if spec is not None:
                table_specs.append(spec)
                self.tables.append(f"{schema}.{table}")
        self.decoder = _hotpath.Decoder(table_specs, pool_specs, len(self.slots), pgoutput=pgoutput)
        # The operation each slot's batches are accounted to (pool label; no single key).
        self.batch_ops = [Operation("delete", "", slot.pool, "*") for slot in self.slots]

    def __len__(self) -> int:
        return len(self.tables)

    @property
    def in_transaction(self) -> bool:
        """A transaction is open (its commit not yet seen by C or by Python)."""
        return self.decoder.in_transaction

    def declined_begin(self) -> None:
        """Python read a BEGIN that C declined: the transaction is open all the same."""
        self.decoder.in_transaction = True

    def declined_commit(self) -> None:
        """Python read a COMMIT that C declined."""
        self.decoder.in_transaction = False

    def carry_over(self, previous: HotPath | None) -> None:
        """Rebuilt mid-transaction (a new partition, a membership change): the new decoder
        must still know a transaction is open, or the idle advance could confirm past it."""
        if previous is not None:
            self.decoder.in_transaction = previous.decoder.in_transaction


def table_spec(
    schema: str, table: str, rules: Sequence[CompiledRule], pool_index: Mapping[str, int]
) -> TableSpec | None:
    """What C needs for one table, or None when the table must be left to ``plan()``."""
    if not rules or any(
        r.action != "delete" or r.when_changed is not None or r.redelete for r in rules
    ):
        return None
    # Every rule must accept every kind C takes, or plan() decides.
    kinds = [k for k in ("insert", "update", "delete") if all(k in r.on for r in rules)]
    if not kinds or any(r.pool not in pool_index for r in rules):
        return None
    columns: list[str] = []
    templates: list[tuple[int, list[bytes], list[int]]] = []
    for rule in rules:
        for template in rule.templates:
            if not all(_printable_ascii(lit) for lit in template.literals):
                return None  # every key would be declined: leave the table to plan()
            indexes: list[int] = []
            for column in template.columns:
                if column not in columns:
                    columns.append(column)
                indexes.append(columns.index(column))
            literals = [lit.encode() for lit in template.literals]
            templates.append((pool_index[rule.pool], literals, indexes))
    if len(columns) > MAX_COLUMNS:
        return None
    return (
        schema.encode(),
        table.encode(),
        sum(_KINDS[k] for k in kinds),
        [c.encode() for c in columns],
        templates,
    )


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
