"""Records gomemcache's placement (run by gomemcache_vectors.sh with the built oracle)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import oracle
import record


def express(case: dict[str, Any]) -> tuple[list[str], list[str]] | str:
    if case["weights"] is not None:
        return "gomemcache takes no weights"
    if any(p is None for _, p in case["hosts"]):
        return "gomemcache needs host:port (ResolveTCPAddr: missing port in address)"
    if oracle.has_hostname(case):
        return "SetServers resolves names through DNS, which these runs never use"
    app = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in case["hosts"]]
    return app, oracle.config_servers(case)


def main(out_dir: Path, program: str, library: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = oracle.write_keys(Path(tmp))
        cases, skipped = oracle.collect(
            express, lambda app, _case: oracle.ask([program, str(keys), *app], len(app))
        )
    path = record.write(
        out_dir,
        "gomemcache",
        client="gomemcache",
        behaviors={},
        library=library,
        generator="scripts/placement_vectors/gomemcache_vectors.sh",
        cases=cases,
        skipped=skipped,
    )
    print(f"{path}: {len(cases)} server lists, {len(skipped)} skipped")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
