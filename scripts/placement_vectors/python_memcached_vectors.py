"""python-memcached places the corpus (the oracle for `client: python-memcached`).

``memcache.Client(servers)._get_server(key)`` picks the server; it connects to check the
server is up, so ``_Host.connect`` is replaced by "up" (the corpus' hosts do not exist):
everything else is the library's own code. Weights are given as ``("host:port", weight)``.
The live test (tests/integration/test_client_placement.py) checks the same placement
against real memcached nodes.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import corpus
import memcache
import record


def app_server(host: str, port: int | None, weight: int | None) -> str | tuple[str, int]:
    """The server an app gives memcache.Client ("inet6:[v6]:port" for IPv6)."""
    text = f"inet6:[{host}]" if ":" in host else host
    if port is not None:
        text += f":{port}"
    return text if weight is None else (text, weight)


def main(out_dir: Path) -> None:
    memcache._Host.connect = lambda self: 1  # every server is up; no socket opened
    keys = corpus.keys()
    cases = []
    for case in corpus.server_lists():
        weights = case["weights"] or [None] * len(case["hosts"])
        app_servers = [
            app_server(h, p, w) for (h, p), w in zip(case["hosts"], weights, strict=True)
        ]
        client = memcache.Client(app_servers)
        index = {id(host): i for i, host in enumerate(client.servers)}
        owners = []
        for key in keys:
            server, _ = client._get_server(client._encode_key(key))
            owners.append(index[id(server)])
        cases.append(
            {
                "name": case["name"],
                "servers": [
                    record.config_server(h, p, w)
                    for (h, p), w in zip(case["hosts"], weights, strict=True)
                ],
                "app_servers": [
                    s if isinstance(s, str) else f"({s[0]!r}, {s[1]})" for s in app_servers
                ],
                "owners": owners,
            }
        )
    path = record.write(
        out_dir,
        "python-memcached",
        client="python-memcached",
        behaviors={},
        library=f"python-memcached {version('python-memcached')} (PyPI)",
        generator="scripts/placement_vectors/python_memcached_vectors.py",
        cases=cases,
        skipped={},
    )
    print(f"{path}: {len(cases)} server lists x {len(keys)} keys")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["OUT_DIR"]))
