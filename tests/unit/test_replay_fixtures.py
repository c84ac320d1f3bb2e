"""`invalidator replay` on real wal2json captures (tests/fixtures, made by `make fixtures`).

Every planned node is checked against pymemcache's HashClient over the same servers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.hash import HashClient

from invalidator.commands.cli import main
from invalidator.commands.replay import replay as replay_file
from invalidator.config import load_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RULES = str(FIXTURES / "rules.yaml")
SERVERS = list(load_config(RULES).pools["default"].servers)
APP = HashClient(SERVERS, use_pooling=False)


def replay(capsys: pytest.CaptureFixture[str], *names: str) -> list[dict[str, Any]]:
    code = main(["replay", "--config", RULES, *[str(FIXTURES / n) for n in names]])
    out = capsys.readouterr().out
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["node"] for r in records] == [APP.hasher.get_node(r["key"]) for r in records]
    return records


def keys(records: list[dict[str, Any]]) -> list[str]:
    assert {r["op"] for r in records} <= {"delete"}
    return [r["key"] for r in records]


def test_basic_users(capsys: pytest.CaptureFixture[str]) -> None:
    """Inserts, updates with and without a key change, a delete, a two-row transaction."""
    assert keys(replay(capsys, "basic_users.jsonl")) == [
        "user:1",
        "user_by_email:alice@example.com",
        "user:2",
        "user_by_email:bob@example.com",
        "user:3",
        "user_by_email:carol@example.com",
        "user:1",
        "user_by_email:alice@example.com",  # name changed
        "user:2",
        "user_by_email:robert@example.com",  # email changed: old one unknown (DEFAULT)
        "user:3",  # delete: DEFAULT identity has only id
        "user:1",
        "user_by_email:alice@example.com",
        "user:2",
        "user_by_email:robert@example.com",
    ]


def test_operations_carry_table_pool_and_change_lsn(capsys: pytest.CaptureFixture[str]) -> None:
    """Each record has SPEC's fields; lsn is the change's own position."""
    first = replay(capsys, "basic_users.jsonl")[0]
    line = next(
        json.loads(raw)
        for raw in (FIXTURES / "basic_users.jsonl").read_text().splitlines()
        if '"action":"I"' in raw
    )
    assert first == {
        "op": "delete",
        "key": "user:1",
        "pool": "default",
        "node": APP.hasher.get_node("user:1"),
        "table": "public.users",
        "lsn": line["lsn"],
    }


def test_minimal_capture_without_optional_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """Without lsn/xid/timestamp the same keys are planned and lsn is null."""
    full = replay(capsys, "basic_users.jsonl")
    minimal = replay(capsys, "basic_users.minimal.jsonl")
    assert keys(minimal) == keys(full)
    assert {r["lsn"] for r in minimal} == {None}


def test_format_version_1_plans_the_same_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """A format-version 1 capture of the same scenario gives the same operations."""
    assert keys(replay(capsys, "basic_users.v1.json")) == keys(replay(capsys, "basic_users.jsonl"))


def test_primary_key_change_invalidates_old_and_new_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """UPDATE users SET id = 10 WHERE id = 1 deletes user:1 and user:10."""
    assert keys(replay(capsys, "pk_change.jsonl")) == [
        "user:1",
        "user:10",
        "user_by_email:alice@example.com",
    ]


def test_replica_identities(capsys: pytest.CaptureFixture[str]) -> None:
    """DEFAULT knows the old pk, FULL every old column, USING INDEX the index columns;
    NOTHING sends no UPDATE/DELETE at all (only its inserts are planned)."""
    assert keys(replay(capsys, "replica_identity.jsonl")) == [
        "ri_default:1",
        "ri_default_code:c1",
        "ri_default:2",
        "ri_default_code:c2",
        "ri_default:1",
        "ri_default_code:c1",
        "ri_default:1",
        "ri_default_code:c1-new",  # old code unknown
        "ri_default:1",
        "ri_full:1",
        "ri_full_code:c1",
        "ri_full:2",
        "ri_full_code:c2",
        "ri_full:1",
        "ri_full_code:c1",
        "ri_full:1",
        "ri_full_code:c1",
        "ri_full_code:c1-new",
        "ri_full:1",
        "ri_full_code:c1-new",
        "ri_index_code:c1",
        "ri_index_code:c2",
        "ri_index_code:c1",
        "ri_index_code:c1",
        "ri_index_code:c1-new",
        "ri_index_code:c1-new",
        "ri_nothing:1",
        "ri_nothing:2",
    ]


def test_table_without_primary_key_plans_only_inserts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """wal2json drops UPDATE/DELETE of a table without replica identity."""
    assert keys(replay(capsys, "no_pk.jsonl")) == ["event:1", "event:2"]


def test_toast_unchanged_column_absent_and_spaces_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 1 MB TOAST row decodes; titles with spaces make invalid keys that are not sent."""
    assert keys(replay(capsys, "toast.jsonl")) == ["doc:1", "doc:1", "doc:1"]


