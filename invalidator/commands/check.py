"""``invalidator check``: what is right and wrong with a configuration, before it runs.

A check is a plain function of a ``CheckContext`` returning ``Finding``s, each ✓ (``ok``:
what it looked at), ✗ (``error``) or ⚠ (``warning``). ``OFFLINE_CHECKS`` need nothing but
the file; ``CATALOGUE_CHECKS`` read one ``Catalogue`` (one connection), and are also
``run``'s pre-flight; ``PROBE_CHECKS`` touch more (a temporary slot, every memcached node).
A source that needs checks of its own adds functions to these tuples.

Findings marked ``stops_run`` mean keys that cannot be built or would be misplaced: ``run``
refuses to start on them (exit 2) unless ``--lenient``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from invalidator.config import NO_DSN, Config
from invalidator.config.build import compile_rules, node_addresses
from invalidator.core.rules import CompiledRule, RuleSet
from invalidator.errors import InvalidatorError, NodeError
from invalidator.sinks.memcached.client import NodeConnection
from invalidator.sinks.memcached.protocol import VERSION_REQUEST
from invalidator.sinks.memcached.tls import node_connectors
from invalidator.sources.catalog import Admin, Catalogue, TableFacts, quoted_table
from invalidator.sources.postgres import PLUGIN
from invalidator.sources.publication import Publication, no_identity_error, wanted
from invalidator.sources.replicas import replica_status

MARKS = {"ok": "✓", "error": "✗", "warning": "⚠"}
_RULE = re.compile(r"rules\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: ``ok`` (what was looked at), ``error`` or ``warning``."""

    level: str
    where: str
    message: str
    stops_run: bool = False  # keys unbuildable or misplaced: `run` refuses to start
    check: str = ""  # the check function that found it (set by ``run_checks``)
    rule: int | None = None  # the rule's index, when it is about one

    @property
    def section(self) -> tuple[int, int]:
        """Where it is listed: the file, the database, each rule in order, memcached."""
        if self.rule is not None:
            return (2, self.rule)
        if self.where.startswith(("database", "source")):
            return (1, 0)
        if self.where.startswith(("memcached", "pools")):
            return (3, 0)
        return (0, 0)

    def __str__(self) -> str:
        return f"{MARKS.get(self.level, self.level)} {self.where}: {self.message}"

    def record(self) -> dict[str, Any]:
        """The JSON object of ``check --format json``."""
        return {
            "check": self.check,
            "result": self.level,
            "where": self.where,
            "message": self.message,
            "stops_run": self.stops_run,
            "rule": self.rule,
        }


@dataclass(slots=True)
class CheckContext:
    """What every check may look at; ``catalogue`` is None offline or when unreachable."""

    config: Config
    rules: RuleSet
    catalogue: Catalogue | None = None
    admin: Admin | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Check = Callable[[CheckContext], list[Finding]]


def plural(count: int, noun: str) -> str:
    """``1 rule``, ``2 rules``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _rule_where(rule: CompiledRule) -> str:
    return f"rules[{rule.index}] (table {rule.qualified_table})"


def _ops(kinds: Sequence[str]) -> str:
    return " and ".join(k.upper() for k in kinds)


def _old_kinds(rule: CompiledRule) -> list[str]:
    return [k for k in ("update", "delete") if k in rule.on]


# --------------------------------------------------------------------------- offline


def check_parsed(ctx: CheckContext) -> list[Finding]:
    """The file parsed and validated (load_config raised otherwise)."""
    config = ctx.config
    tables = {r.qualified_table for r in config.rules}
    nodes = sum(len(p.servers) for p in config.pools.values())
    return [
        Finding(
            "ok",
            "config",
            f"parsed: {config.source.kind} source, {plural(len(config.rules), 'rule')} on "
            f"{plural(len(tables), 'table')}, {plural(len(config.pools), 'pool')} "
            f"({plural(nodes, 'static node')})",
        )
    ]


def check_templates(ctx: CheckContext) -> list[Finding]:
    """Templates that hit one key for every row, or repeat another rule's."""
    findings: list[Finding] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for rule in ctx.rules.rules:
        where = _rule_where(rule)
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
        if "truncate" in rule.on and rule.action == "delete" and rule.truncate == "warn":
            findings.append(
                Finding(
                    "warning",
                    f"{where}: on",
                    "truncate removes every row but keys cannot be listed; "
                    "each truncate is reported as unbuildable keys",
                )
            )
    return findings


