"""pymemcache's HashClient places the corpus (the oracle for `client: pymemcache`)."""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import corpus
import record
from pymemcache.client.hash import HashClient


def main(out_dir: Path) -> None:
    keys = corpus.keys()
    cases = []
    skipped = {}
    for case in corpus.server_lists():
        if case["weights"] is not None:
            skipped[case["name"]] = "HashClient takes no weights"
            continue
        hosts = [(h, p if p is not None else 11211) for h, p in case["hosts"]]
        if any(p is None for _, p in case["hosts"]):
            skipped[case["name"]] = "HashClient needs host:port (no default port)"
            continue
        app_servers = [(h, p) for h, p in hosts]
        client = HashClient(app_servers, use_pooling=False)
        names = [f"{h}:{p}" for h, p in hosts]
        index = {n: i for i, n in enumerate(names)}
        owners = [index[client.hasher.get_node(k)] for k in keys]
        cases.append(
            {
                "name": case["name"],
                "servers": [record.config_server(h, p) for h, p in hosts],
                "app_servers": [f"{h}:{p}" for h, p in hosts],
                "owners": owners,
            }
        )
    path = record.write(
        out_dir,
        "pymemcache",
        client="pymemcache",
        behaviors={},
        library=f"pymemcache {version('pymemcache')} (PyPI)",
        generator="scripts/placement_vectors/pymemcache_vectors.py",
        cases=cases,
        skipped=skipped,
    )
    print(f"{path}: {len(cases)} server lists x {len(keys)} keys")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
