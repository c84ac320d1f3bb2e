"""``invalidator check``: what is wrong with a configuration, before it runs."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .rules import RuleSet


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (``error``) or hint (``warning``) about the configuration."""

    level: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def offline_findings(config: Config, source: str) -> list[Finding]:
    """Checks that need neither the database nor memcached."""
    findings: list[Finding] = []
    rules = RuleSet.from_config(config)
    seen: dict[tuple[str, str, str, str], int] = {}
    for rule in rules.rules:
        where = f"{source}: rules[{rule.index}] (table {rule.qualified_table})"
        for i, template in enumerate(rule.templates):
            if not template.columns:
                findings.append(
                    Finding(
                        "warning",
                        f"{where}: keys[{i}]",
                        f"{template.source!r} uses no column: every change hits the same key",
                    )
                )
            ident = (rule.schema, rule.table, rule.pool, template.source)
            if ident in seen and rule.action == "delete":
                findings.append(
                    Finding(
                        "warning",
                        f"{where}: keys[{i}]",
                        f"{template.source!r} repeats rules[{seen[ident]}]",
                    )
                )
            seen.setdefault(ident, rule.index)
        if "truncate" in rule.on and rule.action == "delete":
            findings.append(
                Finding(
                    "warning",
                    f"{where}: on",
                    "truncate removes every row but keys cannot be listed; "
                    "each truncate is reported as unbuildable keys",
                )
            )
    for name, pool in config.pools.items():
        if pool.servers and len(pool.servers) == 1 and pool.fallback_depth:
            findings.append(
                Finding(
                    "warning",
                    f"{source}: pools.{name}: fallback_depth",
                    "a single server has no fallback choices",
                )
            )
    return findings