def test_truncate_flushes_pools_of_rules_that_ask_and_reports_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """orders has truncate in `on` (default policy: flush its pool's nodes); users does not,
    so its truncate is only reported."""
    code = main(["replay", "--config", RULES, str(FIXTURES / "truncate.jsonl")])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 0
    deletes = [r["key"] for r in records if r["op"] == "delete"]
    flushes = [(r["node"], r["table"]) for r in records if r["op"] == "flush"]
    assert deletes == [
        "user:1",
        "user_by_email:alice@example.com",
        "user:2",
        "user_by_email:bob@example.com",
        "order:1",
        "order:2",
    ]
    assert flushes == [(node, "public.orders") for node in APP.clients]
    assert "table truncated" in captured.err and "public.users" in captured.err


def test_logical_messages_are_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    """Only the row change in the message scenario is planned."""
    assert keys(replay(capsys, "messages.jsonl")) == ["user:1", "user_by_email:alice@example.com"]


def test_partitions_report_their_own_names(capsys: pytest.CaptureFixture[str]) -> None:
    """Changes arrive under the partition; a cross-partition move is a delete plus insert."""
    assert keys(replay(capsys, "partitions.jsonl")) == [
        "m:eu:1",
        "m:us:2",
        "m:eu:3",
        "m:eu:1",
        "m:us:2",
        "m:eu:3",
        "m:us:3",
    ]


def test_names_with_dots_spaces_and_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    """Schema "my.schema", table "odd table", columns "e-mail" and "na me" all match."""
    records = replay(capsys, "odd_names.jsonl")
    assert keys(records) == [
        "odd:1",
        "odd_mail:odd@example.com",
        "odd:1",
        "odd_mail:odd2@example.com",
        "odd:1",
        "q:1:first",
        "q:1:second",
    ]
    assert {r["table"] for r in records} == {"my.schema.odd table", 'public.quo"ted'}


def test_typed_values_render_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    """bigint extremes, numeric scale (1.10, 1.100), booleans and uuids render as the app does."""
    assert keys(replay(capsys, "types.jsonl")) == [
        "typed:9223372036854775807",
        "typed_n:1.10",
        "typed_b:True",
        "typed_u:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "typed:2",
        "typed_n:-0.5",
        "typed_b:False",
        "typed_u:00000000-0000-0000-0000-000000000000",
        "typed:3",
        "typed_u:ffffffff-ffff-ffff-ffff-ffffffffffff",
        "typed:-9223372036854775808",
        "typed_n:1E-20",
        "typed_b:True",
        "typed:2",
        "typed_n:1.100",
        "typed_b:False",
        "typed_u:00000000-0000-0000-0000-000000000000",
        "typed:3",
    ]