def check_pools(ctx: CheckContext) -> list[Finding]:
    """Pool settings that cannot do what they say."""
    findings: list[Finding] = []
    for name, pool in ctx.config.pools.items():
        if pool.servers and len(pool.servers) == 1 and pool.fallback_depth:
            findings.append(
                Finding(
                    "warning",
                    f"pools.{name}: fallback_depth",
                    "a single server has no fallback choices",
                )
            )
    return findings


# --------------------------------------------------------------------------- catalogue

_IDENTITY = {"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}


def _logical(ctx: CheckContext) -> bool:
    return ctx.config.source.kind != "notify"


def _plugin(ctx: CheckContext) -> str:
    """The output plugin the slot decodes with."""
    return "pgoutput" if ctx.config.source.kind == "pgoutput" else PLUGIN


def check_database(ctx: CheckContext) -> list[Finding]:
    """The server answered, and the role may stream (logical sources)."""
    cat = ctx.catalogue
    if cat is None:
        return []
    version = cat.server_version.split(" ", 1)[0]
    findings = [Finding("ok", "database", f"connected (PostgreSQL {version})")]
    if _logical(ctx):
        if cat.may_replicate:
            findings.append(Finding("ok", "database", "the role may open replication connections"))
        else:
            findings.append(
                Finding(
                    "error",
                    "database",
                    "the role has no REPLICATION right (sql/role.sql: ALTER ROLE ... REPLICATION;"
                    " Amazon RDS: GRANT rds_replication)",
                )
            )
    return findings


def check_wal_level(ctx: CheckContext) -> list[Finding]:
    cat = ctx.catalogue
    if cat is None or not _logical(ctx):
        return []
    if cat.wal_level == "logical":
        return [Finding("ok", "database", "wal_level is logical")]
    return [
        Finding(
            "error",
            "database",
            f"wal_level is {cat.wal_level}, needs logical (ALTER SYSTEM SET wal_level = logical,"
            " then restart; managed services: see sql/README.md)",
        )
    ]


def check_slot(ctx: CheckContext) -> list[Finding]:
    cat = ctx.catalogue
    if cat is None or not _logical(ctx):
        return []
    slot = ctx.config.source.slot
    plugin = cat.slots.get(slot)
    expected = _plugin(ctx)
    if plugin is None:
        if ctx.config.source.create_slot:
            return [
                Finding(
                    "ok",
                    "database",
                    f"slot {slot} does not exist yet: `invalidator setup` or the first run "
                    "creates it",
                )
            ]
        return [
            Finding(
                "error",
                "database",
                f"slot {slot} does not exist and source.create_slot is false "
                "(create it: `invalidator setup` or sql/slot.sql)",
            )
        ]
    if plugin != expected:
        return [
            Finding("error", "database", f"slot {slot} exists with plugin {plugin}, not {expected}")
        ]
    return [Finding("ok", "database", f"slot {slot} exists ({plugin})")]


def _suggest(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _tables(ctx: CheckContext) -> list[tuple[CompiledRule, TableFacts]]:
    """Rules whose table exists, with its facts."""
    cat = ctx.catalogue
    if cat is None:
        return []
    return [
        (rule, facts)
        for rule in ctx.rules.rules
        if (facts := cat.facts(rule.schema, rule.table)).exists and facts.kind in ("r", "p")
    ]


def check_tables(ctx: CheckContext) -> list[Finding]:
    """Each rule's table exists and is a table (a view has no changes)."""
    cat = ctx.catalogue
    if cat is None:
        return []
    findings: list[Finding] = []
    for rule in ctx.rules.rules:
        where = f"{_rule_where(rule)}: table"
        facts = cat.facts(rule.schema, rule.table)
        if not facts.exists:
            known = cat.names.get(rule.schema, ())
            listing = f"tables in {rule.schema}: {', '.join(known)}" if known else "none"
            findings.append(
                Finding(
                    "error",
                    where,
                    f"no such table ({_suggest(rule.table, known)}{listing})",
                    stops_run=True,
                )
            )
        elif facts.kind not in ("r", "p"):
            findings.append(
                Finding(
                    "error",
                    where,
                    "not a table (a view or other relation: it has no changes to stream)",
                    stops_run=True,
                )
            )
        else:
            findings.append(
                Finding(
                    "ok",
                    where,
                    f"exists ({len(facts.ordered)} columns; REPLICA IDENTITY "
                    f"{_identity_text(facts)})",
                )
            )
    return findings


def _identity_text(facts: TableFacts) -> str:
    name = _IDENTITY.get(facts.replica_identity, facts.replica_identity)
    if facts.replica_identity in ("d", "i"):
        carried = ", ".join(c for c in facts.ordered if c in facts.identity_columns)
        return f"{name}: {carried}" if carried else f"{name}, no primary key"
    return name


def _unknown(name: str, facts: TableFacts, rule: CompiledRule) -> str:
    return (
        f"unknown column {name} ({_suggest(name, facts.ordered)}columns of "
        f"{rule.qualified_table}: {', '.join(facts.ordered)})"
    )


def _columns_used(rule: CompiledRule) -> list[tuple[str, str, tuple[str, ...]]]:
    """(field, what, columns) for every place of ``rule`` that names columns."""
    used = [(f"keys[{i}]", repr(t.source), tuple(t.columns)) for i, t in enumerate(rule.templates)]
    used += [(f"when_changed[{i}]", "", (c,)) for i, c in enumerate(rule.when_changed or ())]
    used += [(f"value.json[{i}]", "", (c,)) for i, c in enumerate(rule.json_columns or ())]
    return used


def check_columns(ctx: CheckContext) -> list[Finding]:
    """Every column a template, ``when_changed`` or ``value.json`` names exists."""
    findings: list[Finding] = []
    for rule, facts in _tables(ctx):
        where = _rule_where(rule)
        for place, what, columns in _columns_used(rule):
            unknown = [c for c in dict.fromkeys(columns) if c not in facts.columns]
            label = f"{what}: " if what else ""
            if unknown:
                findings.append(
                    Finding(
                        "error",
                        f"{where}: {place}",
                        label + "; ".join(_unknown(c, facts, rule) for c in unknown),
                        stops_run=True,
                    )
                )
            elif place.startswith("keys"):
                names = ", ".join(dict.fromkeys(columns)) or "none"
                findings.append(
                    Finding("ok", f"{where}: {place}", f"{label}columns exist ({names})")
                )
    return findings


def check_replica_identity(ctx: CheckContext) -> list[Finding]:
    """The old row of UPDATE/DELETE carries every column each template needs (logical
    sources: the notify source's triggers record old values whatever the identity)."""
    findings: list[Finding] = []
    if not _logical(ctx):
        return findings
    for rule, facts in _tables(ctx):
        where = _rule_where(rule)
        old_kinds = _old_kinds(rule)
        if not old_kinds:
            continue
        identity = _IDENTITY.get(facts.replica_identity, facts.replica_identity)
        fix = f"ALTER TABLE {quoted_table(rule.schema, rule.table)} REPLICA IDENTITY FULL"
        if facts.replica_identity == "n" or not facts.identity_columns:
            if ctx.config.source.kind == "pgoutput":
                continue  # check_publication says why such a table cannot be published
            findings.append(
                Finding(
                    "error",
                    f"{where}: on",
                    f"table has REPLICA IDENTITY {identity}"
                    f"{' and no primary key' if facts.replica_identity == 'd' else ''}: "
                    f"wal2json drops its {_ops(old_kinds)} ({fix})",
                    stops_run=True,
                )
            )
            continue
        if rule.when_changed is not None and "update" in rule.on:
            blind = [
                c
                for c in rule.when_changed
                if c in facts.columns and c not in facts.identity_columns
            ]
            if blind:
                findings.append(
                    Finding(
                        "warning",
                        f"{where}: when_changed",
                        f"old values of {', '.join(blind)} are not in the stream (REPLICA "
                        f"IDENTITY {identity}): every UPDATE counts as a change ({fix})",
                    )
                )
        carried = ", ".join(c for c in facts.ordered if c in facts.identity_columns)
        for i, template in enumerate(rule.templates):
            columns = list(dict.fromkeys(template.columns))
            if any(c not in facts.columns for c in columns):
                continue  # check_columns reports it; identity advice cannot help
            missing = [c for c in columns if c not in facts.identity_columns]
            if missing:
                findings.append(
                    Finding(
                        "error",
                        f"{where}: keys[{i}]",
                        f"{template.source!r} needs old {', '.join(missing)} on "
                        f"{_ops(old_kinds)} but REPLICA IDENTITY {identity} carries only "
                        f"{carried}: the old key cannot be built ({fix})",
                        stops_run=True,
                    )
                )
            else:
                findings.append(
                    Finding(
                        "ok",
                        f"{where}: keys[{i}]",
                        f"{template.source!r}: the old row of {_ops(old_kinds)} carries "
                        f"{', '.join(columns) or 'no column needed'} (REPLICA IDENTITY "
                        f"{_identity_text(facts)})",
                    )
                )
    return findings


# --------------------------------------------------------------------------- probes


def check_plugin(ctx: CheckContext) -> list[Finding]:
    """The output plugin can decode: probed with a temporary slot (wal2json is a plugin
    to install, not an extension; pgoutput is built in but the probe also proves the role
    may create a slot)."""
    cat, admin = ctx.catalogue, ctx.admin
    if cat is None or admin is None or not _logical(ctx):
        return []
    plugin = _plugin(ctx)
    if ctx.config.source.slot in cat.slots:
        return [Finding("ok", "database", f"the {plugin} output plugin is in use by the slot")]
    try:
        # A temporary slot: it disappears with the probe's own connection.
        admin.query(
            "SELECT pg_create_logical_replication_slot('invalidator_check_probe', %s, true)",
            (plugin,),
        )
    except InvalidatorError as exc:
        return [Finding("error", "database", f"cannot use the {plugin} plugin: {exc}")]
    return [Finding("ok", "database", f"the {plugin} output plugin is available")]


def check_publication(ctx: CheckContext) -> list[Finding]:
    """pgoutput: free replication slots, tables that cannot be published (no replica
    identity), and whether the publication exists and covers every column a rule reads
    (``run`` and ``setup`` create it or bring it in step: a difference is what they would
    change, an error when a rule would miss columns until then)."""
    cat, admin, config = ctx.catalogue, ctx.admin, ctx.config
    if cat is None or admin is None or config.source.kind != "pgoutput":
        return []
    findings: list[Finding] = []
    name = config.source.publication_name
    where = f"source.publication ({name})"
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
    facts = {(r.schema, r.table): cat.facts(r.schema, r.table) for r in ctx.rules.rules}
    for table, table_facts in facts.items():
        if table_facts.exists and not table_facts.identity_columns:
            findings.append(
                Finding("error", where, no_identity_error(table, table_facts), stops_run=True)
            )
    usable = {t: f for t, f in facts.items() if f.identity_columns or not f.exists}
    publishable = RuleSet(tuple(r for r in ctx.rules.rules if (r.schema, r.table) in usable))
    target = wanted(publishable, usable)
    published = Publication(admin, name).read()
    if not published.exists:
        findings.append(
            Finding(
                "ok", where, "does not exist yet: `invalidator setup` or the first run creates it"
            )
        )
        return findings
    for rule in ctx.rules.rules:
        table = (rule.schema, rule.table)
        if table not in target:
            continue
        if table not in published.tables:
            findings.append(
                Finding(
                    "error",
                    _rule_where(rule),
                    f"not in publication {name} (setup or run adds it)",
                )
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
                    _rule_where(rule),
                    f"publication {name} publishes only {', '.join(columns)}: the rule reads "
                    f"{', '.join(missing)} too (setup or run adds them)",
                )
            )
    in_step = published.tables == target and published.via_root and published.publishes_all
    if in_step:
        findings.append(
            Finding("ok", where, "publishes exactly the tables and columns the rules read")
        )
    elif published.tables != target:
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
    else:
        findings.append(
            Finding(
                "warning",
                where,
                "does not publish every operation through partition roots (setup or run sets it)",
            )
        )
    return findings


def check_replicas(ctx: CheckContext) -> list[Finding]:
    """Each pool's ``replicas`` answers and is a standby of the source's cluster (its
    replay positions are compared with the stream's)."""
    findings: list[Finding] = []
    dsn = ctx.config.source.dsn
    primary = dsn.get_secret_value() if dsn is not None else None
    for name, pool in ctx.config.pools.items():
        for replica in pool.replicas:
            state = replica_status(replica.get_secret_value(), primary)
            where = f"pools.{name}.replicas: {state['replica']}"
            if "error" in state:
                findings.append(Finding("error", where, str(state["error"])))
            elif state.get("standby_of_primary") is False:
                findings.append(
                    Finding(
                        "error",
                        where,
                        "not a standby of the source's cluster (another system identifier): "
                        "its replay positions mean nothing to the stream",
                    )
                )
            else:
                behind = state.get("bytes_behind")
                findings.append(
                    Finding(
                        "ok",
                        where,
                        f"answers, replayed {state['replayed_lsn']}"
                        + (f" ({behind} bytes behind the primary)" if behind is not None else ""),
                    )
                )
    return findings


def check_nodes(ctx: CheckContext) -> list[Finding]:
    """Every static memcached node answers ``version``."""
    findings: list[Finding] = []
    connectors = node_connectors(ctx.config)
    for node, address in node_addresses(ctx.config).items():
        conn = NodeConnection(node, address, timeout=2.0, connector=connectors[node])
        where = f"memcached node {node}"
        try:
            replies = conn.roundtrip([VERSION_REQUEST])
        except NodeError as exc:
            findings.append(Finding("error", where, exc.reason))
        else:
            version = replies[0].decode("ascii", "replace").strip() if replies else ""
            version = version.replace("VERSION", "memcached", 1)
            findings.append(Finding("ok", where, f"answers ({version or 'version'})"))
        finally:
            conn.close()
    return findings


OFFLINE_CHECKS: tuple[Check, ...] = (check_parsed, check_templates, check_pools)
CATALOGUE_CHECKS: tuple[Check, ...] = (
    check_database,
    check_wal_level,
    check_slot,
    check_tables,
    check_columns,
    check_replica_identity,
    check_publication,
)
PROBE_CHECKS: tuple[Check, ...] = (check_plugin, check_replicas, check_nodes)


def run_checks(ctx: CheckContext, checks: Sequence[Check]) -> list[Finding]:
    """Every check's findings, in order, each stamped with its check's name."""
    findings: list[Finding] = []
    for check in checks:
        name = check.__name__.removeprefix("check_")
        for finding in check(ctx):
            rule = _RULE.match(finding.where)
            index = int(rule.group(1)) if rule else None
            findings.append(replace(finding, check=name, rule=index))
    return findings


def read_catalogue(ctx: CheckContext) -> list[Finding]:
    """Fill ``ctx.catalogue`` (one connection); a finding when the database cannot be read."""
    dsn = ctx.config.source.dsn
    if dsn is None:
        return [Finding("error", "source.dsn", NO_DSN, check="database")]
    ctx.admin = Admin(dsn.get_secret_value())
    try:
        ctx.catalogue = ctx.admin.catalogue((r.schema, r.table) for r in ctx.rules.rules)
    except InvalidatorError as exc:
        return [Finding("error", "database", str(exc), check="database")]
    return []


def preflight(config: Config) -> list[Finding]:
    """``run``'s checks before streaming: the catalogue's, on one connection."""
    ctx = CheckContext(config, compile_rules(config))
    problems = read_catalogue(ctx)
    return problems or run_checks(ctx, CATALOGUE_CHECKS)


def all_checks(config: Config, *, offline: bool) -> list[Finding]:
    """``check``: offline checks, then (unless ``offline``) the database's and the nodes'."""
    ctx = CheckContext(config, compile_rules(config))
    findings = run_checks(ctx, OFFLINE_CHECKS)
    if offline:
        return findings
    findings += read_catalogue(ctx)
    findings += run_checks(ctx, CATALOGUE_CHECKS + PROBE_CHECKS)
    return findings


def listed(findings: Sequence[Finding]) -> list[Finding]:
    """The order ``check`` prints: the file, the database, each rule, memcached."""
    return sorted(findings, key=lambda f: f.section)


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    count = {level: sum(f.level == level for f in findings) for level in MARKS}
    return {
        "checks": len(findings),
        "passed": count["ok"],
        "errors": count["error"],
        "warnings": count["warning"],
    }
