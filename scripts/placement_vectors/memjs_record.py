"""Records memjs's placement (run by memjs_vectors.sh with node and the npm package)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import corpus
import oracle
import record


def app_server(host: str, port: int | None) -> str:
    text = f"[{host}]" if ":" in host else host
    return text if port is None else f"{text}:{port}"


def main(out_dir: Path, library: str) -> None:
    cases: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys = oracle.write_keys(Path(tmp))
        for case in corpus.server_lists():
            if case["weights"] is not None:
                skipped[case["name"]] = "memjs takes no weights"
                continue
            app = [app_server(h, p) for h, p in case["hosts"]]
            done = subprocess.run(
                ["node", "memjs_oracle.js", str(keys), ",".join(app)],
                capture_output=True,
                text=True,
                check=True,
            )
            first, _, rest = done.stdout.partition("\n")
            parsed = [tuple(s) for s in json.loads(first)]
            wanted = [(h, p if p is not None else 11211) for h, p in case["hosts"]]
            if parsed != wanted:
                skipped[case["name"]] = (
                    f"Client.create parses {','.join(app)!r} as {parsed} (IPv6 is split at ':')"
                )
                continue
            owners = [int(x) for x in rest.split()]
            if len(owners) != corpus.KEY_COUNT:
                raise RuntimeError(f"memjs_oracle.js: {len(owners)} answers")
            cases.append(
                {
                    "name": case["name"],
                    "servers": oracle.config_servers(case),
                    "app_servers": app,
                    "owners": owners,
                }
            )
    path = record.write(
        out_dir,
        "memjs",
        client="memjs",
        behaviors={},
        library=library,
        generator="scripts/placement_vectors/memjs_vectors.sh",
        cases=cases,
        skipped=skipped,
    )
    print(f"{path}: {len(cases)} server lists, {len(skipped)} skipped")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
