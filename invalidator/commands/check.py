"""``invalidator check``: what is wrong with a configuration, before it runs."""

from __future__ import annotations

from dataclasses import dataclass

from invalidator.config import NO_DSN, Config
from invalidator.config.build import compile_rules, node_addresses
from invalidator.core.rules import CompiledRule, RuleSet
from invalidator.errors import InvalidatorError, NodeError
from invalidator.sinks.memcached.client import NodeConnection
from invalidator.sinks.memcached.protocol import VERSION_REQUEST
from invalidator.sinks.memcached.tls import node_connectors
from invalidator.sources.catalog import Admin, TableFacts
from invalidator.sources.postgres import PLUGIN
from invalidator.sources.publication import Publication, no_identity_error, wanted


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
        plugin = "pgoutput" if config.source.kind == "pgoutput" else PLUGIN
        probe = admin.query(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (config.source.slot,)
        )
        if not probe[0][0]:
            try:
                # A temporary slot: it disappears with the probe's own connection.
                admin.query(
                    "SELECT pg_create_logical_replication_slot('invalidator_check_probe',"
                    " %s, true)",
                    (plugin,),
                )
            except InvalidatorError as exc:
                findings.append(
                    Finding("error", "database", f"cannot use the {plugin} plugin: {exc}")
                )
        rules = compile_rules(config)
        facts_by_table: dict[tuple[str, str], TableFacts] = {}
        for rule in rules.rules:
            where = f"{source}: rules[{rule.index}] (table {rule.qualified_table})"
            facts = admin.table_facts(rule.schema, rule.table)
            facts_by_table[(rule.schema, rule.table)] = facts
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
            if config.source.kind == "pgoutput" and not facts.identity_columns:
                continue  # publication_findings says why the table cannot be published
            findings.extend(
                _old_row_findings(rule, where, facts.replica_identity, facts.identity_columns)
            )
        if config.source.kind == "pgoutput":
            findings.extend(publication_findings(config, source, admin, facts_by_table))
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


def publication_findings(
    config: Config, source: str, admin: Admin, facts: dict[tuple[str, str], TableFacts]
) -> list[Finding]:
    """pgoutput: free replication slots, tables that cannot be published (no replica
    identity), and whether the publication exists and covers every column a rule reads
    (``run`` and ``setup`` create it or bring it in step: a difference is what they would
    change, an error when a rule would miss columns until then)."""
    findings: list[Finding] = []
    name = config.source.publication_name
    where = f"{source}: source.publication ({name})"
    used, limit, have_slot = admin.query(
        "SELECT (SELECT count(*) FROM pg_replication_slots),"
        " current_setting('max_replication_slots')::int,"
        " EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
        (config.source.slot,),
    )[0]
    if not have_slot and used >= limit:
        findings.append(
            Finding(
                "error",
                "database",
                f"max_replication_slots is {limit} and {used} are in use: no slot left for "
                f"{config.source.slot}",
            )
        )
    rules = compile_rules(config)
    for table, table_facts in facts.items():
        if table_facts.exists and not table_facts.identity_columns:
            findings.append(Finding("error", where, no_identity_error(table, table_facts)))
    usable = {t: f for t, f in facts.items() if f.identity_columns or not f.exists}
    publishable = RuleSet(tuple(r for r in rules.rules if (r.schema, r.table) in usable))
    target = wanted(publishable, usable)
    published = Publication(admin, name).read()
    if not published.exists:
        findings.append(
            Finding("warning", where, "does not exist yet: `invalidator setup` or `run` creates it")
        )
        return findings
    for rule in rules.rules:
        table = (rule.schema, rule.table)
        if table not in target:
            continue
        rule_where = f"{source}: rules[{rule.index}] (table {rule.qualified_table})"
        if table not in published.tables:
            findings.append(
                Finding("error", rule_where, f"not in publication {name} (setup or run adds it)")
            )
            continue
        columns = published.tables[table]
        if columns is None:
            continue
        missing = sorted(rule.columns & facts[table].columns - set(columns))
        if missing:
            findings.append(
                Finding(
                    "error",
                    rule_where,
                    f"publication {name} publishes only {', '.join(columns)}: the rule reads "
                    f"{', '.join(missing)} too (setup or run adds them)",
                )
            )
    if published.tables != target:
        extra = sorted(".".join(t) for t in set(published.tables) - set(target))
        detail = f"; it also publishes {', '.join(extra)}" if extra else ""
        findings.append(
            Finding(
                "warning",
                where,
                f"differs from the tables and columns the rules read{detail} "
                "(setup or run brings it in step)",
            )
        )
    if not (published.via_root and published.publishes_all):
        findings.append(
            Finding(
                "warning",
                where,
                "does not publish every operation through partition roots (setup or run sets it)",
            )
        )
    return findings
