"""refresh, bump and truncate through the real daemon, judged by the app's HashClient."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymemcache.client.hash import HashClient

from tests.cache_aside import wait_until as wait_for
from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PgDatabase


@pytest.fixture
def products(pg_db: PgDatabase) -> PgDatabase:
    pg_db.execute("CREATE TABLE products (id int PRIMARY KEY, name text, stock int)")
    pg_db.execute("ALTER TABLE products REPLICA IDENTITY FULL")
    pg_db.execute("INSERT INTO products SELECT g, 'Café ' || g, g FROM generate_series(1, 50) g")
    return pg_db


def start(
    tmp_path: Path, db: PgDatabase, memcached: MemcachedPool, rules: list[dict[str, Any]]
) -> DaemonProcess:
    return DaemonProcess.create(
        tmp_path, dsn=db.dsn, slot="actions", servers=memcached.servers, rules=rules
    ).start()


REFRESH = {
    "table": "products",
    "keys": ["product:{id}"],
    "action": "refresh",
    "value": {"json": ["id", "name", "stock"]},
    "ttl": 1800,
}


def test_refresh_writes_what_the_app_itself_would_cache(
    tmp_path: Path, products: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """After an UPDATE the key holds json.dumps of the new row, read back through
    HashClient byte for byte; the app never misses."""
    proc = start(tmp_path, products, memcached, [REFRESH])
    try:
        products.execute("UPDATE products SET name = 'Crème', stock = 7 WHERE id = 3")
        expected = json.dumps({"id": 3, "name": "Crème", "stock": 7}).encode()
        assert wait_for(lambda: app.get("product:3") == expected)
    finally:
        proc.stop()


def test_refresh_never_leaves_an_older_value_than_the_database(
    tmp_path: Path, products: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """300 quick updates of the same rows: the cache ends with each row's last state."""
    proc = start(tmp_path, products, memcached, [REFRESH])
    try:
        with psycopg.connect(products.dsn, autocommit=True) as conn:
            for i in range(300):
                conn.execute("UPDATE products SET stock = %s WHERE id = %s", (i, 1 + i % 5))
        final = {
            row[0]: json.dumps({"id": row[0], "name": row[1], "stock": row[2]}).encode()
            for row in products.execute("SELECT id, name, stock FROM products WHERE id <= 5")
        }
        assert wait_for(lambda: all(app.get(f"product:{i}") == v for i, v in final.items()))
        time.sleep(0.3)
        assert {i: app.get(f"product:{i}") for i in final} == final
    finally:
        proc.stop()


def test_bump_increments_the_generation_once_per_change(
    tmp_path: Path, products: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """A missing counter is created; 25 changes in 25 transactions → 25."""
    proc = start(
        tmp_path,
        products,
        memcached,
        [{"table": "products", "keys": ["gen:products"], "action": "bump"}],
    )
    try:
        with psycopg.connect(products.dsn, autocommit=True) as conn:
            for i in range(25):
                conn.execute("UPDATE products SET stock = stock + 1 WHERE id = %s", (i + 1,))
        assert wait_for(lambda: app.get("gen:products") == b"25")
        time.sleep(0.3)
        assert app.get("gen:products") == b"25"
    finally:
        proc.stop()


def test_truncate_flushes_the_pool_by_default(
    tmp_path: Path, products: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """With truncate in `on`, TRUNCATE empties the pool: no product key survives."""
    proc = start(
        tmp_path,
        products,
        memcached,
        [
            {
                "table": "products",
                "keys": ["product:{id}"],
                "on": ["insert", "update", "delete", "truncate"],
            }
        ],
    )
    try:
        for i in range(1, 51):
            app.set(f"product:{i}", b"cached")
        products.execute("TRUNCATE products")
        assert wait_for(lambda: app.get_many([f"product:{i}" for i in range(1, 51)]) == {})
    finally:
        proc.stop()


def test_refresh_from_a_query_writes_its_first_row(
    tmp_path: Path, products: PgDatabase, memcached: MemcachedPool, app: HashClient
) -> None:
    """value: {query} runs on a read connection with the row's columns as parameters; a
    query that finds no row turns the refresh into a delete."""
    products.execute("CREATE TABLE reviews (product_id int, stars int)")
    products.execute("INSERT INTO reviews VALUES (4, 5), (4, 3)")
    rule = {
        "table": "products",
        "keys": ["product_stats:{id}"],
        "action": "refresh",
        "value": {
            "query": "SELECT p.id, count(r.*) AS reviews, p.stock FROM products p"
            " LEFT JOIN reviews r ON r.product_id = p.id"
            " WHERE p.id = %(id)s GROUP BY p.id"
        },
        "ttl": 60,
    }
    proc = start(tmp_path, products, memcached, [rule])
    try:
        products.execute("UPDATE products SET stock = 99 WHERE id = 4")
        expected = json.dumps({"id": 4, "reviews": 2, "stock": 99}).encode()
        assert wait_for(lambda: app.get("product_stats:4") == expected)
        app.set("product_stats:5", b"cached")
        products.execute("DELETE FROM products WHERE id = 5")
        assert wait_for(lambda: app.get("product_stats:5") is None)
    finally:
        proc.stop()