def test_null_key_columns_are_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    """A NULL email builds no key (and no 'user_by_email:None')."""
    assert keys(replay(capsys, "nulls.jsonl")) == [
        "user:1",
        "user:1",
        "user_by_email:late@example.com",
        "user:2",
        "user_by_email:gone@example.com",
        "user:2",
    ]


def test_one_transaction_updating_1000_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """Every row of a 1,000-row UPDATE (sku changed, so when_changed passes) is planned."""
    assert keys(replay(capsys, "bulk.jsonl")) == [f"item:{i}" for i in range(1, 1001)]


def test_skipped_keys_are_logged_with_rule_and_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each unbuildable key is a JSON log line naming the rule, table, template and reason."""
    monkeypatch.setenv("INVALIDATOR_LOG_FORMAT", "json")
    assert main(["replay", "--config", RULES, str(FIXTURES / "nulls.jsonl")]) == 0
    logs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    skipped = [entry for entry in logs if entry["event"] == "key not built"]
    assert [(s["rule"], s["table"], s["template"], s["reason"]) for s in skipped] == [
        (0, "public.users", "user_by_email:{email}", "column email is null in the new row"),
        (0, "public.users", "user_by_email:{email}", "column email is absent in the old row"),
        (0, "public.users", "user_by_email:{email}", "column email is absent in the old row"),
        (0, "public.users", "user_by_email:{email}", "column email is null in the new row"),
    ]


class _Log:
    """Collects what replay logs (the skipped keys), as (event, fields) pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = error = warning


def planned(name: str) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]], int]:
    """Operations printed, keys skipped (logged) and changes read for one capture."""
    out = io.StringIO()
    log = _Log()
    summary = replay_file(load_config(RULES), [str(FIXTURES / name)], apply=False, out=out, log=log)
    return [json.loads(line) for line in out.getvalue().splitlines()], log.lines, summary.changes


PGOUTPUT_SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.pgoutput"))


def test_every_wal2json_scenario_was_captured_with_pgoutput_too() -> None:
    """`make fixtures` writes a pgoutput capture beside each scenario's wal2json one."""
    wal2json = sorted(p.stem for p in FIXTURES.glob("*.jsonl") if "." not in p.stem)
    assert wal2json == PGOUTPUT_SCENARIOS
    assert len(wal2json) >= 13


@pytest.mark.parametrize("scenario", PGOUTPUT_SCENARIOS)
def test_pgoutput_capture_plans_exactly_what_the_wal2json_capture_plans(scenario: str) -> None:
    """Same changes through both plugins: the same operations (keys, nodes, values, tables,
    change positions), the same keys reported as unbuildable, the same change count."""
    wal2json_ops, wal2json_skips, wal2json_changes = planned(f"{scenario}.jsonl")
    pgoutput_ops, pgoutput_skips, pgoutput_changes = planned(f"{scenario}.pgoutput")
    assert pgoutput_ops == wal2json_ops
    assert pgoutput_skips == wal2json_skips
    assert pgoutput_changes == wal2json_changes


def test_the_pgoutput_comparison_covers_every_kind_of_operation_and_skip() -> None:
    """The scenarios together plan deletes and report absent and null keys (so the
    comparison above is not vacuous)."""
    ops = [op for s in PGOUTPUT_SCENARIOS for op in planned(f"{s}.pgoutput")[0]]
    skips = [f["reason"] for s in PGOUTPUT_SCENARIOS for _, f in planned(f"{s}.pgoutput")[1]]
    assert len(ops) > 1000
    assert any("absent" in r for r in skips) and any("null" in r for r in skips)


def test_a_malformed_pgoutput_capture_line_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line that is not '<LSN> <hex>' (or does not decode) is FILE:LINE: reason, exit 2."""
    good = (FIXTURES / "basic_users.pgoutput").read_text().splitlines()
    bad = tmp_path / "bad.pgoutput"
    bad.write_text("\n".join([*good[:3], good[3][:-1], *good[4:]]) + "\n")
    assert main(["replay", "--config", RULES, str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"{bad}:4: ")
