"""pylibmc places the corpus (the oracle for `client: pylibmc`), one file per behaviour set.

pylibmc is built from source against Debian's libmemcached (scripts/placement_vectors/
install.sh); ``Client.hash(key)`` is libmemcached's ``memcached_generate_hash``: the index
of the server the key goes to, computed without connecting. ``_sort_hosts`` is left to
php-memcached's vectors: with it, that index counts in the sorted list, and only
``getServerByKey`` names the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import _pylibmc
import corpus
import pylibmc
import record

# File name → behaviors, as an app passes them to pylibmc.Client(servers, behaviors=...).
OPTION_SETS: dict[str, dict[str, Any]] = {
    "pylibmc": {},
    "pylibmc-ketama": {"ketama": True},
    "pylibmc-ketama_weighted": {"ketama_weighted": True},
    "pylibmc-consistent-md5": {"distribution": "consistent", "hash": "md5"},
    "pylibmc-consistent-ketama-spy": {"distribution": "consistent ketama spy"},
    "pylibmc-ketama-crc": {"ketama": True, "hash": "crc"},
    **{
        f"pylibmc-hash-{name}": {"hash": name}
        for name in (
            "md5",
            "crc",
            "fnv1_64",
            "fnv1a_64",
            "fnv1_32",
            "fnv1a_32",
            "murmur",
            "jenkins",
        )
    },
}


def app_server(host: str, port: int | None, weight: int | None) -> str:
    """The server string an app gives pylibmc ("host:port:weight", "[v6]:port")."""
    text = f"[{host}]" if ":" in host else host
    if port is not None:
        text += f":{port}"
    elif weight is not None:
        text += ":11211"
    if weight is not None:
        text += f":{weight}"
    return text


def debian_version(package: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    ).stdout.strip()


def main(out_dir: Path) -> None:
    keys = corpus.keys()
    bundled = (Path(pylibmc.__file__).parent.parent / "pylibmc.libs").exists()
    build = "PyPI wheel, its bundled libmemcached" if bundled else "PyPI, built from source"
    library = (
        f"pylibmc {version('pylibmc')} ({build}), libmemcached "
        f"{_pylibmc.libmemcached_version}"
        + ("" if bundled else f" (Debian libmemcached-dev {debian_version('libmemcached-dev')})")
    )
    for name, behaviors in OPTION_SETS.items():
        cases = []
        for case in corpus.server_lists():
            weights = case["weights"] or [None] * len(case["hosts"])
            app_servers = [
                app_server(h, p, w) for (h, p), w in zip(case["hosts"], weights, strict=True)
            ]
            client = pylibmc.Client(app_servers, behaviors=behaviors)
            owners = [client.hash(key) for key in keys]
            if not all(0 <= o < len(app_servers) for o in owners):
                raise SystemExit(f"{name}/{case['name']}: pylibmc returned an index out of range")
            cases.append(
                {
                    "name": case["name"],
                    "servers": [
                        record.config_server(h, p, w)
                        for (h, p), w in zip(case["hosts"], weights, strict=True)
                    ],
                    "app_servers": app_servers,
                    "owners": owners,
                }
            )
        path = record.write(
            out_dir,
            name,
            client="pylibmc",
            behaviors=behaviors,
            library=library,
            generator="scripts/placement_vectors/pylibmc_vectors.py",
            cases=cases,
            skipped={},
        )
        print(f"{path}: {len(cases)} server lists x {len(keys)} keys")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["OUT_DIR"]))
