"""The C delete hot path (``_hotpath.c``): its Python face, built from rules and placements.
It reads wal2json records or, built with ``pgoutput=True``, pgoutput protocol 1 messages.

The C decoder is an accelerator, never a second meaning: for the tables and pools it
takes, it must emit exactly the deletes ``plan()`` plans and the placements route (the
tests prove it over every fixture and generated records). It takes tables whose rules are
all plain deletes (no ``when_changed``, no re-delete) on pools whose placement says the C
code reproduces it (``Placement.hot_mode``; for clients that hash the key alone, the
modula buckets or continuum that Python built, ``HotSpec``: C hashes and looks up, never
derives a table). Everything else — and every unusual record
of those tables — it declines, and ``plan()`` handles it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from invalidator.core.operations import Operation
from invalidator.core.placement import HotSpec, HotSpecified, Placement
from invalidator.core.rules import CompiledRule, RuleSet
from invalidator.hotpath import _hotpath

_KINDS = {"insert": _hotpath.INSERT, "update": _hotpath.UPDATE, "delete": _hotpath.DELETE}
_MODES = {
    "rendezvous": _hotpath.RENDEZVOUS,
    "broadcast": _hotpath.BROADCAST,
    "modula": _hotpath.MODULA,
    "continuum": _hotpath.CONTINUUM,
    "continuum_below": _hotpath.CONTINUUM_BELOW,
}
_KEY_HASHES = {name: number for number, name in enumerate(_hotpath.KEY_HASHES) if name}
MAX_COLUMNS = 64
MAX_NODE_NAME = 199  # bytes of "host:port" C keeps (placement.c)

TableSpec = tuple[bytes, bytes, int, list[bytes], list[tuple[int, list[bytes], list[int]]]]
# (mode, key hash, continuum points, table): how C places a pool's keys
Lookup = tuple[int, int, list[int], list[int]]


def lookup(placement: Placement) -> Lookup | None:
    """How C places keys exactly as ``placement`` does, or None when only Python can."""
    mode = _MODES.get(placement.hot_mode or "")
    if mode is None or any(len(node.encode()) > MAX_NODE_NAME for node in placement.nodes):
        return None
    if mode in (_hotpath.RENDEZVOUS, _hotpath.BROADCAST):
        return (mode, 0, [], [])
    spec: HotSpec | None = placement.hot_spec() if isinstance(placement, HotSpecified) else None
    if spec is None or _MODES.get(spec.mode) != mode or spec.key_hash not in _KEY_HASHES:
        return None
    return (mode, _KEY_HASHES[spec.key_hash], list(spec.points), list(spec.table))


def placer(placement: Placement) -> _hotpath.Placer | None:
    """The C placement of a single-owner ``placement`` (``placer.owner(key)`` -> node),
    or None when C does not reproduce it (or every node owns every key)."""
    found = lookup(placement)
    if found is None or found[0] == _hotpath.BROADCAST:
        return None
    mode, key_hash, points, table = found
    return _hotpath.Placer(mode, key_hash, list(placement.nodes), points, table)


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
        pool_specs: list[tuple[int, list[tuple[bytes, bytes, int]], int, list[int], list[int]]] = []
        self.slots: list[Slot] = []
        for pool, placement in placements.items():
            found = lookup(placement)
            if found is None:
                continue
            mode, key_hash, points, owners = found
            entries: list[tuple[bytes, bytes, int]] = []
            for node in placement.nodes:
                entries.append((f"{node}-".encode(), node.encode(), len(self.slots)))
                self.slots.append(Slot(pool, node))
            pool_index[pool] = len(pool_specs)
            pool_specs.append((mode, entries, key_hash, points, owners))
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
