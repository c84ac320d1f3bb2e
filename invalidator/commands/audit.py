"""``invalidator audit``: is the cache consistent right now? One audit of every rule that
says what its keys hold (``value``), printed per rule; exit 1 when a copy is stale."""

from __future__ import annotations

import json
from typing import IO

from invalidator.config import Config
from invalidator.config.build import compile_rules, static_router
from invalidator.core.audit import RuleTally, audited_rules
from invalidator.errors import ConfigError
from invalidator.runtime.audit import RECHECK_DELAY, Auditor, NodeReads
from invalidator.sinks.memcached.tls import pool_connectors
from invalidator.sources.rows import RowReader


def audit(
    config: Config,
    *,
    sample: int,
    rate: float,
    only: int | None = None,
    recheck_delay: float = RECHECK_DELAY,
) -> list[RuleTally]:
    """Audit the rules with a ``value`` (or rule ``only``) once, on up to ``sample`` rows
    each. ``ConfigError`` when there is nothing to audit."""
    rules = compile_rules(config).rules
    if only is not None:
        if not 0 <= only < len(rules):
            raise ConfigError(f"--rule {only}: the configuration has rules 0-{len(rules) - 1}")
        if not rules[only].audited:
            raise ConfigError(
                f"rules[{only}] (table {rules[only].qualified_table}): no 'value': audit cannot "
                "tell what its keys should hold (add value: {json: [...]} or {query: ...})"
            )
    chosen = audited_rules(rules, only)
    if not chosen:
        raise ConfigError("no rule has a 'value': audit cannot tell what any key should hold")
    placements = static_router(config).placements
    for rule in chosen:
        if rule.pool not in placements:
            raise ConfigError(
                f"rules[{rule.index}]: pool {rule.pool!r} uses 'discover': audit needs 'servers' "
                "(or INVALIDATOR_MEMCACHED_SERVERS)"
            )
    # What the daemon has applied, from its slot: a stale-looking copy is judged again only
    # once the daemon is past what the re-read row reflects (notify: no slot, no wait).
    slot = RowReader(config.source.dsn.get_secret_value()) if config.source.dsn else None
    confirmed = None
    if slot is not None and config.source.kind == "wal2json":
        reader, name = slot, config.source.slot
        confirmed = lambda: reader.confirmed(name)  # noqa: E731
    auditor = Auditor(
        config,
        lambda: placements,
        NodeReads(pool_connectors(config)),
        rate=rate,
        recheck_delay=recheck_delay,
        confirmed=confirmed,
    )
    try:
        return [auditor.audit(rule, sample) for rule in chosen]
    finally:
        auditor.close()
        if slot is not None:
            slot.close()


def print_text(tallies: list[RuleTally], out: IO[str]) -> None:
    """One line per rule, its stale examples indented below it, then the totals."""
    for t in tallies:
        out.write(
            f"rules[{t.rule}] {t.table} (pool {t.pool}): {t.rows} rows sampled, "
            f"{t.copies} copies read, {t.cached} cached: {t.fresh} fresh, "
            f"{t.reformatted} same value in other bytes, {t.stale} stale"
            f" ({t.rechecked} re-checked"
            + (f", {t.rewritten} rewritten at every re-check" if t.rewritten else "")
            + ")\n"
        )
        if t.error is not None:
            out.write(f"  error: {t.error}\n")
        for e in t.examples:
            out.write(
                f"  stale {e.key} on {e.node}: cached {json.dumps(e.cached)}, "
                f"expected {json.dumps(e.expected)}\n"
            )
    stale = sum(t.stale for t in tallies)
    cached = sum(t.cached for t in tallies)
    failed = sum(1 for t in tallies if t.error is not None)
    out.write(
        f"audit: {stale} stale of {cached} cached copies in {len(tallies)} rules"
        + (f", {failed} rules not fully read" if failed else "")
        + "\n"
    )


def print_json(tallies: list[RuleTally], out: IO[str]) -> None:
    """One JSON object per rule and line (``RuleTally.record``)."""
    for t in tallies:
        out.write(json.dumps(t.record()) + "\n")


def exit_code(tallies: list[RuleTally]) -> int:
    """1 when a copy is stale or a rule could not be fully read, else 0."""
    return 1 if any(t.stale or t.error is not None for t in tallies) else 0
