"""Coverage data from subprocesses that end by SIGKILL: `make coverage` installs this hook.

`make coverage` copies this file into the venv as ``_coverage_autosave.py`` with a
``zz_coverage_autosave.pth`` that imports it only when COVERAGE_PROCESS_CONFIG is set, i.e. in a
Python subprocess that coverage's own ``a1_coverage.pth`` (``patch = subprocess``) has just
started measuring; everywhere else (``make test``, pytest's own process) it is never imported.

Coverage saves a process's data at exit and, with ``sigterm = true``, on SIGTERM. Most end-to-end
tests stop their daemon with SIGKILL (tests/daemon_process.py: ``stop()``), which nothing can
catch; without this hook everything such a daemon ran would be lost. So a background thread saves
every COVERAGE_SAVE_INTERVAL seconds (default 0.2). Coverage's collector flush is thread-safe
(it snapshots and removes only what it wrote) and a save with nothing new since the last one is a
no-op; a save with new data costs ~5-30 ms. What runs in the last interval before a SIGKILL is
still lost, and a fixture's daemon often lives under a second and is killed right after the test
saw its effect, so its last steps may be missing: their coverage is a lower bound that can vary a
little between runs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading


def _start() -> None:
    import coverage

    cov = coverage.Coverage.current()
    if cov is None:
        return
    interval = float(os.environ.get("COVERAGE_SAVE_INTERVAL", "0.2"))
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # never disturb the measured process
                cov.save()

    thread = threading.Thread(target=loop, name="coverage-autosave", daemon=True)
    thread.start()

    def finish() -> None:
        # Registered after coverage's own atexit handler, so it runs before it: the final save
        # happens with this thread stopped.
        stop.set()
        thread.join(5)

    atexit.register(finish)


if os.environ.get("COVERAGE_PROCESS_CONFIG"):
    _start()
