"""php-memcached places the corpus (the oracle for `client: php-memcached`): runs
php_memcached_vectors.php with Debian's php-cli and php-memcached, one file per option set.
Options are set with ``setOptions`` before ``addServers``, in the order listed.

The oracle is ``getServerByKey``, asked without a network. Each option set is also run
live against three real memcached nodes on 127.0.0.1 (plain and weighted): every key is
``set`` and read back from each node alone, and must be on the node ``getServerByKey``
names; any disagreement stops the run. (php-memcached's own key check refuses non-ASCII
keys on the text protocol: those are counted, not stored.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import corpus
import record

HERE = Path(__file__).resolve().parent

# File name → options (behaviors), in the order the app sets them.
OPTION_SETS: dict[str, dict[str, Any]] = {
    "php-memcached": {},
    "php-memcached-libketama_compatible": {"libketama_compatible": True},
    "php-memcached-consistent": {"distribution": "consistent"},
    "php-memcached-consistent-crc": {"distribution": "consistent", "hash": "crc"},
    "php-memcached-libketama-fnv1a_32": {"libketama_compatible": True, "hash": "fnv1a_32"},
    "php-memcached-consistent-sort_hosts": {"distribution": "consistent", "sort_hosts": True},
    "php-memcached-sort_hosts": {"sort_hosts": True},
}


def debian_version(package: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def live_check(corpus_dir: Path, options: Path, name: str, keys: int) -> None:
    """Three fresh memcached nodes per run: the library's real send path must agree with
    its getServerByKey for every key, plain and weighted."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    for weights in ([0, 0, 0], [1, 2, 3]):
        ports = [free_port() for _ in range(3)]
        nodes = [
            subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(p), "-U", "0", *user])
            for p in ports
        ]
        try:
            for port in ports:  # wait until each node accepts
                for _ in range(500):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                        break
                    except OSError:
                        time.sleep(0.01)
            servers = corpus_dir / "live.json"
            servers.write_text(
                json.dumps([["127.0.0.1", p, w] for p, w in zip(ports, weights, strict=True)])
            )
            result = subprocess.run(
                [
                    "php",
                    str(HERE / "php_memcached_vectors.php"),
                    "--live",
                    str(corpus_dir / "live_keys.json"),
                    str(servers),
                    str(options),
                ],
                capture_output=True,
                check=False,
            )
        finally:
            for node in nodes:
                node.terminate()
                node.wait()
        if result.returncode != 0:
            raise SystemExit(f"{name}: live check failed: {result.stderr.decode()[:500]}")
        outcome = json.loads(result.stdout)
        stored, refused, wrong = outcome["stored"], len(outcome["refused"]), outcome["wrong"]
        if wrong or stored == 0 or stored + refused != keys:
            raise SystemExit(
                f"{name}: live set disagrees with getServerByKey for {len(wrong)} keys, "
                f"e.g. {wrong[:3]} ({stored} stored, {refused} refused)"
            )
        label = "weighted" if any(weights) else "plain"
        print(
            f"{name}: live {label}: {stored} keys set, each on the node getServerByKey "
            f"names ({refused} non-ASCII keys refused by php-memcached's key check)"
        )


def main(out_dir: Path) -> None:
    keys = corpus.keys()
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = Path(tmp)
        (corpus_dir / "keys.json").write_text(json.dumps(keys, ensure_ascii=False), "utf-8")
        (corpus_dir / "servers.json").write_text(json.dumps(corpus.server_lists()), "utf-8")
        live_keys = keys[::10]  # 2,000 of every kind of key
        (corpus_dir / "live_keys.json").write_text(json.dumps(live_keys, ensure_ascii=False))
        for name, behaviors in OPTION_SETS.items():
            options = corpus_dir / "options.json"
            options.write_text(json.dumps(list(behaviors.items())))
            result = subprocess.run(
                [
                    "php",
                    str(HERE / "php_memcached_vectors.php"),
                    str(corpus_dir / "keys.json"),
                    str(corpus_dir / "servers.json"),
                    str(options),
                ],
                capture_output=True,
                check=True,
            )
            placed = json.loads(result.stdout)
            live_check(corpus_dir, options, name, len(live_keys))
            cases = []
            for case in corpus.server_lists():
                weights = case["weights"] or [None] * len(case["hosts"])
                hosts = [(h, p if p is not None else 11211) for h, p in case["hosts"]]
                cases.append(
                    {
                        "name": case["name"],
                        "servers": [
                            record.config_server(h, p, w)
                            for (h, p), w in zip(case["hosts"], weights, strict=True)
                        ],
                        "app_servers": [
                            f"addServer({h!r}, {p}{'' if w is None else f', {w}'})"
                            for (h, p), w in zip(hosts, weights, strict=True)
                        ],
                        "owners": placed["cases"][case["name"]],
                    }
                )
            library = (
                f"php-memcached {placed['version']} (Debian php-memcached "
                f"{debian_version('php-memcached')}), PHP {placed['php']}, libmemcached "
                f"{debian_version('libmemcached11')} (Debian)"
            )
            path = record.write(
                out_dir,
                name,
                client="php-memcached",
                behaviors=behaviors,
                library=library,
                generator="scripts/placement_vectors/php_memcached_vectors.py",
                cases=cases,
                skipped={},
            )
            print(f"{path}: {len(cases)} server lists x {len(keys)} keys")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["OUT_DIR"]))
