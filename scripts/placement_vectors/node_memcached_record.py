"""Records the npm memcached package's placement, per option set (run by
node_memcached_vectors.sh with node and the npm package)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import oracle
import record

# file name suffix → the options the app passes (pools.NAME.behaviors).
VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "-hash-ring": {"compatibility": "hash_ring"},
    "-sha1": {"algorithm": "sha1"},
}


def app_server(host: str, port: int | None) -> str:
    """The string apps give the package: host:port with IPv6 unbracketed (the form its
    connect() splits at the last ':'), or the bare host for the default port."""
    return host if port is None else f"{host}:{port}"


def express(case: dict[str, Any]) -> tuple[list[str], list[str]]:
    app = [app_server(h, p) for h, p in case["hosts"]]
    return app, oracle.config_servers(case, weights=True)


def main(out_dir: Path, library: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = oracle.write_keys(Path(tmp))
        for suffix, options in VARIANTS.items():

            def run(
                app: list[str], case: dict[str, Any], options: dict[str, Any] = options
            ) -> list[int]:
                weights = case["weights"]
                servers: Any = dict(zip(app, weights, strict=True)) if weights else app
                spec = json.dumps({"servers": servers, "options": options})
                return oracle.ask(["node", "node_memcached_oracle.js", str(keys), spec], len(app))

            cases, skipped = oracle.collect(express, run)
            path = record.write(
                out_dir,
                f"node-memcached{suffix}",
                client="node-memcached",
                behaviors=options,
                library=library,
                generator="scripts/placement_vectors/node_memcached_vectors.sh",
                cases=cases,
                skipped=skipped,
            )
            print(f"{path}: {len(cases)} server lists, {len(skipped)} skipped")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
