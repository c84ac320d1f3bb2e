"""Server strings as the apps' clients read them: ``host:port``, ``[v6]:port``, ``host``,
optionally followed by a weight (``"host:port 2"``) for the clients that take one.

A malformed string is refused with what is wrong with it (a scheme, a space where the colon
goes, a port that is not one), so the config error can name the field and the fix."""

from __future__ import annotations

import re

DEFAULT_PORT = 11211
_HOST_SPACE_PORT = re.compile(r"^(\S+)\s+(\d+)$")


def parse_server(server: str, *, listen: bool = False) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` → (host, port), as pymemcache reads them.

    With ``listen`` (an address to bind, such as ``http.listen``) port 0 is allowed: the
    kernel picks a free port."""
    what = "an address" if listen else "a server"
    server = server.strip()
    if not server:
        raise ValueError("empty server" if not listen else "empty address")
    if server.startswith(("unix:", "/")):
        raise ValueError("unix sockets are not supported")
    if "://" in server:
        rest = server.split("://", 1)[1].rstrip("/")
        raise ValueError(f"{server!r}: write {rest!r}, without a scheme")
    if any(ch.isspace() for ch in server):
        spaced = _HOST_SPACE_PORT.match(server)
        if spaced and ":" not in spaced.group(1):
            host, port = spaced.groups()
            raise ValueError(
                f"{server!r}: host and port are separated by ':', not a space (write {host}:{port})"
            )
        raise ValueError(f"{server!r}: {what} is host:port, with no spaces")
    if ":" not in server or server.endswith("]"):
        host, port_text = server, str(DEFAULT_PORT)
    else:
        host, port_text = server.rsplit(":", 1)
    host = host.strip("[]") if host.startswith("[") else host
    if "/" in host or "[" in host or "]" in host:
        raise ValueError(f"{server!r}: {host!r} is not a host name or IP address")
    if not host:
        raise ValueError(f"{server!r}: no host before the ':'")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{server!r}: bad port {port_text!r} (a number, 1-65535)") from None
    lowest = 0 if listen else 1
    if not lowest <= port < 65536:
        raise ValueError(f"{server!r}: port {port} is out of range ({lowest}-65535)")
    return host, port


def split_weight(entry: str) -> tuple[str, int | None]:
    """``"host:port 2"`` → (``"host:port"``, 2); an entry without a weight → (entry, None).
    A weight is placement input only: the node is still named ``host:port``."""
    parts = entry.split()
    if len(parts) != 2:
        return entry, None
    server, weight_text = parts
    if server.endswith("]") or not server.rpartition(":")[2].isdigit():
        if ":" not in server:
            # "127.0.0.1 45381" is a mistyped port far more often than a weight: say so.
            parse_server(entry)
        raise ValueError(
            f"{entry!r}: a server is host:port, with no spaces "
            "(a weight follows the whole host:port: 'host:port WEIGHT')"
        )
    if not weight_text.isdigit() or not 0 < int(weight_text) <= 65535:
        raise ValueError(f"{entry!r}: a weight is a whole number from 1 to 65535")
    return server, int(weight_text)


def node_name(server: str) -> str:
    """The node name of a server entry, weight left out (``[::1]:11211 2`` → ``::1:11211``)."""
    host, port = parse_server(split_weight(server)[0])
    return f"{host}:{port}"
