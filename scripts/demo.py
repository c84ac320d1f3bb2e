"""``make demo``: pg-cache-invalidator against real PostgreSQL and memcached, locally.

Starts a throwaway PostgreSQL cluster with wal2json and three memcached nodes
(tests/services.py), runs ``invalidator run`` with examples/demo.yaml, and plays the seed
guide's cache-aside app (pymemcache ``HashClient`` in front of psycopg) while a separate
connection changes rows behind its back, as a psql session or a batch job would. Each step
shows which key vanished from which node and how long after the commit returned; a burst
of updates ends with a count of stale keys, which must be zero.

Everything it started is stopped and removed at the end, also on Ctrl-C or an error.
Exit 0 when every check passed, 1 when a key stayed stale or something failed.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
import yaml  # noqa: E402
from pymemcache.client.base import Client  # noqa: E402
from pymemcache.client.hash import HashClient  # noqa: E402

from invalidator.config import load_yaml  # noqa: E402
from tests.daemon_process import DaemonError, DaemonProcess, Sample, metric_sum  # noqa: E402
from tests.services import (  # noqa: E402
    MemcachedPool,
    PostgresCluster,
    ServiceError,
    exit_on_sigterm,
    free_port,
)
from tests.stats import percentile  # noqa: E402

DEMO_CONFIG = REPO_ROOT / "examples" / "demo.yaml"
DATABASE = "app"
USERS = 1000
PRODUCTS = 100
WARM_USERS = 200  # users the app has read (and cached) before the walkthrough
PROBE_IDS = range(101, 201)  # single-row updates timed one by one
BURST = 2000  # single-row updates in a row, checked for stale keys afterwards
TTL = 300  # the app's expire=, as in the seed guide
READY_TIMEOUT = 20.0
GONE_TIMEOUT = 5.0  # a key still cached this long after its commit is a failure

_TTY = sys.stdout.isatty()
DIM = "\033[2m" if _TTY else ""
BOLD = "\033[1m" if _TTY else ""
RED = "\033[31m" if _TTY else ""
RESET = "\033[0m" if _TTY else ""


class DemoError(Exception):
    """A step could not run; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"{BOLD}{text}{RESET}")


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


# --------------------------------------------------------------------------- the app


