"""`invalidator warm` fills the cache the way the app would, from the `warm:` queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pymemcache.client.hash import HashClient

from tests.daemon_process import write_config
from tests.services import MemcachedPool, PgDatabase


def run_warm(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invalidator", "warm", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_warm_writes_every_row_as_the_app_serialises_it(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """5,000 users warmed: each key holds json.dumps of the chosen columns, with its TTL."""
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, email text, name text)")
    pg_db.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.com', 'Zoë ' || g"
        " FROM generate_series(1, 5000) g"
    )
    config = write_config(
        tmp_path / "c.yaml",
        dsn=pg_db.dsn,
        slot="w",
        servers=memcached.servers,
        rules=[{"table": "users", "keys": ["user:{id}"]}],
        port=1,
    )
    data = json.loads(config.read_text())
    data["warm"] = [
        {
            "name": "users",
            "query": "SELECT id, email, name FROM users",
            "key": "user:{id}",
            "value": {"json": ["id", "email", "name"]},
            "ttl": 300,
        }
    ]
    config.write_text(json.dumps(data))

    result = run_warm(config)

    assert result.returncode == 0, result.stderr
    assert "users: 5,000 rows, 5,000 keys written, 0 skipped, 0 failed" in result.stdout
    for i in (1, 2500, 5000):
        expected = json.dumps({"id": i, "email": f"u{i}@example.com", "name": f"Zoë {i}"})
        assert app.get(f"user:{i}") == expected.encode()


def test_warm_without_entries_says_so(
    tmp_path: Path, pg_db: PgDatabase, memcached: MemcachedPool
) -> None:
    """No `warm:` section: a clear message and exit 2."""
    config = write_config(
        tmp_path / "c.yaml",
        dsn=pg_db.dsn,
        slot="w",
        servers=memcached.servers,
        rules=[{"table": "users", "keys": ["user:{id}"]}],
        port=1,
    )
    result = run_warm(config)
    assert (result.returncode, result.stderr) == (
        2,
        "warm: no `warm:` entries in the configuration\n",
    )
