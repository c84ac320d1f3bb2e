"""The application's side of the end-to-end tests: its memcached client, its cache-aside
read, and waiting for what the daemon should make true."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import psycopg
from pymemcache.client.base import Client
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


def owner_of(servers: Sequence[str], key: str) -> str:
    """The node pymemcache's own ``HashClient`` (rendezvous) sends ``key`` to: the apps'
    choice, taken from the real library and never from the daemon's placement code."""
    ring = HashClient(list(servers))  # only its hasher is asked; it never connects
    try:
        return str(ring.hasher.get_node(key))
    finally:
        ring.close()


class NodeCopies:
    """Precision as well as recall: a copy of each key on EVERY node, written and read
    directly (one plain ``Client`` per node). After a change, a key it touched must be
    gone from its owner (``owner_of``) and still on every other node; a key it did not
    touch must still be everywhere. A daemon that sent a delete to every node, or to the
    wrong one, fails; "the app no longer reads it" alone would not see that."""

    def __init__(self, servers: Sequence[str], *, timeout: float = 2.0, tls_context: Any = None):
        self.servers = list(servers)
        self.clients = {
            server: Client(
                server,
                no_delay=True,
                connect_timeout=timeout,
                timeout=timeout,
                default_noreply=False,
                tls_context=tls_context,
            )
            for server in self.servers
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def owner(self, key: str) -> str:
        return owner_of(self.servers, key)

    def plant(self, keys: Iterable[str], value: bytes = b"cached") -> None:
        """Put ``key`` on every node; a copy already there (the app's own) is kept."""
        keys = list(keys)
        for client in self.clients.values():
            for key in keys:
                client.add(key, value, noreply=False)
        missing = {k: sorted(set(self.servers) - self.holders(k)) for k in keys}
        missing = {k: nodes for k, nodes in missing.items() if nodes}
        assert missing == {}, f"planted copies missing before the change: {missing}"

    def holders(self, key: str) -> set[str]:
        """The nodes holding ``key`` now; a node that errs fails the test."""
        return {s for s, c in self.clients.items() if c.get(key) is not None}

    def left_on_owner(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if self.clients[self.owner(k)].get(k) is not None]

    def wait_gone_from_owners(self, keys: Iterable[str], timeout: float = 10.0) -> list[str]:
        """Wait until no key is on its owner; the keys still there."""
        left = list(keys)
        end = time.monotonic() + timeout
        while left and time.monotonic() < end:
            left = self.left_on_owner(left)
            if left:
                time.sleep(0.005)
        return left

    def barrier(
        self,
        template: str,
        candidates: Iterable[int],
        touch: Callable[[list[int]], object],
        timeout: float = 10.0,
    ) -> None:
        """Wait until every node has applied what the daemon sent it so far: per node, one
        id whose ``template`` key that node owns is cached there, ``touch(ids)`` changes
        those rows, and each key must go. Each node's deletes travel in order on one
        connection, so a stray delete sent before (to a non-owner) has landed by then.
        ``candidates`` must not include an id whose keys the caller expects to stay."""
        chosen: dict[str, int] = {}
        for i in candidates:
            chosen.setdefault(self.owner(template.format(i)), i)
        assert sorted(chosen) == sorted(self.servers), f"no barrier id for some node: {chosen}"
        for server, i in chosen.items():
            self.clients[server].set(template.format(i), b"barrier", noreply=False)
        touch(sorted(chosen.values()))
        keys = [template.format(i) for i in chosen.values()]
        left = self.wait_gone_from_owners(keys, timeout)
        assert left == [], f"barrier keys never deleted from their owner: {left}"

    def misplaced(self, changed: Iterable[str], untouched: Iterable[str]) -> dict[str, str]:
        """Keys whose copies are not where they should be, with what is wrong."""
        wrong: dict[str, str] = {}
        everywhere = set(self.servers)
        for key in changed:
            owner = self.owner(key)
            held = self.holders(key)
            if held != everywhere - {owner}:
                wrong[key] = f"changed, owner {owner}: on {sorted(held)}"
        for key in untouched:
            held = self.holders(key)
            if held != everywhere:
                wrong[key] = f"untouched: only on {sorted(held)}"
        return wrong

    def assert_exact(
        self,
        changed: Sequence[str],
        untouched: Sequence[str],
        *,
        timeout: float = 10.0,
        settle: Callable[[], None] | None = None,
    ) -> None:
        """Each changed key gone from its owner and nowhere else; untouched keys kept.
        ``settle`` (usually a ``barrier``) runs between the two checks."""
        assert changed, "nothing changed: the check could not fail"
        left = self.wait_gone_from_owners(changed, timeout)
        assert left == [], f"still on their owner: {left}"
        if settle is not None:
            settle()
        wrong = self.misplaced(changed, untouched)
        assert wrong == {}, f"copies not where pymemcache's ring says: {wrong}"


def rewrite_users(db: PgDatabase) -> Callable[[list[int]], object]:
    """``touch`` for ``NodeCopies.barrier`` on the ``users`` table: a no-op UPDATE of the
    rows, which still streams one change per row."""

    def touch(ids: list[int]) -> object:
        return db.execute("UPDATE users SET name = name WHERE id = ANY(%s)", (ids,))

    return touch


def assert_churn_invalidated(
    copies: NodeCopies,
    app: HashClient,
    writer: ChurningWriter,
    db: PgDatabase,
    absent: Sequence[str],
    *,
    at_least: int,
    rows: int = 500,
) -> None:
    """After a churn run (daemon killed and restarted while ``writer`` changed rows): no
    write failed, more than ``at_least`` rows changed, every changed row's key is gone
    for the app and from its owner only, and other rows' keys and ``absent`` ones stay."""
    assert writer.errors == []
    updated = sorted(writer.updated)
    left = wait_gone(app, [f"user:{i}" for i in updated], timeout=20)
    assert (len(updated) > at_least, left) == (True, [])
    copies.assert_exact(
        [f"user:{i}" for i in updated],
        [*(f"user:{i}" for i in range(1, rows + 1) if i not in writer.updated), *absent],
        timeout=20,
        settle=lambda: copies.barrier("user:{}", updated, rewrite_users(db)),
    )


class ReplicaReaders:
    """Seed-guide readers of a read replica, on threads of their own: each reads
    ``user:{id}`` (random ``ids``) from memcached and, on a miss, the row from ``dsn`` with
    ``query`` and stores ``encode(row)`` — the app that re-caches old rows from a lagging
    replica. ``misses`` counts the replica reads; ``stop()`` joins and raises a reader's
    error."""

    def __init__(
        self,
        servers: Sequence[str],
        dsn: str,
        *,
        ids: range,
        query: str,
        encode: Callable[[tuple[Any, ...]], str],
        count: int = 4,
    ):
        self._servers = list(servers)
        self._dsn = dsn
        self._ids = ids
        self._query = query
        self._encode = encode
        self._halt = threading.Event()
        self._errors: list[BaseException] = []
        self.misses = [0] * count
        self._threads = [threading.Thread(target=self._read, args=(n,)) for n in range(count)]

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self._threads), "a reader hangs"
        if self._errors:
            raise self._errors[0]

    def _read(self, n: int) -> None:
        rng = random.Random(n)
        cache = app_client(self._servers)
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                while not self._halt.is_set():
                    row_id = rng.choice(self._ids)
                    if cache.get(f"user:{row_id}") is not None:
                        time.sleep(0.001)
                        continue
                    self.misses[n] += 1
                    row = conn.execute(self._query, (row_id,)).fetchone()
                    if row is not None:
                        cache.set(f"user:{row_id}", self._encode(row), expire=300)
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            cache.close()
