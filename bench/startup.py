"""Start-up to streaming: daemon process start -> /readyz answers 200, several times.

Each start runs ``python -m invalidator run`` as a fresh process against an idle database
(the first start also creates the slot), polls /readyz every 10 ms until it answers 200, then
stops the daemon with SIGTERM. The figure includes the interpreter's start and the imports.
Figures only, never assertions.
Usage: python bench/startup.py [--starts 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, fmt_num, load, machine_lines, print_table, write_json

SLOT = "startup"
RULES = [{"table": "users", "keys": ["user:{id}"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="how many starts")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    with Bench() as bench:
        machine = machine_lines(bench.cluster)
        for text in machine:
            print(text)
        bench.cluster.execute("CREATE TABLE users (id int PRIMARY KEY, name text, v int)")
        rows = []
        ready: list[float] = []
        cpu: list[float] = []
        codes: list[int | None] = []
        for i in range(args.starts):
            daemon = bench.daemon(SLOT, RULES, create_slot=True)
            daemon.stderr_path = bench.workdir / f"daemon-{SLOT}-{i + 1}.stderr"
            daemon.start()
            ready.append(daemon.wait_ready())
            cpu.append(daemon.cpu_seconds())
            codes.append(daemon.stop())
            daemon.report_stderr(limit=3)
            rows.append(
                [
                    f"start {i + 1}" + (" (creates the slot)" if i == 0 else ""),
                    fmt_num(ready[-1], 3),
                    fmt_num(cpu[-1], 2),
                    str(codes[-1]),
                ]
            )
        print()
        print_table(["start", "to /readyz=200 s", "CPU s by then", "exit code"], rows)
        print(
            f"median {statistics.median(ready):.3f}s, max {max(ready):.3f}s;"
            f" load average at the end (1/5/15 min): {load()}"
        )
        write_json(
            args.json,
            {
                "machine": machine,
                "ready_s": ready,
                "cpu_s": cpu,
                "exit_codes": codes,
                "median_s": statistics.median(ready),
                "max_s": max(ready),
            },
        )


if __name__ == "__main__":
    main()
