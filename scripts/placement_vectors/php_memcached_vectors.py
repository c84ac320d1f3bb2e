"""php-memcached places the corpus (the oracle for `client: php-memcached`): runs
php_memcached_vectors.php with Debian's php-cli and php-memcached, one file per option set.
Options are set with ``setOptions`` before ``addServers``, in the order listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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


def main(out_dir: Path) -> None:
    keys = corpus.keys()
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir = Path(tmp)
        (corpus_dir / "keys.json").write_text(json.dumps(keys, ensure_ascii=False), "utf-8")
        (corpus_dir / "servers.json").write_text(json.dumps(corpus.server_lists()), "utf-8")
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