class App:
    """The seed guide's cache-aside app: ``HashClient.get``; on a miss, SELECT and ``set``."""

    def __init__(self, servers: Sequence[str], dsn: str):
        self.cache = HashClient(list(servers), no_delay=True, default_noreply=False)
        self.db = psycopg.connect(dsn, autocommit=True)

    def node(self, key: str) -> str:
        """The server string HashClient sends ``key`` to."""
        return str(self.cache.hasher.get_node(key))

    def _cached(
        self, key: str, query: str, params: Sequence[Any], columns: Sequence[str]
    ) -> tuple[dict[str, Any] | None, str]:
        cached = self.cache.get(key)
        if cached:
            return json.loads(cached), "cache"
        row = self.db.execute(query, params).fetchone()
        if row is None:
            return None, "PostgreSQL"
        value = {c: (str(v) if c == "price" else v) for c, v in zip(columns, row, strict=True)}
        self.cache.set(key, json.dumps(value), expire=TTL)
        return value, "PostgreSQL"

    def get_user(self, user_id: int) -> tuple[dict[str, Any] | None, str]:
        return self._cached(
            f"user:{user_id}",
            "SELECT id, email, name FROM users WHERE id = %s",
            (user_id,),
            ("id", "email", "name"),
        )

    def get_user_by_email(self, email: str) -> tuple[dict[str, Any] | None, str]:
        return self._cached(
            f"user_by_email:{email}",
            "SELECT id, email, name FROM users WHERE email = %s",
            (email,),
            ("id", "email", "name"),
        )

    def get_product(self, product_id: int) -> tuple[dict[str, Any] | None, str]:
        return self._cached(
            f"product:{product_id}",
            "SELECT id, name, price FROM products WHERE id = %s",
            (product_id,),
            ("id", "name", "price"),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cache.close()
        with contextlib.suppress(Exception):
            self.db.close()


class Nodes:
    """One plain client per memcached node, to watch a key on the node that owns it."""

    def __init__(self, app: App, servers: Sequence[str]):
        self.app = app
        self.clients = {
            s: Client(s, no_delay=True, connect_timeout=2, timeout=2, default_noreply=False)
            for s in servers
        }

    def cached(self, key: str) -> bool:
        return self.clients[self.app.node(key)].get(key) is not None

    def wait_gone(self, keys: Iterable[str], since: float) -> dict[str, float]:
        """Seconds from ``since`` until each key is gone from its owning node."""
        owners: dict[str, list[str]] = {}
        for key in keys:
            owners.setdefault(self.app.node(key), []).append(key)
        gone: dict[str, float] = {}
        while owners:
            for server, waiting in list(owners.items()):
                found = self.clients[server].get_many(waiting)
                now = time.perf_counter()
                for key in waiting:
                    if key not in found:
                        gone[key] = now - since
                owners[server] = [k for k in waiting if k in found]
                if not owners[server]:
                    del owners[server]
            if owners and time.perf_counter() - since > GONE_TIMEOUT:
                left = sorted(k for ks in owners.values() for k in ks)
                raise DemoError(
                    f"{len(left)} key(s) still cached {GONE_TIMEOUT:.0f} s after the commit: "
                    + ", ".join(left[:5])
                )
        return gone

    def close(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.close()


def total(samples: Sequence[Sample], name: str, **labels: str) -> int:
    return round(metric_sum(samples, name, **labels))


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    count = buckets[-1][1]
    if count == 0:
        return math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, cumulative
    return lower


# --------------------------------------------------------------------------- the demo

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


class Demo:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="invalidator-demo-"))
        self.pg: PostgresCluster | None = None
        self.memcached: MemcachedPool | None = None
        self.daemon: DaemonProcess | None = None
        self.app: App | None = None
        self.nodes: Nodes | None = None
        self.batch: psycopg.Connection[Any] | None = None
        self.slot = ""
        self.failures: list[str] = []
        self.latencies: list[float] = []  # commit returned → key gone, per polled key
        self.rows_changed = 0
        self.touched_users: set[int] = set()
        self.slot_dropped = False
        self.interrupted = False

    # -- setup ---------------------------------------------------------------------------

    def start_services(self) -> None:
        heading("Services (throwaway, on 127.0.0.1)")
        self.pg = PostgresCluster().start()
        self.pg.create_database(DATABASE)
        version = self.pg.execute("SHOW server_version")[0][0].split()[0]
        say(f"  {'PostgreSQL ' + version:<18}127.0.0.1:{self.pg.port}  wal_level=logical, wal2json")
        self.memcached = MemcachedPool(3).start()
        say(f"  {'memcached x3':<18}{', '.join(self.memcached.servers)}")
        self.seed()

    def seed(self) -> None:
        assert self.pg is not None
        rng = random.Random(1)
        with self.pg.connect(DATABASE) as conn:
            # FULL: the old row carries every column, so an email change also deletes the
            # old user_by_email: key, and when_changed can compare old and new name/price
            # (with DEFAULT the old row is only the key, and "unknown" counts as changed).
            conn.execute(
                "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, name text);"
                "ALTER TABLE users REPLICA IDENTITY FULL;"
                "CREATE TABLE products (id int PRIMARY KEY, name text, price numeric);"
                "ALTER TABLE products REPLICA IDENTITY FULL;"
            )
            with conn.cursor() as cur, cur.copy("COPY users (id, email, name) FROM STDIN") as cp:
                for i in range(1, USERS + 1):
                    cp.write_row(
                        (i, f"user{i}@example.com", f"{rng.choice(FIRST)} {rng.choice(LAST)}")
                    )
            with conn.cursor() as cur, cur.copy("COPY products FROM STDIN") as cp:
                for i in range(1, PRODUCTS + 1):
                    cp.write_row((i, f"product {i}", f"{rng.randint(100, 9999) / 100:.2f}"))
            conn.execute("ANALYZE users; ANALYZE products")
        say(
            f"  {'tables':<18}users ({USERS:,} rows, REPLICA IDENTITY FULL),"
            f" products ({PRODUCTS} rows, REPLICA IDENTITY FULL)"
        )

    def start_daemon(self) -> None:
        assert self.pg is not None and self.memcached is not None
        config = load_yaml(DEMO_CONFIG.read_text())
        port = free_port()
        http = f"127.0.0.1:{port}"
        config["source"]["dsn"] = self.pg.dsn(DATABASE)
        config["pools"]["default"]["servers"] = list(self.memcached.servers)
        config["http"]["listen"] = http
        self.slot = config["source"]["slot"]
        path = self.tmp / "config.yaml"
        path.write_text(
            "# examples/demo.yaml with this run's services filled in\n"
            + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
        )
        heading("Daemon: python -m invalidator run --config " + str(path))
        self.daemon = DaemonProcess(
            path,
            port,
            self.tmp / "daemon.log",
            slot=self.slot,
            new_session=True,  # Ctrl-C reaches us; we stop it with SIGTERM
            ready_timeout=READY_TIMEOUT,
        )
        took = self.daemon.start(wait=False).wait_ready()
        say(
            f"  pid {self.daemon.pid}, /readyz 200 after {took:.1f} s;"
            f" metrics on http://{http}/metrics"
        )
        say(f"  its console log: {self.daemon.log_path} {DIM}(shown at the end){RESET}")

    # -- the app and the changes -----------------------------------------------------------

    def warm(self) -> None:
        assert self.pg is not None and self.memcached is not None
        self.app = App(self.memcached.servers, self.pg.dsn(DATABASE))
        self.nodes = Nodes(self.app, self.memcached.servers)
        self.batch = psycopg.connect(self.pg.dsn(DATABASE), autocommit=True)
        for i in range(1, WARM_USERS + 1):
            self.app.get_user(i)
            self.app.get_user_by_email(f"user{i}@example.com")
        for i in range(1, 11):
            self.app.get_product(i)
        per_node = {s: 0 for s in self.memcached.servers}
        for i in range(1, WARM_USERS + 1):
            per_node[self.app.node(f"user:{i}")] += 1
        spread = ", ".join(f"{n}" for n in per_node.values())
        heading("App: HashClient(servers, no_delay=True, default_noreply=False), cache-aside")
        say(
            f"  warmed {WARM_USERS} users by id and by email, and 10 products"
            f" ({2 * WARM_USERS + 10} keys; user:{{id}} keys per node: {spread})"
        )

    def execute(self, statements: str | Sequence[str]) -> tuple[float, int]:
        """Run SQL on the batch connection (a list = one transaction); (returned at, rows)."""
        assert self.batch is not None
        rows = 0
        if isinstance(statements, str):
            rows = self.batch.execute(statements).rowcount
        else:
            with self.batch.transaction():
                for statement in statements:
                    rows += self.batch.execute(statement).rowcount
        returned = time.perf_counter()
        self.rows_changed += rows
        return returned, rows

    def current_lsn(self) -> str:
        assert self.batch is not None
        row = self.batch.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def wait_confirmed(self, lsn: str, timeout: float = 10.0) -> float:
        """Wait until the slot's confirmed_flush_lsn reaches ``lsn``; returns seconds."""
        assert self.batch is not None
        started = time.perf_counter()
        while True:
            row = self.batch.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (lsn, self.slot),
            ).fetchone()
            if row is not None and row[0]:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise DemoError(f"slot {self.slot} not confirmed up to {lsn} after {timeout:.0f} s")
            time.sleep(0.01)

    def step(
        self,
        statements: str | Sequence[str],
        keys: Sequence[str],
        then: Callable[[], str],
        *,
        label: str | None = None,
    ) -> None:
        """Show one change: the SQL, when each key left its node, what the app reads next."""
        assert self.nodes is not None and self.app is not None
        missing = [k for k in keys if not self.nodes.cached(k)]
        if missing:
            raise DemoError(f"demo bug: {', '.join(missing)} not cached before the change")
        shown = label or (statements if isinstance(statements, str) else "; ".join(statements))
        say(f"  {shown}")
        returned, _ = self.execute(statements)
        gone = self.nodes.wait_gone(keys, returned)
        self.latencies.extend(gone.values())
        if len(keys) <= 2:
            for key in keys:
                say(f"      → {key} deleted on {self.app.node(key)} after {ms(gone[key])}")
        else:
            servers = {self.app.node(k) for k in keys}
            say(
                f"      → {len(keys)} keys ({keys[0]} … {keys[-1]}) deleted on"
                f" {len(servers)} nodes, the last {ms(max(gone.values()))} after the commit"
            )
        for line in then().splitlines():
            say(f"      {line}")

    def show_user(self, user_id: int) -> str:
        assert self.app is not None
        user, source = self.app.get_user(user_id)
        if user is None:
            return f"app.get_user({user_id}) → None (miss, row gone in {source})"
        return f"app.get_user({user_id}) → name={user['name']!r}  (miss → read from {source})"

    def walkthrough(self) -> None:
        assert self.app is not None and self.nodes is not None
        heading("Changes behind the app's back (plain SQL on another connection)")
        self.step(
            "UPDATE users SET name = 'Ada Lovelace' WHERE id = 7",
            ["user:7"],
            lambda: self.show_user(7),
        )
        self.step(
            "UPDATE users SET name = 'Grace Hopper' WHERE id = 42",
            ["user:42"],
            lambda: self.show_user(42),
        )

        def by_new_email() -> str:
            assert self.app is not None
            user, source = self.app.get_user_by_email("grace@navy.example")
            found = f"id {user['id']}" if user else "None"
            by_id, _ = self.app.get_user(13)
            email = by_id["email"] if by_id else None
            return (
                f"app.get_user_by_email('grace@navy.example') → {found}  (miss → read from"
                f" {source})\napp.get_user(13) → email={email!r}"
            )

        self.step(
            "UPDATE users SET email = 'grace@navy.example' WHERE id = 13",
            ["user:13", "user_by_email:user13@example.com"],
            by_new_email,
        )
        self.step(
            "DELETE FROM users WHERE id = 99",
            ["user:99", "user_by_email:user99@example.com"],
            lambda: self.show_user(99),
        )
        self.step(
            ["UPDATE users SET name = upper(name) WHERE id BETWEEN 20 AND 29"],
            [f"user:{i}" for i in range(20, 30)],
            lambda: self.show_user(25),
            label="BEGIN; UPDATE users SET name = upper(name) WHERE id BETWEEN 20 AND 29; COMMIT",
        )
        self.touched_users.update([7, 42, 13, 99, *range(20, 30)])

        def product(pid: int) -> Callable[[], str]:
            def show() -> str:
                assert self.app is not None
                value, source = self.app.get_product(pid)
                assert value is not None
                return (
                    f"app.get_product({pid}) → price={value['price']}  (miss → read from {source})"
                )

            return show

        self.step("UPDATE products SET price = 12.50 WHERE id = 5", ["product:5"], product(5))
        self.unchanged_product()

    def unchanged_product(self) -> None:
        """An UPDATE that leaves name and price alone: when_changed keeps product:6."""
        assert self.nodes is not None and self.app is not None
        statement = "UPDATE products SET name = name, price = price WHERE id = 6"
        say(f"  {statement}")
        if not self.nodes.cached("product:6"):
            raise DemoError("demo bug: product:6 not cached before the change")
        self.execute(statement)
        lsn = self.current_lsn()
        took = self.wait_confirmed(lsn)
        if self.nodes.cached("product:6"):
            say(
                f"      → the daemon read it: slot confirmed past {lsn} after {ms(took)};"
                f" product:6 still cached on {self.app.node('product:6')}"
            )
            say("      when_changed: [name, price] saw neither change: no delete")
        else:
            self.fail("product:6 was deleted although neither name nor price changed")

    def probe(self) -> None:
        """Single-row updates, one at a time, each timed until its key is gone."""
        assert self.nodes is not None
        before = len(self.latencies)
        for i in PROBE_IDS:
            key = f"user:{i}"
            if not self.nodes.cached(key):
                raise DemoError(f"demo bug: {key} not cached before the probe")
            returned, _ = self.execute(f"UPDATE users SET name = 'probe {i}' WHERE id = {i}")
            self.latencies.extend(self.nodes.wait_gone([key], returned).values())
        self.touched_users.update(PROBE_IDS)
        sample = self.latencies[before:]
        say(
            f"  {len(sample)} more single-row UPDATEs, one at a time, each polled on its node:"
            f" key gone p50 {ms(percentile(sample, 50))}, p99 {ms(percentile(sample, 99))},"
            f" max {ms(max(sample))}"
        )

    def burst(self) -> None:
        assert self.app is not None and self.nodes is not None and self.batch is not None
        heading(f"Burst: {BURST:,} single-row UPDATEs from a writer, every user cached first")
        ids = [r[0] for r in self.batch.execute("SELECT id FROM users ORDER BY id").fetchall()]
        for i in ids:
            self.app.get_user(i)
        rng = random.Random(2)
        sequence = [ids[n % len(ids)] for n in range(BURST)]
        rng.shuffle(sequence)
        missing = [i for i in ids if not self.nodes.cached(f"user:{i}")]
        if missing:
            raise DemoError(f"demo bug: {len(missing)} users not cached before the burst")
        started = time.perf_counter()
        for n, user_id in enumerate(sequence):
            self.batch.execute("UPDATE users SET name = %s WHERE id = %s", (f"burst {n}", user_id))
        last_commit = time.perf_counter()
        self.rows_changed += len(sequence)
        self.touched_users.update(sequence)
        writer = last_commit - started
        say(
            f"  {len(ids):,} users cached; {len(sequence):,} UPDATEs (autocommit) in {writer:.2f} s"
            f" = {len(sequence) / writer:,.0f} commits/s"
        )
        gone = self.nodes.wait_gone([f"user:{i}" for i in ids], last_commit)
        say(
            f"  every user:{{id}} key gone {ms(max(gone.values()))} after the last commit"
            f" ({ms(max(gone.values()) + writer)} after the first)"
        )
        took = self.wait_confirmed(self.current_lsn())
        say(f"  slot confirmed up to the last commit {ms(took)} later")

    # -- results ---------------------------------------------------------------------------

    def stale_keys(self) -> tuple[int, int]:
        """Keys of changed rows the app would still read wrong: (stale, checked)."""
        assert self.app is not None and self.batch is not None
        rows = {
            r[0]: {"id": r[0], "email": r[1], "name": r[2]}
            for r in self.batch.execute("SELECT id, email, name FROM users").fetchall()
        }
        stale = checked = 0
        for user_id in sorted(self.touched_users):
            checked += 1
            cached = self.app.cache.get(f"user:{user_id}")
            if cached is not None and json.loads(cached) != rows.get(user_id):
                stale += 1
                if stale <= 5:
                    say(f"  {RED}stale: user:{user_id} = {cached.decode()}{RESET}")
        for email in ("user13@example.com", "user99@example.com"):
            checked += 1
            cached = self.app.cache.get(f"user_by_email:{email}")
            if cached is not None:
                stale += 1
                say(f"  {RED}stale: user_by_email:{email} = {cached.decode()}{RESET}")
        return stale, checked

    def summary(self) -> None:
        assert self.daemon is not None
        heading("Summary")
        expected = self.rows_changed
        deadline = time.monotonic() + 5
        while True:
            samples = self.daemon.metrics()
            changes = total(samples, "invalidator_changes_total")
            if changes >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        deletes = total(samples, "invalidator_operations_total", op="delete")
        note = "" if changes == expected else f"  {RED}≠ {expected:,} rows changed{RESET}"
        say(f"  changes seen       {changes:,} rows (invalidator_changes_total){note}")
        if changes != expected:
            self.fail(f"the daemon saw {changes} row changes, {expected} were made")
        say(
            f'  deletes acked      {deletes:,} (invalidator_operations_total{{op="delete"}};'
            " DELETED or NOT_FOUND)"
        )
        lat = self.latencies
        say(
            f"  commit → key gone  p50 {ms(percentile(lat, 50))}, p99 {ms(percentile(lat, 99))}"
            f"  (commit returned → gone from its node, {len(lat)} keys polled)"
        )
        buckets = [
            (float(sample.labels["le"]), sample.value)
            for sample in samples
            if sample.name == "invalidator_commit_to_ack_seconds_bucket"
        ]
        count = total(samples, "invalidator_commit_to_ack_seconds_count")
        if buckets and count:
            say(
                f"  commit → ack       p50 ≈ {ms(histogram_quantile(buckets, 0.5))},"
                f" p99 ≈ {ms(histogram_quantile(buckets, 0.99))}"
                f"  (invalidator_commit_to_ack_seconds, {count:,} transactions, mostly the burst)"
            )
        stale, checked = self.stale_keys()
        mark = RED if stale else ""
        say(
            f"  stale keys left    {mark}{stale}{RESET if stale else ''} of {checked:,}"
            f" changed rows' keys, read through the app's HashClient"
        )
        if stale:
            self.fail(f"{stale} stale key(s) left")
        status = self.daemon.cli("status")
        try:
            record = json.loads(status.stdout)
            state = "active" if record["active"] else "inactive"
            say(
                f"  slot               {record['slot']}: {state},"
                f" confirmed {record['confirmed_lsn']}, lag {record['lag_bytes']:,} bytes,"
                f" WAL retained {record['wal_retained_bytes']:,} bytes  (invalidator status)"
            )
        except (ValueError, KeyError, TypeError):
            self.fail(f"invalidator status exited {status.returncode}: {status.stderr.strip()}")

    def show_daemon_tail(self) -> None:
        if self.daemon is not None and self.daemon.log_lines():
            say(f"  {DIM}the daemon's log, last lines ({self.daemon.log_path}):{RESET}")
            for line in self.daemon.log_lines()[-15:]:
                say(f"{DIM}    {line}{RESET}")

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        say(f"  {RED}FAILED: {reason}{RESET}")

    # -- shutdown --------------------------------------------------------------------------

    def shutdown_daemon(self) -> None:
        """The visible, graceful end: SIGTERM, then teardown of the slot."""
        assert self.daemon is not None
        heading("Shutdown")
        started = time.monotonic()
        code = self.daemon.stop(15.0)
        took = time.monotonic() - started
        say(f"  daemon: SIGTERM → exit {code} after {ms(took)}")
        if code != 0:
            self.fail(f"the daemon exited with {code} on SIGTERM")
        teardown = self.daemon.cli("teardown")
        if teardown.returncode == 0:
            self.slot_dropped = True
            say(f"  invalidator teardown: {teardown.stdout.strip()}")
        else:
            self.fail(
                f"invalidator teardown exited {teardown.returncode}: {teardown.stderr.strip()}"
            )
        lines = self.daemon.log_lines()
        say(f"  {DIM}the daemon's log ({len(lines)} lines):{RESET}")
        for line in lines[-12:]:
            say(f"  {DIM}| {line}{RESET}")

    def cleanup(self) -> None:
        """Stop and remove everything this run started; a second Ctrl-C cannot cut it short."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _cleanup(self) -> None:
        for closer in (self.nodes, self.app):
            if closer is not None:
                closer.close()
        if self.batch is not None:
            with contextlib.suppress(Exception):
                self.batch.close()
        if self.daemon is not None and self.daemon.running:
            with contextlib.suppress(Exception):
                self.daemon.stop(10.0)
        if self.daemon is not None and not self.slot_dropped and self.pg is not None:
            with contextlib.suppress(Exception):
                self.daemon.cli("teardown")
        stopped = []
        if self.memcached is not None:
            with contextlib.suppress(Exception):
                self.memcached.stop()
                stopped.append("memcached x3")
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
                stopped.append("PostgreSQL")
        shutil.rmtree(self.tmp, ignore_errors=True)
        say(f"  {' and '.join(stopped) or 'nothing'} stopped; {self.tmp} removed")

    def _on_sigint(self, signum: int, frame: object) -> None:
        # Ctrl-C also reaches memcached and PostgreSQL (same process group): whatever error
        # their exit causes here, it is still an interruption, not a failure of the demo.
        self.interrupted = True
        raise KeyboardInterrupt

    def run(self) -> int:
        started = time.monotonic()
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_sigint)
        say(f"{BOLD}pg-cache-invalidator demo{RESET}  (temporary files in {self.tmp})")
        try:
            self.start_services()
            self.start_daemon()
            self.warm()
            self.walkthrough()
            self.probe()
            self.burst()
            self.summary()
            self.shutdown_daemon()
        except DemoError as exc:
            self.fail(str(exc))
            self.show_daemon_tail()
        except DaemonError as exc:  # its message ends with the log's tail, shown below
            self.fail(str(exc).splitlines()[0])
            self.show_daemon_tail()
        except ServiceError as exc:
            self.fail(f"a service did not start: {exc}")
        except KeyboardInterrupt:
            say()
            say("interrupted: cleaning up")
            self.cleanup()
            return 130
        except Exception as exc:
            if self.interrupted:
                say()
                say("interrupted: cleaning up")
                self.cleanup()
                return 130
            self.fail(f"{type(exc).__name__}: {exc}")
            self.show_daemon_tail()
            self.cleanup()
            raise
        self.cleanup()
        elapsed = time.monotonic() - started
        if self.failures:
            say(f"{RED}{BOLD}demo failed after {elapsed:.1f} s:{RESET}")
            for reason in self.failures:
                say(f"  - {reason.splitlines()[0]}")
            return 1
        say(f"{BOLD}demo passed in {elapsed:.1f} s{RESET}: no stale key left")
        return 0


def main() -> int:
    exit_on_sigterm()
    return Demo().run()


if __name__ == "__main__":
    sys.exit(main())
