"""The pgoutput source's publication: exactly the rules' tables, each with a PostgreSQL 15
column list of exactly the columns the rules read, kept in step with the rules.

``wanted`` is the pure rule: a watched table's list is every column its rules read (key
templates, ``when_changed``, ``value.json``) that exists, plus its replica identity
columns (PostgreSQL refuses an UPDATE/DELETE whose publication's column list misses
one); with REPLICA IDENTITY FULL no list at all (every column is identity). A table with
no identity (NOTHING, or DEFAULT without a primary key) is refused: in a publication that
publishes updates its UPDATEs and DELETEs would fail in the application. Partitioned
tables are published through their root (``publish_via_partition_root``), so changes name
the table the rules name, partitions created later included.

``Publication`` is the SQL: read what is published, CREATE or ``ALTER PUBLICATION ... SET
TABLE`` (only when it differs, so it is idempotent, and under ``lock_timeout`` so a busy
table never queues the application behind us), DROP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import sql

from invalidator.core.rules import RuleSet, TableName
from invalidator.errors import SourceError
from invalidator.sources.catalog import Admin, TableFacts

PUBLISH = "insert, update, delete, truncate"
LOCK_TIMEOUT = "5s"

# table → its column list (sorted), or None for every column
Tables = dict[TableName, tuple[str, ...] | None]


@dataclass(frozen=True, slots=True)
class Published:
    """A publication as the catalogue has it."""

    exists: bool
    tables: Tables
    via_root: bool = False
    publishes_all: bool = False  # insert, update, delete and truncate


def qualified(name: TableName) -> str:
    return ".".join(name)


def no_identity_error(name: TableName, facts: TableFacts) -> str:
    """Why a table cannot be published (its UPDATE/DELETE would fail), as one line."""
    why = "NOTHING" if facts.replica_identity == "n" else "DEFAULT and no primary key"
    return (
        f"table {qualified(name)} has REPLICA IDENTITY {why}: in a publication its UPDATEs "
        "and DELETEs would fail (ALTER TABLE ... REPLICA IDENTITY FULL, or add a primary key)"
    )


def wanted(rules: RuleSet, facts: Mapping[TableName, TableFacts]) -> Tables:
    """The tables and column lists the rules need (tables that do not exist are left out:
    ``check`` reports them). Raises SourceError for a table with no replica identity."""
    tables: Tables = {}
    for name, table_rules in rules.by_table.items():
        table = facts[name]
        if not table.exists:
            continue
        if not table.identity_columns:
            raise SourceError(no_identity_error(name, table))
        if table.replica_identity == "f":
            tables[name] = None
            continue
        read = {c for rule in table_rules for c in rule.columns} & table.columns
        tables[name] = tuple(sorted(read | table.identity_columns))
    return tables


def lacking(current: Published, target: Tables, partitioned: bool) -> list[str]:
    """What ``target`` needs that ``current`` does not publish (the publication, operations,
    a table, columns), one phrase each; ``partitioned``: a rule's table is partitioned, so
    its changes must be published under the root's name. Changes already decoded under
    ``current`` carry none of it: adding it later does not bring them back."""
    if not current.exists:
        return ["the publication itself"]
    missing: list[str] = []
    if not current.publishes_all:
        missing.append("some of insert, update, delete and truncate")
    if partitioned and not current.via_root:
        missing.append("partitions' changes under their root's name")
    for name, columns in sorted(target.items()):
        if name not in current.tables:
            missing.append(f"table {qualified(name)}")
            continue
        published = current.tables[name]
        if published is not None:
            extra = sorted(set(columns or ("every column",)) - set(published))
            if extra:
                missing.append(f"{', '.join(extra)} of {qualified(name)}")
    return missing


def _table_list(tables: Tables) -> sql.Composable:
    entries: list[sql.Composable] = []
    for name, columns in sorted(tables.items()):
        entry: sql.Composable = sql.Identifier(*name)
        if columns is not None:
            entry = sql.SQL("{} ({})").format(
                entry, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            )
        entries.append(entry)
    return sql.SQL(", ").join(entries)


class Publication:
    """One named publication, through the source's admin connection."""

    def __init__(self, admin: Admin, name: str):
        self.admin = admin
        self.name = name

    def read(self) -> Published:
        rows = self.admin.query(
            "SELECT pubviaroot, pubinsert AND pubupdate AND pubdelete AND pubtruncate"
            " FROM pg_publication WHERE pubname = %s",
            (self.name,),
        )
        if not rows:
            return Published(False, {})
        via_root, publishes_all = rows[0]
        tables: Tables = {}
        for schema, table, columns in self.admin.query(
            "SELECT n.nspname, c.relname, CASE WHEN r.prattrs IS NULL THEN NULL ELSE"
            " (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a"
            "  WHERE a.attrelid = r.prrelid AND a.attnum = ANY(r.prattrs)) END"
            " FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
            " JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE p.pubname = %s",
            (self.name,),
        ):
            tables[(schema, table)] = tuple(sorted(columns)) if columns is not None else None
        return Published(True, tables, bool(via_root), bool(publishes_all))

    def facts(self, rules: RuleSet) -> dict[TableName, TableFacts]:
        return {name: self.admin.table_facts(*name) for name in rules.by_table}

    def lacking(self, rules: RuleSet) -> list[str]:
        """What ``rules`` need that the publication does not publish now (``lacking``)."""
        facts = self.facts(rules)
        partitioned = any(f.partitioned for f in facts.values())
        return lacking(self.read(), wanted(rules, facts), partitioned)

    def sync(self, rules: RuleSet) -> str:
        """Create the publication, or bring it in step with ``rules``; says what it did."""
        target = wanted(rules, self.facts(rules))
        current = self.read()
        name = sql.Identifier(self.name)
        options = sql.SQL("publish = {}, publish_via_partition_root = true").format(
            sql.Literal(PUBLISH)
        )
        statements: list[sql.Composable] = []
        if not current.exists:
            if target:
                statements.append(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH ({})").format(
                        name, _table_list(target), options
                    )
                )
            else:
                statements.append(sql.SQL("CREATE PUBLICATION {} WITH ({})").format(name, options))
            done = f"publication {self.name}: created with {len(target)} tables"
        else:
            if not (current.via_root and current.publishes_all):
                statements.append(sql.SQL("ALTER PUBLICATION {} SET ({})").format(name, options))
            if current.tables != target:
                if target:
                    statements.append(
                        sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                            name, _table_list(target)
                        )
                    )
                else:
                    statements.append(
                        sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                            name, sql.SQL(", ").join(sql.Identifier(*t) for t in current.tables)
                        )
                    )
            if not statements:
                return f"publication {self.name}: in step with the rules"
            done = f"publication {self.name}: altered to {len(target)} tables"
        self.admin.execute(
            sql.SQL("BEGIN; SET LOCAL lock_timeout = {}; {}; COMMIT").format(
                sql.Literal(LOCK_TIMEOUT), sql.SQL("; ").join(statements)
            )
        )
        return done

    def covers(self, rules: RuleSet) -> bool:
        """The publication exists and publishes every operation of every table and column
        the rules need, perhaps more: streaming from it misses nothing, even where ``sync``
        may not alter it to exactly that (only a table's owner may add it)."""
        return not self.lacking(rules)

    def drop(self) -> bool:
        if not self.read().exists:
            return False
        self.admin.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(self.name)))
        return True
