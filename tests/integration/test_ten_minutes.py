"""README's "Your own database in ten minutes", followed literally: every command of its
transcript runs, in order, on a fresh database with two tables, and every output line
must be the one the README shows (addresses normalised to the README's). The README and
what `init` → `check` → `setup` → `run` do cannot drift apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services import MemcachedPool, PgDatabase, PostgresCluster, clean_env, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
SETTLE = 15.0  # how long a read after `run` may take to show the README's output
READS = ("curl", "python3")  # commands without side effects: repeated until they match


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def readme_steps() -> list[Step]:
    """The ``$ command`` lines (and the output lines under each) of every console block
    between the README's ten-minutes markers."""
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- ten-minutes -->", 1)[1].split("<!-- /ten-minutes -->", 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            else:
                steps[-1].expected.append(line)
    return steps


@dataclass
class Walkthrough:
    """The shell the README's commands run in, and how its addresses map to the README's."""

    cwd: Path
    env: dict[str, str]
    replacements: list[tuple[str, str]]
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def normalise(self, text: str) -> list[str]:
        for actual, shown in self.replacements:
            text = text.replace(actual, shown)
        return text.splitlines()

    def run(self, step: Step, settle: float) -> list[str]:
        """Run ``step`` with bash; output lines, normalised. A command ending in ``&``
        starts in the background (its output is its own redirection's business)."""
        if step.command.endswith("&"):
            self.background.append(
                subprocess.Popen(
                    ["bash", "-c", "exec " + step.command[:-1]],
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            return []
        deadline = time.monotonic() + settle
        while True:
            result = subprocess.run(
                ["bash", "-o", "pipefail", "-c", step.command],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            lines = self.normalise(result.stdout + result.stderr)
            if lines == step.expected or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)


@pytest.fixture
def walkthrough(
    tmp_path: Path, pg_cluster: PostgresCluster, pg_db: PgDatabase, memcached: MemcachedPool
) -> Iterator[Walkthrough]:
    (tmp_path / "sql").symlink_to(REPO_ROOT / "sql")
    port = free_port()
    admin = pg_db.dsn
    host = f"{pg_cluster.host}:{pg_cluster.port}"
    invalidator = admin.replace("postgres@", "invalidator:s3cret@", 1)
    bindir = str(Path(pg_cluster.bin("psql")).parent)
    path = os.pathsep.join([str(Path(sys.executable).parent), bindir, os.environ["PATH"]])
    env = clean_env(
        PATH=path,
        ADMIN_DSN=admin,
        INVALIDATOR_DSN=invalidator,
        MEMCACHED_SERVERS=",".join(memcached.servers),
        INVALIDATOR_HTTP_LISTEN=f"127.0.0.1:{port}",
        PYTHONUNBUFFERED="1",
    )
    shown = ["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"]
    replacements = [
        (pg_db.name, "app"),
        (host, "127.0.0.1:5432"),
        (f"127.0.0.1:{port}", "127.0.0.1:9464"),
        *zip(memcached.servers, shown, strict=True),
    ]
    walk = Walkthrough(tmp_path, env, replacements)
    try:
        yield walk
    finally:
        for proc in walk.background:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pg_db.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            f" WHERE database = '{pg_db.name}' AND NOT active"
        )


def test_the_readme_ten_minutes_transcript_is_what_the_commands_print(
    walkthrough: Walkthrough,
) -> None:
    """Each README command, run in order, prints exactly the lines the README shows."""
    steps = readme_steps()
    commands = [step.command.split()[0] for step in steps]
    assert "invalidator" in commands and commands.count("invalidator") >= 4
    started = False
    for step in steps:
        started = started or step.command.startswith("invalidator run")

        reads = started and step.command.startswith(READS)
        lines = walkthrough.run(step, SETTLE if reads else 0.0)
        assert lines == step.expected, (
            f"README command: $ {step.command}\n"
            "what it printed (normalised; paste into README.md if the change is intended):\n"
            + "\n".join(lines)
        )
