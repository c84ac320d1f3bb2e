"""The command line: exit codes and one-line errors, as SPEC promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RULES = str(FIXTURES / "rules.yaml")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invalidator", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_malformed_fixture_line_exits_2_with_file_and_line(tmp_path: Path) -> None:
    """A broken line: `FILE:LINE: reason` on stderr, exit 2, no traceback."""
    lines = (FIXTURES / "basic_users.jsonl").read_text().splitlines()
    lines[3] = lines[3][:40]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    result = run("replay", "--config", RULES, str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"{bad}:4: invalid JSON:")
    assert "Traceback" not in result.stderr


def test_malformed_rules_file_exits_2_with_one_line(tmp_path: Path) -> None:
    """An unknown rule field: one line naming file, rule and field; exit 2."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "pools: {default: {servers: ['a:1']}}\n"
        "rules:\n  - table: users\n    keys: ['user:{id}']\n    acton: delete\n"
    )
    result = run("replay", "--config", str(config), str(FIXTURES / "basic_users.jsonl"))
    assert (result.returncode, result.stderr) == (
        2,
        f"{config}: rules[0] (table public.users): acton: unknown field (did you mean 'action'?)\n",
    )


def test_replay_reads_stdin(tmp_path: Path) -> None:
    """`-` reads wal2json lines from standard input."""
    text = (FIXTURES / "pk_change.jsonl").read_text()
    result = run("replay", "--config", RULES, "-", stdin=text)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 3


def test_check_offline_accepts_the_fixture_rules() -> None:
    """check --offline on a valid config exits 0 with a summary."""
    result = run("check", "--offline", "--config", RULES)
    assert result.returncode == 0, result.stderr
    assert "14 rules on 14 tables" in result.stdout


def test_check_offline_on_a_broken_config_exits_2(tmp_path: Path) -> None:
    """check --offline exits 2 for an unusable config."""
    config = tmp_path / "c.yaml"
    config.write_text("rules: []\n")
    result = run("check", "--offline", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{config}: ")


def test_dsn_password_never_printed_on_config_errors(tmp_path: Path) -> None:
    """A config error next to a DSN does not echo the password."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "source: {dsn: 'postgresql://u:hunter2@db/app', slot: 'Bad-Slot'}\n"
        "pools: {default: {servers: ['a:1']}}\nrules: [{table: t, keys: [k]}]\n"
    )
    result = run("check", "--offline", "--config", str(config))
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout


def test_check_json_on_an_unusable_config_exits_2_with_every_error(tmp_path: Path) -> None:
    """`check --format json` keeps CI's one document even when the file cannot be used."""
    import json

    config = tmp_path / "c.yaml"
    config.write_text("pools: {default: {servers: 'a:1,b:x'}}\nrules: [{table: t, kyes: [k]}]\n")
    result = run("check", "--offline", "--format", "json", "--config", str(config))
    assert result.returncode == 2
    assert json.loads(result.stdout) == {
        "config": str(config),
        "exit_code": 2,
        "config_errors": [
            f"{config}: pools.default.servers[1]: 'b:x': bad port 'x' (a number, 1-65535)",
            f"{config}: rules[0] (table public.t): kyes: unknown field (did you mean 'keys'?)",
        ],
    }


def test_init_without_a_database_says_how_to_give_one() -> None:
    """No --dsn and no INVALIDATOR_DSN: exit 2 and the two ways to name the database."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVALIDATOR_", "PG"))}
    result = subprocess.run(
        [sys.executable, "-m", "invalidator", "init", "--table", "users"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert (result.returncode, result.stderr) == (
        2,
        "init: give --dsn DSN or set INVALIDATOR_DSN\n",
    )
