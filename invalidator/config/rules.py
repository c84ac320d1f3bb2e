"""The validated configuration's rules, compiled for the core (``RuleSet``)."""

from __future__ import annotations

from collections.abc import Mapping

from invalidator.config import Config, RuleConfig
from invalidator.core.placement import Placement, placement_for
from invalidator.core.rules import CompiledRule, RuleSet
from invalidator.core.templates import compile_template


def compile_rule(
    index: int,
    rule: RuleConfig,
    pool_redelete: float | None = None,
    ttls: Mapping[str, int] | None = None,
) -> CompiledRule:
    json_columns = rule.value.json_columns if rule.value is not None else None
    return CompiledRule(
        index=index,
        schema=rule.schema_name,
        table=rule.table,
        on=frozenset(rule.on),
        templates=tuple(compile_template(k) for k in rule.keys),
        action=rule.action,
        pool=rule.pool,
        when_changed=rule.when_changed,
        json_columns=json_columns,
        ttl=(ttls or {}).get(rule.ttl, 0) if isinstance(rule.ttl, str) else (rule.ttl or 0),
        value_query=rule.value.query if rule.value is not None else None,
        truncate=rule.truncate_policy,
        redelete=rule.redelete_after if rule.redelete_after is not None else pool_redelete,
    )


def compile_rules(config: Config) -> RuleSet:
    """Every rule of ``config``, compiled, with its pool's defaults applied."""
    return RuleSet(
        tuple(
            compile_rule(i, r, config.pools[r.pool].redelete_after, config.pools[r.pool].ttls)
            for i, r in enumerate(config.rules)
        )
    )


def pool_placement(config: Config, pool: str, servers: tuple[str, ...] | None = None) -> Placement:
    """The placement ``pool``'s settings ask for, over ``servers`` (default: its own)."""
    settings = config.pools[pool]
    chosen = servers if servers is not None else settings.servers
    return placement_for(settings.hashing, chosen, settings.fallback_depth)
