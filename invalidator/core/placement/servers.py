"""Server strings as the apps' clients read them: ``host:port``, ``[v6]:port``, ``host``,
optionally followed by a weight (``"host:port 2"``) for the clients that take one."""

from __future__ import annotations

DEFAULT_PORT = 11211


def parse_server(server: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` → (host, port), as pymemcache reads them."""
    server = server.strip()
    if not server:
        raise ValueError("empty server")
    if server.startswith(("unix:", "/")):
        raise ValueError("unix sockets are not supported")
    if "://" in server:
        raise ValueError(f"{server!r}: write host:port, without a scheme")
    if any(ch.isspace() for ch in server):
        raise ValueError(f"{server!r}: a server is host:port, with no spaces")
    if ":" not in server or server.endswith("]"):
        host, port_text = server, str(DEFAULT_PORT)
    else:
        host, port_text = server.rsplit(":", 1)
    host = host.strip("[]") if host.startswith("[") else host
    if "/" in host or "[" in host or "]" in host:
        raise ValueError(f"bad server {server!r} (expected host:port)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {server!r}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad server {server!r} (expected host:port)")
    return host, port


def split_weight(entry: str) -> tuple[str, int | None]:
    """``"host:port 2"`` → (``"host:port"``, 2); an entry without a weight → (entry, None).
    A weight is placement input only: the node is still named ``host:port``."""
    parts = entry.split()
    if len(parts) != 2:
        return entry, None
    server, weight_text = parts
    if server.endswith("]") or not server.rpartition(":")[2].isdigit():
        # "127.0.0.1 45381" is a mistyped port far more often than a weight.
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
