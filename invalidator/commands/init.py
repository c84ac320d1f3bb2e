"""``invalidator init``: a commented starting configuration for some tables, from the
catalogue: key templates from each primary key and unique index, the replica identity
each template needs, the source's setup steps and the role's SQL.

``render`` is pure (a ``Catalogue`` in, YAML text out); its output always passes
``check`` against the database it was read from: a template the replica identity cannot
carry on UPDATE/DELETE is written commented out, next to the ``ALTER TABLE`` that enables it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from invalidator.core.rules import TableName
from invalidator.redact import redact
from invalidator.sources.catalog import Catalogue, TableFacts, quoted_name, quoted_table

_NO_PASSWORD = re.compile(r":\*\*\*@")
ROLE_SQL = Path(__file__).resolve().parents[2] / "sql" / "role.sql"

SETUP_STEPS = {
    "wal2json": [
        "wal_level = logical on the server (ALTER SYSTEM SET wal_level = logical; restart),",
        "a free max_replication_slots and max_wal_senders entry, and the wal2json output",
        "plugin (Debian/Ubuntu: postgresql-15-wal2json; Amazon RDS, Cloud SQL and Azure",
        "ship it). `invalidator setup` creates the slot (the first `run` does too) and",
        "`invalidator check` verifies all of it.",
    ],
    "pgoutput": [
        "wal_level = logical on the server (restart), a free max_replication_slots and",
        "max_wal_senders entry. pgoutput is built in: `invalidator setup` creates the",
        "publication and the slot; `invalidator check` verifies all of it.",
    ],
    "notify": [
        "nothing on the server: `invalidator setup` (as the tables' owner) creates schema",
        "invalidator with the outbox table and one trigger per watched table; re-run it after",
        "changing the rules. A session connection: LISTEN does not work through a",
        "transaction-pooling PgBouncer.",
    ],
}


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    columns: tuple[str, ...]
    why: str  # which index it comes from


def singular(table: str) -> str:
    """``users`` → ``user``, ``categories`` → ``category``; other names stay."""
    if table.endswith("ies") and len(table) > 3:
        return table[:-3] + "y"
    if table.endswith("s") and not table.endswith("ss") and len(table) > 1:
        return table[:-1]
    return table


def templates(table: str, facts: TableFacts) -> list[Template]:
    """A template per primary key and unique index: ``user:{id}``, ``user_by_email:{email}``."""
    name = singular(table)
    found: list[Template] = []
    if facts.primary_key:
        found.append(
            Template(
                f"{name}:" + ":".join(f"{{{c}}}" for c in facts.primary_key),
                facts.primary_key,
                "primary key",
            )
        )
    for columns in facts.unique:
        if columns == facts.primary_key:
            continue
        found.append(
            Template(
                f"{name}_by_{'_'.join(columns)}:" + ":".join(f"{{{c}}}" for c in columns),
                columns,
                "unique index",
            )
        )
    return found


def _yaml(value: str) -> str:
    """A YAML scalar: a plain name as it is, anything else as a JSON string (YAML too)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) and value not in ("true", "false", "null"):
        return value
    return json.dumps(value, ensure_ascii=False)


def _dsn_line(dsn: str) -> list[str]:
    shown = redact(dsn)
    if shown != dsn:
        without = _NO_PASSWORD.sub("@", shown)
        return [
            f"  dsn: {_yaml(without)}",
            "  # the password is left out: give the DSN with it in INVALIDATOR_DSN, or",
            "  # dsn_file: /run/secrets/dsn (a file holding it, such as a mounted Secret)",
        ]
    return [f"  dsn: {_yaml(dsn)}   # or INVALIDATOR_DSN / dsn_file"]


def _rule(schema: str, table: str, facts: TableFacts) -> tuple[list[str], list[str]]:
    """The rule's YAML lines and the ALTER TABLE advice (empty when none is needed)."""
    qualified = quoted_table(schema, table)
    if not facts.exists:
        return [f"  # {qualified}: no such table"], []
    found = templates(table, facts)
    columns = ", ".join(facts.ordered)
    lines = [f"  # {qualified} ({columns})"]
    if not found:
        lines += [
            "  # no primary key and no unique index: no key can be derived. Write the keys",
            "  # your app uses, and give the table a replica identity, e.g.",
            f"  #   ALTER TABLE {qualified} REPLICA IDENTITY FULL",
            f"  # - table: {_yaml(table)}",
            '  #   keys: ["..."]',
        ]
        return lines, [f"ALTER TABLE {qualified} REPLICA IDENTITY FULL"]
    carried = facts.identity_columns if facts.replica_identity != "n" else frozenset()
    active = [t for t in found if set(t.columns) <= carried]
    waiting = [t for t in found if not set(t.columns) <= carried]
    advice: list[str] = []
    identity = {"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}
    lines.append(
        f"  # REPLICA IDENTITY {identity.get(facts.replica_identity, facts.replica_identity)}: "
        f"the old row of UPDATE/DELETE carries "
        f"{', '.join(c for c in facts.ordered if c in carried) or 'nothing'}"
    )
    if waiting:
        fix = f"ALTER TABLE {qualified} REPLICA IDENTITY FULL"
        advice.append(fix)
        lines += [
            "  # A template below is commented out: its old key cannot be built on",
            "  # UPDATE/DELETE until the old row carries its columns. Run (as the owner)",
            f"  #   {fix}",
            "  # then uncomment it and run `invalidator check` again.",
        ]
    if not active:
        lines += [f"  # - table: {_yaml(table)}"]
        lines += [f"  #   keys: [{_yaml(t.text)}]   # {t.why}" for t in waiting]
        return lines, advice
    lines.append(f"  - table: {_yaml(table)}")
    if schema != "public":
        lines.append(f"    schema: {_yaml(schema)}")
    lines.append("    on: [insert, update, delete]")
    lines.append("    keys:")
    lines += [f"      - {_yaml(t.text)}   # {t.why} ({', '.join(t.columns)})" for t in active]
    lines += [
        f"      # - {_yaml(t.text)}   # {t.why} ({', '.join(t.columns)}): needs the ALTER above"
        for t in waiting
    ]
    lines.append("    action: delete       # or refresh (with value: {json: [...]}) or bump")
    return lines, advice


def role_sql(tables: Sequence[TableName]) -> list[str]:
    """sql/role.sql's statements, its example GRANTs replaced by these tables'."""
    schemas = sorted({schema for schema, _ in tables})
    grants = [f"GRANT USAGE ON SCHEMA {quoted_name(s)} TO invalidator;" for s in schemas]
    grants += [f"GRANT SELECT ON TABLE {quoted_table(s, t)} TO invalidator;" for s, t in tables]
    try:
        text = ROLE_SQL.read_text(encoding="utf-8")
    except OSError:
        return ["-- sql/role.sql of the source tree, with these grants:", *grants]
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("--") or not line.strip():
            continue
        if line.startswith(("GRANT USAGE ON SCHEMA public", "GRANT SELECT ON TABLE public.users")):
            if line.startswith("GRANT USAGE"):
                out += grants
            continue
        out.append(line)
    return out


def render(
    catalogue: Catalogue,
    tables: Sequence[TableName],
    *,
    dsn: str,
    kind: str,
    servers: Sequence[str],
    slot: str = "cache_invalidator",
) -> str:
    """The commented YAML configuration for ``tables``."""
    names = ", ".join(quoted_table(s, t) for s, t in tables)
    lines = [
        f"# pg-cache-invalidator: a starting configuration for {names},",
        "# written by `invalidator init` from the catalogue. Check it against the database",
        "# and memcached with `invalidator check --config THIS_FILE`. Fields: README.md.",
        "#",
        f"# Source setup ({kind}):",
        *[f"#   {line}" for line in SETUP_STEPS.get(kind, ["see README.md"])],
        "source:",
        f"  kind: {kind}",
        *_dsn_line(dsn),
    ]
    if kind != "notify":
        lines.append(f"  slot: {slot}")
    lines += [
        "pools:",
        "  default:",
        "    # The apps' memcached servers, in the apps' order and spelling (a",
        '    # MEMCACHED_SERVERS string "a:11211,b:11211" works too).',
        f"    servers: [{', '.join(_yaml(s) for s in servers)}]",
        "    hashing: rendezvous   # = pymemcache HashClient's placement (also: broadcast)",
        "rules:",
    ]
    advice: list[str] = []
    for schema, table in tables:
        rule, fix = _rule(schema, table, catalogue.facts(schema, table))
        lines += rule
        advice += fix
    lines += [
        "http:",
        "  listen: 0.0.0.0:9464      # /metrics, /healthz, /readyz",
        "log:",
        "  format: json",
        "  level: info",
        "#",
        "# Replica identity:",
        *(
            [f"#   {fix};" for fix in advice]
            if advice
            else ["#   nothing to change: every template's columns are in the old row."]
        ),
        "#",
        "# The database role (as a superuser; sql/role.sql explains each right):",
        '#   psql "$ADMIN_DSN" -v password=... -f sql/role.sql',
        *[f"#   {line}" for line in role_sql(tables)],
    ]
    return "\n".join(lines) + "\n"
