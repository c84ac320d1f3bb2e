"""``invalidator check``: what is wrong with a configuration, before it runs."""

from __future__ import annotations

from dataclasses import dataclass

from invalidator.config import NO_DSN, Config
from invalidator.config.build import compile_rules, node_addresses
from invalidator.core.rules import CompiledRule
from invalidator.errors import InvalidatorError, NodeError
from invalidator.sinks.memcached.client import NodeConnection
from invalidator.sinks.memcached.protocol import VERSION_REQUEST
from invalidator.sinks.memcached.tls import node_connectors
from invalidator.sources.catalog import Admin
from invalidator.sources.postgres import PLUGIN


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
    rules = compile_rules(config)
    seen: dict[tuple[str, str, str, str], int] = {}
    for rule in rules.rules:
        where = f"{source}: rules[{rule.index}] (table {rule.qualified_table})"
        for i, template in enumerate(rule.templates):
            if not template.columns and rule.action != "bump":
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


_IDENTITY = {"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}


def _old_row_findings(
    rule: CompiledRule, where: str, identity: str, identity_columns: frozenset[str]
) -> list[Finding]:
    findings: list[Finding] = []
    old_kinds = [k for k in ("update", "delete") if k in rule.on]
    if not old_kinds:
        return findings
    if identity == "n" or not identity_columns:
        return [
            Finding(
                "error",
                f"{where}: on",
                f"table has REPLICA IDENTITY {_IDENTITY.get(identity, identity)}"
                f"{' and no primary key' if identity == 'd' else ''}: wal2json "
                f"drops its {' and '.join(k.upper() for k in old_kinds)} "
                "(ALTER TABLE ... REPLICA IDENTITY FULL)",
            )
        ]
    if rule.when_changed is not None and "update" in rule.on:
        blind = sorted(set(rule.when_changed) - identity_columns)
        if blind:
            findings.append(
                Finding(
                    "warning",
                    f"{where}: when_changed",
                    f"old values of {', '.join(blind)} are not in the stream (REPLICA IDENTITY "
                    f"{_IDENTITY.get(identity, identity)}): every UPDATE counts as a change "
                    "(ALTER TABLE ... REPLICA IDENTITY FULL)",
                )
            )
    for i, template in enumerate(rule.templates):
        missing = sorted(set(template.columns) - identity_columns)
        if missing:
            level = "error" if "delete" in rule.on else "warning"
            findings.append(
                Finding(
                    level,
                    f"{where}: keys[{i}]",
                    f"{template.source!r} needs old {', '.join(missing)} on "
                    f"{' and '.join(k.upper() for k in old_kinds)} but REPLICA IDENTITY "
                    f"{_IDENTITY.get(identity, identity)} carries only "
                    f"{', '.join(sorted(identity_columns))}: the old key cannot be built "
                    "(ALTER TABLE ... REPLICA IDENTITY FULL)",
                )
            )
    return findings


def online_findings(config: Config, source: str) -> list[Finding]:
    """Checks against the database (wal_level, plugin, tables, columns, replica identity)
    and memcached (every node answers)."""
    findings: list[Finding] = []
    if config.source.dsn is None:
        return [Finding("error", f"{source}: source.dsn", NO_DSN)]
    admin = Admin(config.source.dsn.get_secret_value())
    try:
        level = admin.wal_level()
        if level != "logical":
            findings.append(Finding("error", "database", f"wal_level is {level}, needs logical"))
        # wal2json is an output plugin, not an extension: probe it with a temporary slot.
        probe = admin.query(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (config.source.slot,)
        )
        if not probe[0][0]:
            try:
                # A temporary slot: it disappears with the probe's own connection.
                admin.query(
                    "SELECT pg_create_logical_replication_slot('invalidator_check_probe',"
                    " %s, true)",
                    (PLUGIN,),
                )
            except InvalidatorError as exc:
                findings.append(
                    Finding("error", "database", f"cannot use the {PLUGIN} plugin: {exc}")
                )
        rules = compile_rules(config)
        for rule in rules.rules:
            where = f"{source}: rules[{rule.index}] (table {rule.qualified_table})"
            facts = admin.table_facts(rule.schema, rule.table)
            if not facts.exists:
                findings.append(Finding("error", f"{where}: table", "no such table"))
                continue
            for i, template in enumerate(rule.templates):
                unknown = sorted(set(template.columns) - facts.columns)
                if unknown:
                    findings.append(
                        Finding(
                            "error",
                            f"{where}: keys[{i}]",
                            f"unknown column {', '.join(unknown)} in {template.source!r}",
                        )
                    )
            for name in (rule.when_changed or ()) + (rule.json_columns or ()):
                if name not in facts.columns:
                    findings.append(Finding("error", f"{where}", f"unknown column {name}"))
            findings.extend(
                _old_row_findings(rule, where, facts.replica_identity, facts.identity_columns)
            )
    except InvalidatorError as exc:
        findings.append(Finding("error", "database", str(exc)))
    connectors = node_connectors(config)
    for node, address in node_addresses(config).items():
        conn = NodeConnection(node, address, timeout=2.0, connector=connectors[node])
        try:
            conn.roundtrip([VERSION_REQUEST])
        except NodeError as exc:
            findings.append(Finding("error", f"memcached node {node}", exc.reason))
        finally:
            conn.close()
    return findings
