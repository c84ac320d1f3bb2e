"""Records dalli's placement (run by dalli_vectors.sh with Debian's ruby-dalli)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import oracle
import record


def express(case: dict[str, Any]) -> tuple[list[str], list[str]]:
    """dalli's server strings: ``host[:port[:weight]]``, IPv6 in brackets."""
    weights = case["weights"] or [None] * len(case["hosts"])
    app = []
    for (host, port), weight in zip(case["hosts"], weights, strict=True):
        text = f"[{host}]" if ":" in host else host
        if port is not None:
            text += f":{port}"
        if weight is not None:
            text += f":{weight}"
        app.append(text)
    return app, oracle.config_servers(case, weights=True)


def main(out_dir: Path, library: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = oracle.write_keys(Path(tmp))
        cases, skipped = oracle.collect(
            express,
            lambda app, _case: oracle.ask(["ruby", "dalli_oracle.rb", str(keys), *app], len(app)),
        )
    path = record.write(
        out_dir,
        "dalli",
        client="dalli",
        behaviors={},
        library=library,
        generator="scripts/placement_vectors/dalli_vectors.sh",
        cases=cases,
        skipped=skipped,
    )
    print(f"{path}: {len(cases)} server lists, {len(skipped)} skipped")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
