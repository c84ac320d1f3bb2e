"""Shared fixtures: real PostgreSQL (wal2json) and memcached processes, started lazily.

Nothing starts unless a test asks for a fixture below, so ``pytest tests/unit`` never
launches a server. A service that cannot start fails the test (never skips it).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.hash import HashClient

from tests.cache_aside import app_client
from tests.services import (
    MemcachedPool,
    PgDatabase,
    PostgresCluster,
    PostgresStandby,
    ServiceError,
    exit_on_sigterm,
)

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (CI cancel, timeout wrapper) then unwinds like Ctrl-C: fixtures stop servers.
    exit_on_sigterm()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@contextlib.contextmanager
def running_postgres(
    cluster: PostgresCluster | None = None, **options: Any
) -> Iterator[PostgresCluster]:
    """A started PostgresCluster (``cluster``, or one built with ``options`` as its
    constructor takes them; a PostgresStandby too), stopped on exit; a cluster that cannot
    start fails the test with the reason, never skips it."""
    cluster = cluster if cluster is not None else PostgresCluster(**options)
    try:
        cluster.start()
    except ServiceError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A running PostgreSQL cluster (wal_level=logical, wal2json checked) for the session."""
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def pg_standby(pg_cluster: PostgresCluster) -> Iterator[PostgresStandby]:
    """A physical hot standby of the session cluster (its databases, created before or
    after, stream to it). No apply delay until a test sets one (``set_apply_delay``)."""
    with running_postgres(PostgresStandby(pg_cluster)) as standby:
        assert isinstance(standby, PostgresStandby)
        yield standby


@pytest.fixture
def pg_db(pg_cluster: PostgresCluster) -> Iterator[PgDatabase]:
    """A fresh, empty database (``.name``, ``.dsn``, ``.execute()``), dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        db = pg_cluster.create_database(name)
    except Exception as err:
        pytest.fail(f"could not create database {name}: {err}", pytrace=False)
    try:
        yield db
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
def memcached_pool() -> Iterator[MemcachedPool]:
    """Three memcached nodes for the session (use the ``memcached`` fixture in tests)."""
    pool = MemcachedPool(3)
    try:
        pool.start()
    except ServiceError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def memcached(memcached_pool: MemcachedPool) -> MemcachedPool:
    """The session's memcached pool, every node running, resumed and flushed."""
    try:
        memcached_pool.reset()
    except ServiceError as err:
        pytest.fail(str(err), pytrace=False)
    return memcached_pool


@pytest.fixture
def app(memcached: MemcachedPool) -> Iterator[HashClient]:
    """The cache-aside app's own client over the pool (replies awaited, with timeouts)."""
    client = app_client(memcached.servers)
    yield client
    client.close()


@pytest.fixture
def users_db(pg_db: PgDatabase) -> PgDatabase:
    """``users`` (id, email, name) with 500 rows and REPLICA IDENTITY FULL, so the old
    email is in the stream."""
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text)")
    pg_db.execute("ALTER TABLE users REPLICA IDENTITY FULL")
    pg_db.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.com', 'user ' || g"
        " FROM generate_series(1, 500) g"
    )
    return pg_db
