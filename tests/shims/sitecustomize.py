"""A name database for daemon subprocesses in tests (imported at start-up when this
directory is on PYTHONPATH).

With ``PGCI_HOSTS_FILE`` set, ``socket.getaddrinfo`` of a name listed there (``name address``
per line) resolves to that address, and a name under ``.invalid`` that is not listed fails
as an unknown name does. The file is read on every lookup, so a test makes a name appear
— a rescheduled pod's DNS record coming back — by writing one line. Only the name table
is the test's: the daemon's own resolution path (its resolver thread, ``getaddrinfo``,
the errors it maps) runs unchanged.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_PATH = os.environ.get("PGCI_HOSTS_FILE")


def _table() -> dict[str, str]:
    try:
        with open(_PATH or "", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    return {parts[0]: parts[1] for parts in (line.split() for line in lines) if len(parts) >= 2}


if _PATH:
    _real = socket.getaddrinfo

    def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str):
            address = _table().get(host)
            if address is not None:
                host = address
            elif host.endswith(".invalid"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _real(host, *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo
