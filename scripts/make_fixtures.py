"""Capture real wal2json and pgoutput output for the test fixtures.

Usage: python scripts/make_fixtures.py OUTDIR      (``make fixtures`` writes tests/fixtures)

Starts a throwaway PostgreSQL cluster (tests/services.py), and for every scenario: creates a
fresh database, runs the setup SQL (not captured), creates a pgoutput slot (with its
publications) and a wal2json logical slot, runs the scenario SQL and reads the wal2json slot
with pg_recvlogical, the pgoutput slot with pg_logical_slot_peek_binary_changes. Writes
OUTDIR/<scenario>.jsonl (exactly what pg_recvlogical wrote), OUTDIR/<scenario>.pgoutput
(the same changes in the pgoutput capture format `invalidator replay` reads),
OUTDIR/<scenario>.sql (setup + scenario, for readers) and OUTDIR/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from tests.services import (  # noqa: E402
    Decoding,
    PostgresCluster,
    ServiceError,
    capture_wal2json_many,
    exit_on_sigterm,
)

#: Options of the main capture of every scenario (all accepted by wal2json 2.5).
FULL_OPTIONS = {
    "format-version": "2",
    "include-lsn": "1",
    "include-xids": "1",
    "include-timestamp": "1",
    "include-pk": "1",
    "include-type-oids": "1",
}
#: basic_users.minimal.jsonl: no optional field at all.
MINIMAL_OPTIONS = {"format-version": "2"}
#: basic_users.v1.json: one JSON document per transaction.
V1_OPTIONS = {
    "format-version": "1",
    "include-lsn": "1",
    "include-xids": "1",
    "include-timestamp": "1",
}

MAIN = "main"

#: The pgoutput captures: protocol 1 with logical messages, through two publications:
#: ``fx_pub`` publishes every operation of the tables that have a replica identity,
#: ``fx_pub_insert`` only INSERT and TRUNCATE of those without one (a publication that
#: publishes their UPDATE/DELETE makes those statements fail). Tables are published
#: directly, so partitions' changes name the partition, as wal2json's do.
PGOUTPUT_OPTIONS = {
    "proto_version": "1",
    "publication_names": "fx_pub,fx_pub_insert",
    "messages": "true",
}


def create_publications(cluster: PostgresCluster, dbname: str) -> None:
    tables = cluster.execute(
        "SELECT format('%I.%I', n.nspname, c.relname),"
        " c.relreplident = 'f' OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i"
        "   WHERE i.indrelid = c.oid AND i.indisprimary))"
        " OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i"
        "   WHERE i.indrelid = c.oid AND i.indisreplident))"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        dbname=dbname,
    )
    full = [name for name, identity in tables if identity]
    insert_only = [name for name, identity in tables if not identity]
    for publication, names, publish in (
        ("fx_pub", full, "insert, update, delete, truncate"),
        ("fx_pub_insert", insert_only, "insert, truncate"),
    ):
        listed = f" FOR TABLE {', '.join(names)}" if names else ""
        cluster.execute(
            f"CREATE PUBLICATION {publication}{listed} WITH (publish = '{publish}')",
            dbname=dbname,
        )


def read_pgoutput(cluster: PostgresCluster, dbname: str, slot: str, path: Path) -> list[str]:
    """Every message of the slot so far, in the capture format; writes ``path``."""
    options = ", ".join(f"'{k}', '{v}'" for k, v in PGOUTPUT_OPTIONS.items())
    rows = cluster.execute(
        "SELECT lsn::text, encode(data, 'hex') FROM"
        f" pg_logical_slot_peek_binary_changes(%s, NULL, NULL, {options})",
        [slot],
        dbname=dbname,
    )
    lines = [f"{lsn} {data}" for lsn, data in rows]
    header = "# pgoutput capture: " + _options_text(PGOUTPUT_OPTIONS)
    path.write_text("\n".join([header, *lines]) + "\n")
    return lines


def summarize_pgoutput(lines: list[str]) -> str:
    kinds: Counter[str] = Counter()
    for line in lines:
        kinds[chr(int(line.split(" ", 1)[1][:2], 16))] += 1
    return ", ".join(f"{kind}: {count}" for kind, count in kinds.items())


@dataclass(frozen=True)
class Step:
    """SQL sent as one query on a named autocommit connection (one transaction unless the
    text itself opens one with BEGIN that a later step commits)."""

    sql: str
    conn: str = MAIN


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    setup: list[str]
    steps: list[Step]
    notes: list[str] = field(default_factory=list)


def steps(*sqls: str) -> list[Step]:
    return [Step(s) for s in sqls]


USERS = "CREATE TABLE users (id int PRIMARY KEY, email text, name text)"


def _multi_tx_steps() -> list[Step]:
    out: list[Step] = []
    for i in range(10):
        a, b = 100 + i, 200 + i
        out += [
            Step(f"BEGIN; INSERT INTO users VALUES ({a}, 'a{i}@example.com', 'A{i}')", "A"),
            Step(f"BEGIN; INSERT INTO users VALUES ({b}, 'b{i}@example.com', 'B{i}')", "B"),
            Step(f"UPDATE users SET name = 'A{i} (edited)' WHERE id = {a}", "A"),
        ]
        # Even rounds: B (the younger xid) commits first.
        order = ["B", "A"] if i % 2 == 0 else ["A", "B"]
        out += [Step("COMMIT", conn) for conn in order]
    return out


def _per_table(table: str) -> list[Step]:
    return steps(
        f"INSERT INTO {table} VALUES (1, 'c1', 'one'), (2, 'c2', 'two')",
        f"UPDATE {table} SET name = 'uno' WHERE id = 1",
        f"UPDATE {table} SET code = 'c1-new' WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 1",
    )


SCENARIOS: list[Scenario] = [
    Scenario(
        "basic_users",
        "Insert three users in one transaction, update a non-key column, update the email "
        "(a column used in cache keys such as user_by_email:{email}), delete, then one "
        "transaction updating two rows.",
        [USERS],
        steps(
            "BEGIN;"
            " INSERT INTO users VALUES (1, 'alice@example.com', 'Alice');"
            " INSERT INTO users VALUES (2, 'bob@example.com', 'Bob');"
            " INSERT INTO users VALUES (3, 'carol@example.com', 'Carol');"
            " COMMIT",
            "UPDATE users SET name = 'Alice Smith' WHERE id = 1",
            "UPDATE users SET email = 'robert@example.com' WHERE id = 2",
            "DELETE FROM users WHERE id = 3",
            "BEGIN;"
            " UPDATE users SET name = 'Alice A.' WHERE id = 1;"
            " UPDATE users SET name = 'Robert' WHERE id = 2;"
            " COMMIT",
        ),
    ),
    Scenario(
        "pk_change",
        "An UPDATE that changes the primary key (the row existed before the capture).",
        [USERS, "INSERT INTO users VALUES (1, 'alice@example.com', 'Alice')"],
        steps("UPDATE users SET id = 10 WHERE id = 1"),
    ),
    Scenario(
        "replica_identity",
        "The same insert / update name / update code / delete on four tables that differ only "
        "in REPLICA IDENTITY: DEFAULT (primary key id), FULL, USING INDEX (unique code), NOTHING.",
        [
            "CREATE TABLE ri_default (id int PRIMARY KEY, code text NOT NULL, name text)",
            "CREATE TABLE ri_full (id int PRIMARY KEY, code text NOT NULL, name text)",
            "ALTER TABLE ri_full REPLICA IDENTITY FULL",
            "CREATE TABLE ri_index (id int PRIMARY KEY, code text NOT NULL, name text)",
            "CREATE UNIQUE INDEX ri_index_code_key ON ri_index (code)",
            "ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_code_key",
            "CREATE TABLE ri_nothing (id int PRIMARY KEY, code text NOT NULL, name text)",
            "ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING",
        ],
        [
            *_per_table("ri_default"),
            *_per_table("ri_full"),
            *_per_table("ri_index"),
            *_per_table("ri_nothing"),
        ],
    ),
    Scenario(
        "no_pk",
        "A table without primary key (replica identity DEFAULT and no key): insert, update, "
        "delete.",
        ["CREATE TABLE events (a int, b text)"],
        steps(
            "INSERT INTO events VALUES (1, 'x'), (2, 'y')",
            "UPDATE events SET b = 'z' WHERE a = 1",
            "DELETE FROM events WHERE a = 2",
        ),
    ),
    Scenario(
        "toast",
        "A 1 MiB body stored out of line (STORAGE EXTERNAL: never compressed), then an update "
        "of title only (the unchanged TOASTed body is absent from the new row), then an "
        "update of body (to a 128 KiB value, to keep the fixture small).",
        [
            "CREATE TABLE docs (id int PRIMARY KEY, body text, title text)",
            "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
        ],
        steps(
            "INSERT INTO docs SELECT 1, string_agg(md5(g::text), '' ORDER BY g), 'first title'"
            " FROM generate_series(1, 32768) AS g",
            "UPDATE docs SET title = 'second title' WHERE id = 1",
            "UPDATE docs SET body = (SELECT string_agg(md5((-g)::text), '' ORDER BY g)"
            " FROM generate_series(1, 4096) AS g) WHERE id = 1",
        ),
    ),
    Scenario(
        "truncate",
        "Rows in two tables, then one TRUNCATE naming both.",
        [
            USERS,
            "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users (id),"
            " total numeric(10, 2))",
        ],
        steps(
            "INSERT INTO users VALUES (1, 'alice@example.com', 'Alice'),"
            " (2, 'bob@example.com', 'Bob')",
            "INSERT INTO orders VALUES (1, 1, 9.99), (2, 2, 20.00)",
            "TRUNCATE users, orders",
        ),
    ),
    Scenario(
        "messages",
        "A transactional logical message next to an insert, then a non-transactional one.",
        [USERS],
        steps(
            "BEGIN;"
            " INSERT INTO users VALUES (1, 'alice@example.com', 'Alice');"
            " SELECT pg_logical_emit_message(true, 'inval', 'payload-tx');"
            " COMMIT",
            "SELECT pg_logical_emit_message(false, 'inval', 'payload-nontx')",
        ),
    ),
    Scenario(
        "partitions",
        "A list-partitioned table: inserts into both partitions, an update, a delete, and "
        "(extra) an update moving a row to the other partition.",
        [
            "CREATE TABLE measurements (id int, region text, v int, PRIMARY KEY (id, region))"
            " PARTITION BY LIST (region)",
            "CREATE TABLE measurements_eu PARTITION OF measurements FOR VALUES IN ('eu')",
            "CREATE TABLE measurements_us PARTITION OF measurements FOR VALUES IN ('us')",
        ],
        steps(
            "INSERT INTO measurements VALUES (1, 'eu', 10), (2, 'us', 20), (3, 'eu', 30)",
            "UPDATE measurements SET v = 11 WHERE id = 1 AND region = 'eu'",
            "DELETE FROM measurements WHERE id = 2 AND region = 'us'",
            "UPDATE measurements SET region = 'us' WHERE id = 3 AND region = 'eu'",
        ),
    ),
    Scenario(
        "odd_names",
        'Identifiers that need quoting: schema "my.schema", table "odd table" with columns '
        '"Id" and "e-mail"; table public."quo""ted" with column "na me".',
        [
            'CREATE SCHEMA "my.schema"',
            'CREATE TABLE "my.schema"."odd table" ("Id" int PRIMARY KEY, "e-mail" text)',
            'CREATE TABLE public."quo""ted" (id int PRIMARY KEY, "na me" text)',
        ],
        steps(
            """INSERT INTO "my.schema"."odd table" VALUES (1, 'odd@example.com')""",
            """UPDATE "my.schema"."odd table" SET "e-mail" = 'odd2@example.com' WHERE "Id" = 1""",
            """DELETE FROM "my.schema"."odd table" WHERE "Id" = 1""",
            """INSERT INTO public."quo""ted" VALUES (1, 'first')""",
            """UPDATE public."quo""ted" SET "na me" = 'second' WHERE id = 1""",
            """DELETE FROM public."quo""ted" WHERE id = 1""",
        ),
    ),
    Scenario(
        "types",
        "One column of many types: bigint limits, numeric with trailing zeros and 39 digits, "
        "NaN/Infinity (float and numeric), bool, json/jsonb, arrays, bytea, timestamptz, uuid, "
        "NULL; an update and a delete.",
        [
            "CREATE TABLE typed (id bigint PRIMARY KEY, n numeric, big numeric,"
            " f double precision, b bool, j json, jb jsonb, arr int[], tarr text[], by bytea,"
            " ts timestamptz, u uuid, nul text)",
        ],
        steps(
            "INSERT INTO typed VALUES"
            " (9223372036854775807, 1.10, 123456789012345678901234567890.123456789, 'NaN', true,"
            """ '{"a":[1,2]}', '{"k": "v", "n": 1.50}', '{1,2,3}',"""
            " ARRAY['a b', 'c,d', NULL, 'q\"uote', 'back\\slash', E'tab\\tnew\\nline'],"
            " '\\xdeadbeef', '2024-01-02 03:04:05.123456+00',"
            " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL),"
            " (2, -0.5, '-Infinity', 'Infinity', false, '[]', '{}', '{}', '{}', '\\x',"
            " '1970-01-01 00:00:00+00', '00000000-0000-0000-0000-000000000000', NULL),"
            " (3, 'NaN', 12345678901234567890, '-Infinity', NULL, 'null', '\"str\"',"
            " '{-1,NULL}', ARRAY['ünïcode ✓'], '\\x00ff', 'infinity',"
            " 'ffffffff-ffff-ffff-ffff-ffffffffffff', NULL),"
            " (-9223372036854775808, 1e-20, -0.000, 0.1, true, '1.0', '1.0', NULL, NULL, NULL,"
            " '2024-06-30 23:59:59.999999+00', NULL, NULL)",
            """UPDATE typed SET f = 2.5, jb = jb || '{"x": 1}', n = 1.100 WHERE id = 2""",
            "DELETE FROM typed WHERE id = 3",
        ),
    ),
    Scenario(
        "nulls",
        "A user inserted with a NULL email that later gets one, and a user whose email is set "
        "to NULL.",
        [USERS],
        steps(
            "INSERT INTO users VALUES (1, NULL, 'No Mail')",
            "UPDATE users SET email = 'late@example.com' WHERE id = 1",
            "INSERT INTO users VALUES (2, 'gone@example.com', 'Gone')",
            "UPDATE users SET email = NULL WHERE id = 2",
        ),
    ),
    Scenario(
        "bulk",
        "One transaction updating 1,000 rows (the rows were inserted before the capture).",
        [
            "CREATE TABLE items (id int PRIMARY KEY, sku text)",
            "INSERT INTO items SELECT g, 's' || g FROM generate_series(1, 1000) AS g",
        ],
        steps("UPDATE items SET sku = sku || 'x'"),
    ),
    Scenario(
        "multi_tx",
        "20 small transactions on users from two connections A and B, interleaved: A starts "
        "first (older xid) but in even rounds B commits first, so xids are not monotonic in "
        "the stream (which is in commit order).",
        [USERS],
        _multi_tx_steps(),
    ),
]


OBSERVATIONS = [
    "- `B` and `C` carry the same `lsn` (the commit record) and `nextlsn` (its end); with",
    "  `include-xids`/`include-timestamp` every record of a transaction repeats the xid and",
    "  the commit timestamp. Records are in commit order, so xids are not monotonic",
    "  (`multi_tx`).",
    "- UPDATE/DELETE `identity` holds the replica identity: the primary key by default (its",
    "  *old* value when the key changed, `pk_change`; otherwise the unchanged value), the",
    "  whole old row with REPLICA IDENTITY FULL, the index columns with USING INDEX. Old",
    "  values of other columns (e.g. a changed email with the default identity) are not in",
    "  the stream. `pk` (include-pk) lists the primary key columns, without values; `[]` when",
    "  there is none.",
    "- Tables with REPLICA IDENTITY NOTHING, or DEFAULT without a primary key: INSERTs",
    "  appear, UPDATEs and DELETEs are dropped (their `B`/`C` pair remains, empty) with a",
    "  server WARNING on pg_recvlogical's stderr (`no tuple identifier for UPDATE ...`).",
    "- An UPDATE that leaves a TOASTed value unchanged omits that column from `columns`",
    "  altogether (`toast`).",
    "- `T`: one record per table, same lsn, no columns. `M`: `transactional`, `prefix`,",
    '  `content`; a non-transactional message comes outside any B/C with `"xid":null` and',
    '  `"timestamp":null`.',
    "- Partitioned tables: records name the partition (`measurements_eu`), never the",
    "  parent; an UPDATE moving a row across partitions is a `D` plus an `I`.",
    '- Names are unquoted, as stored (`"schema":"my.schema"`, `"table":"quo\\"ted"`).',
    "- Values: integers and numeric are bare JSON numbers with all digits (`1.10`, 39-digit",
    "  numerics, 64-bit limits); float/numeric NaN and ±Infinity become `null`; bool is",
    '  true/false; json/jsonb, arrays (`"{1,2,3}"`), timestamptz, uuid are strings in',
    '  PostgreSQL text form; bytea is hex *without* the `\\x` prefix (`"deadbeef"`).',
]


def run_steps(
    cluster: PostgresCluster, dbname: str, scenario_steps: Sequence[Step]
) -> Callable[[psycopg.Connection[tuple[Any, ...]]], None]:
    def run(main: psycopg.Connection[tuple[Any, ...]]) -> None:
        conns: dict[str, psycopg.Connection[tuple[Any, ...]]] = {MAIN: main}
        try:
            for step in scenario_steps:
                if step.conn not in conns:
                    conns[step.conn] = cluster.connect(dbname)
                conns[step.conn].execute(step.sql)
        finally:
            for name, conn in conns.items():
                if name != MAIN:
                    conn.close()

    return run


def _options_text(options: dict[str, str]) -> str:
    return " ".join(f"-o {k}={v}" for k, v in options.items())


def write_sql(path: Path, scenario: Scenario, options: dict[str, str]) -> None:
    out = [
        f"-- Scenario {scenario.name}: {scenario.description}",
        f"-- Captured with: pg_recvlogical --start {_options_text(options)}",
        "",
        "-- setup (not captured)",
        *(s + ";" for s in scenario.setup),
        "",
        "-- the wal2json slot is created here; everything below is captured",
    ]
    for step in scenario.steps:
        prefix = f"/* connection {step.conn} */ " if step.conn != MAIN else ""
        text = step.sql.replace("; ", ";\n  ") if step.sql.startswith("BEGIN;") else step.sql
        out.append(prefix + text + ";")
    path.write_text("\n".join(out) + "\n")


def summarize(lines: list[str]) -> str:
    actions: Counter[str] = Counter()
    for line in lines:
        record = json.loads(line)
        actions[record.get("action", "?")] += 1
    return ", ".join(f"{action}: {count}" for action, count in actions.items())


def _dpkg_version(package: str) -> str:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return proc.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    outdir: Path = args.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    exit_on_sigterm()

    readme_rows: list[str] = []
    warnings: dict[str, list[str]] = {}
    with PostgresCluster() as cluster:
        server_version = str(cluster.execute("SHOW server_version")[0][0])
        for scenario in SCENARIOS:
            print(f"capturing {scenario.name} ...", file=sys.stderr)
            dbname = f"fx_{scenario.name}"
            cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            cluster.create_database(dbname)
            for statement in scenario.setup:
                cluster.execute(statement, dbname=dbname)
            decodings = [
                Decoding(f"fx_{scenario.name}", FULL_OPTIONS, outdir / f"{scenario.name}.jsonl")
            ]
            if scenario.name == "basic_users":
                decodings += [
                    Decoding(
                        "fx_basic_users_minimal",
                        MINIMAL_OPTIONS,
                        outdir / "basic_users.minimal.jsonl",
                    ),
                    Decoding("fx_basic_users_v1", V1_OPTIONS, outdir / "basic_users.v1.json"),
                ]
            create_publications(cluster, dbname)
            pgoutput_slot = f"fx_{scenario.name}_pgoutput"
            cluster.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                [pgoutput_slot],
                dbname=dbname,
            )
            captures = capture_wal2json_many(
                cluster, dbname, [run_steps(cluster, dbname, scenario.steps)], decodings
            )
            write_sql(outdir / f"{scenario.name}.sql", scenario, FULL_OPTIONS)
            for decoding in decodings:
                assert decoding.output is not None
                decoding.output.chmod(0o644)  # pg_recvlogical creates its file 0600
                capture = captures[decoding.slot]
                stderr = [line for line in capture.stderr.splitlines() if line.strip()]
                if stderr:
                    warnings[decoding.output.name] = stderr
                summary = (
                    f"{len(capture.lines)} transaction documents"
                    if decoding.options.get("format-version") == "1"
                    else summarize(capture.lines)
                )
                readme_rows.append(
                    f"| `{decoding.output.name}` | {len(capture.lines)} | {summary} "
                    f"| `{_options_text(dict(decoding.options))}` |"
                )
            pgoutput_path = outdir / f"{scenario.name}.pgoutput"
            pgoutput_lines = read_pgoutput(cluster, dbname, pgoutput_slot, pgoutput_path)
            cluster.drop_replication_slot(pgoutput_slot)
            readme_rows.append(
                f"| `{pgoutput_path.name}` | {len(pgoutput_lines) + 1} "
                f"| {summarize_pgoutput(pgoutput_lines)} | `{_options_text(PGOUTPUT_OPTIONS)}` |"
            )
            cluster.drop_database(dbname)

    descriptions = [f"- **{s.name}** (`{s.name}.sql`): {s.description}" for s in SCENARIOS]
    warning_lines = [
        f"- `{name}`: " + "; ".join(f"`{line}`" for line in lines)
        for name, lines in warnings.items()
    ] or ["- none"]
    readme = "\n".join(
        [
            "# wal2json and pgoutput fixtures",
            "",
            "Real output of the wal2json and pgoutput logical decoding plugins, captured by",
            "`scripts/make_fixtures.py` (`make fixtures`). Do not edit by hand: regenerate.",
            "",
            f"Produced with PostgreSQL {server_version} and wal2json "
            f"{_dpkg_version('postgresql-15-wal2json')} (Debian package).",
            "",
            "For every scenario the script creates a fresh database, runs the setup SQL (not",
            "captured), creates a logical replication slot with plugin `wal2json`, runs the",
            "scenario SQL, then reads the slot with",
            "`pg_recvlogical --start --no-loop --endpos <pg_current_wal_lsn() after the scenario>`",
            "and keeps exactly what it wrote: one JSON document per line. `<scenario>.sql` shows",
            "the setup and the captured statements. LSNs, xids and timestamps change on every",
            "regeneration.",
            "",
            "Every `<scenario>.jsonl` uses format-version 2 with all of",
            f"`{_options_text(FULL_OPTIONS)}`.",
            "`basic_users` is also read through two more slots created at the same point, so the",
            "same transactions appear without any optional field (`basic_users.minimal.jsonl`)",
            "and in format-version 1 (`basic_users.v1.json`: one JSON document per transaction,",
            "one per line).",
            "",
            "`<scenario>.pgoutput` holds the same changes from a `pgoutput` slot created just",
            "before the wal2json slot (after the setup), read with",
            "`pg_logical_slot_peek_binary_changes` and written in the capture format",
            "`invalidator replay` reads: a `#` comment line naming the options, then one",
            "message per line, its LSN, one space, its bytes in hex. Options:",
            f"`{_options_text(PGOUTPUT_OPTIONS)}`; `fx_pub` publishes every operation of the",
            "tables with a replica identity, `fx_pub_insert` only INSERT and TRUNCATE of the",
            "others (no_pk, ri_nothing: a publication of their UPDATE/DELETE makes those",
            "statements fail). `tests/unit/test_replay_fixtures.py` proves that replay plans the",
            "same operations from both captures of every scenario.",
            "",
            "## Scenarios",
            "",
            *descriptions,
            "",
            "## Files",
            "",
            "| file | lines | records | options |",
            "|---|---|---|---|",
            *readme_rows,
            "",
            "## What wal2json 2.5 does here (observed on PostgreSQL 15)",
            "",
            *OBSERVATIONS,
            "",
            "## Messages pg_recvlogical printed on stderr",
            "",
            *warning_lines,
            "",
        ]
    )
    (outdir / "README.md").write_text(readme)
    print(f"wrote {len(readme_rows)} captures to {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ServiceError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
