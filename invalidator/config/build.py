"""Core objects built from the validated configuration: rules, placements, routers."""

from __future__ import annotations

from collections.abc import Mapping

from invalidator.config import Config, RuleConfig
from invalidator.core.placement import (
    Placement,
    node_name,
    parse_server,
    placement_for,
    split_weight,
)
from invalidator.core.routing import Router
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
    return placement_for(
        settings.client, chosen, settings.behaviors, fallback_depth=settings.fallback_depth
    )


def static_router(config: Config) -> Router:
    """A router for every pool with static ``servers`` (discovered pools are resolved by
    the daemon's membership)."""
    return Router(
        {name: pool_placement(config, name) for name, pool in config.pools.items() if pool.servers}
    )


def node_addresses(config: Config) -> dict[str, tuple[str, int]]:
    """Node name → address of every static server of every pool (weights left out)."""
    return {
        node_name(server): parse_server(split_weight(server)[0])
        for pool in config.pools.values()
        for server in pool.servers
    }
