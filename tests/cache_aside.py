"""The application's side of the end-to-end tests: its memcached client, its cache-aside
read, and waiting for what the daemon should make true."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import psycopg
from pymemcache.client.hash import HashClient

from tests.services import PgDatabase


def app_client(servers: Sequence[str], *, timeout: float = 2.0, **options: Any) -> HashClient:
    """``HashClient`` as the seed guide's apps build it, replies awaited. The timeouts make
    a read from a stopped node fail instead of hanging the test."""
    return HashClient(
        list(servers),
        use_pooling=False,
        no_delay=True,
        default_noreply=False,
        connect_timeout=timeout,
        timeout=timeout,
        **options,
    )


def get_user(app: HashClient, db: PgDatabase, user_id: int) -> dict[str, Any] | None:
    """The seed guide's cache-aside read of a user."""
    cached = app.get(f"user:{user_id}")
    if cached is not None:
        return json.loads(cached)  # type: ignore[no-any-return]
    rows = db.execute("SELECT id, email, name FROM users WHERE id = %s", (user_id,))
    if not rows:
        return None
    user = {"id": rows[0][0], "email": rows[0][1], "name": rows[0][2]}
    app.set(f"user:{user_id}", json.dumps(user), expire=300)
    return user


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def wait_gone(app: HashClient, keys: Sequence[str], timeout: float = 10.0) -> list[str]:
    """Wait until no key is readable through ``app``; the keys still cached."""
    left = list(keys)
    end = time.monotonic() + timeout
    while left and time.monotonic() < end:
        left = [k for k in left if app.get(k) is not None]
        if left:
            time.sleep(0.005)
    return left


class ChurningWriter:
    """Another service writing behind the apps' back, in a thread, until the block ends:
    each transaction first caches ``user:{id}`` for its rows, then updates them. A key still
    cached after catch-up is an invalidation lost. ``sizes``: rows per transaction, drawn."""

    def __init__(self, servers: Sequence[str], dsn: str, *, seed: int, sizes: Sequence[int]):
        self.servers = servers
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.sizes = list(sizes)
        self.updated: set[int] = set()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write)

    def _write(self) -> None:
        client = app_client(self.servers)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop.is_set():
                    ids = self.rng.sample(range(1, 501), self.rng.choice(self.sizes))
                    for i in ids:
                        client.set(f"user:{i}", "cached")
                    with conn.transaction():
                        for i in ids:
                            conn.execute(
                                "UPDATE users SET name = md5(random()::text) WHERE id = %s", (i,)
                            )
                    self.updated.update(ids)
        except BaseException as exc:  # surfaced by the test through .errors
            self.errors.append(exc)
        finally:
            client.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)
