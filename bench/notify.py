"""The LISTEN/NOTIFY source's cost and speed, measured side by side in one run:
pgbench single-row UPDATE throughput on a watched table without and with the outbox
triggers, and commit → key gone latency through the notify source.

Usage: python bench/notify.py [--seconds 10] [--clients 4] [--samples 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from tests.daemon_process import DaemonProcess
from tests.services import MemcachedPool, PostgresCluster

SCRIPT = "\\set id random(1, 100000)\nUPDATE users SET v = v + 1 WHERE id = :id;\n"


def pgbench(cluster: PostgresCluster, db: str, seconds: int, clients: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(SCRIPT)
    out = subprocess.run(
        [
            cluster.bin("pgbench"),
            "-n",
            "-f",
            script.name,
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            cluster.dsn(db),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    os.unlink(script.name)
    match = re.search(r"tps = ([\d.]+)", out.stdout)
    assert match, out.stdout
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    with PostgresCluster() as cluster, MemcachedPool(3) as pool:
        cluster.create_database("bench")
        dsn = cluster.dsn("bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE users (id int PRIMARY KEY, v int, name text)")
            conn.execute("INSERT INTO users SELECT g, 0, 'n' FROM generate_series(1, 101000) g")
        plain = pgbench(cluster, "bench", args.seconds, args.clients)
        tmp = Path(tempfile.mkdtemp(prefix="bench-notify-"))
        proc = DaemonProcess.create(
            tmp,
            dsn=dsn,
            slot="unused",
            servers=pool.servers,
            rules=[{"table": "users", "keys": ["user:{id}"]}],
            kind="notify",
        )
        proc.start()  # installs the outbox and the trigger
        triggered = pgbench(cluster, "bench", args.seconds, args.clients)
        time.sleep(2)
        app = HashClient(pool.servers, use_pooling=False, no_delay=True, default_noreply=False)
        nodes = {s: Client(s, no_delay=True) for s in pool.servers}
        latencies = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for n in range(args.samples):
                key_id = 100_001 + n % 999
                key = f"user:{key_id}"
                node = nodes[app.hasher.get_node(key)]
                node.set(key, b"cached")
                conn.execute("UPDATE users SET name = md5(name) WHERE id = %s", (key_id,))
                start = time.perf_counter()
                while node.get(key) is not None and time.perf_counter() - start < 5:
                    pass
                latencies.append(time.perf_counter() - start)
        proc.terminate()
        app.close()
        for client in nodes.values():
            client.close()
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    print(
        f"machine: {platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}, nproc {os.cpu_count()}; pgbench -c {args.clients} "
        f"-T {args.seconds}, single-row UPDATE of a watched table (PostgreSQL fsync=off)"
    )
    print(f"{'figure':<44}{'value':>14}")
    print(f"{'pgbench tps without triggers':<44}{plain:>14,.0f}")
    print(f"{'pgbench tps with the outbox trigger':<44}{triggered:>14,.0f}")
    print(f"{'ratio with / without':<44}{triggered / plain:>14.2f}")
    print(f"{'commit -> key gone p50 ms (notify source)':<44}{q(0.5):>14.2f}")
    print(f"{'commit -> key gone p99 ms':<44}{q(0.99):>14.2f}")
    print(f"{'commit -> key gone max ms':<44}{latencies[-1] * 1000:>14.2f}")
    print(f"{'samples':<44}{len(latencies):>14}  (mean {statistics.mean(latencies) * 1000:.2f} ms)")


if __name__ == "__main__":
    main()
