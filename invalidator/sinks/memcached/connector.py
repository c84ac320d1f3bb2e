"""How a node's bytes travel: the seam between a channel's logic and its socket.

A ``Connector`` opens a ``Transport`` to an address, non-blocking for the daemon's
channels or blocking for the command-line client. The channel only calls ``finish``
(until the connection, and any handshake, is complete; ``wants_write`` says which
readiness it waits for meanwhile), ``send``, ``recv``, ``fileno`` and ``close``: the TLS
transport (``tls.py``) slots in here without touching the channel's logic.
Every failure leaves as ``OSError`` with a readable ``strerror``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class Transport(Protocol):
    """One connection to one node."""

    def fileno(self) -> int: ...

    def finish(self) -> bool:
        """Progress the connection (and handshake); True once ready to carry requests.
        Raises OSError if it failed."""
        ...

    @property
    def wants_write(self) -> bool:
        """While ``finish`` is False: True when it waits for the socket to be writable
        (a connect, a handshake with bytes to send), False when only readable (a TLS
        handshake waiting for the server): the loop must not spin on a writable socket."""
        ...

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Bytes taken (raises BlockingIOError when none fit now)."""
        ...

    def recv(self, size: int) -> bytes:
        """Bytes received; b"" when the server closed (BlockingIOError: none yet)."""
        ...

    def close(self) -> None: ...


class Connector(Protocol):
    """Opens transports to a pool's nodes."""

    def open(self, address: tuple[str, int]) -> Transport:
        """Start a non-blocking connection (raises OSError if it cannot even start)."""
        ...

    def open_blocking(self, address: tuple[str, int], timeout: float) -> socket.socket:
        """A connected blocking socket with ``timeout`` (raises OSError)."""
        ...


def _error(code: int, what: str) -> OSError:
    return OSError(code, f"{what}: {errno.errorcode.get(code, str(code))}")


AddrInfo = tuple[Any, Any, int, str, Any]
Lookup = Callable[[str, int], list[AddrInfo]]


def _getaddrinfo(host: str, port: int) -> list[AddrInfo]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class Resolver:
    """Name lookups off the event loop: a daemon thread asks the system resolver, and
    ``resolve`` answers at once — the address, ``BlockingIOError`` while the lookup is in
    progress, or ``OSError`` naming the host when it failed. A slow DNS server then delays
    only the node whose name it is, never the loop (every other node, the WAL stream), nor
    the process's exit. Answers are kept for ``ttl`` seconds, failures too (the channel's
    backoff retries)."""

    def __init__(self, lookup: Lookup = _getaddrinfo, ttl: float = 5.0):
        self._lookup = lookup
        self._ttl = ttl
        self._lock = threading.Lock()
        self._pending: set[tuple[str, int]] = set()
        self._done: dict[tuple[str, int], AddrInfo | OSError] = {}
        self._answers: dict[tuple[str, int], tuple[float, AddrInfo | OSError]] = {}

    def resolve(self, host: str, port: int) -> AddrInfo:
        key = (host, port)
        now = time.monotonic()
        answer = self._answers.get(key)
        if answer is None or answer[0] < now:
            answer = self._collect(key, now)
        result = answer[1]
        if isinstance(result, OSError):
            raise OSError(result.errno, result.strerror)
        return result

    def _collect(self, key: tuple[str, int], now: float) -> tuple[float, AddrInfo | OSError]:
        with self._lock:
            result = self._done.pop(key, None)
            if result is None:
                if key not in self._pending:
                    self._pending.add(key)
                    threading.Thread(
                        target=self._run, args=(key,), name="resolve", daemon=True
                    ).start()
                raise BlockingIOError(errno.EINPROGRESS, f"resolving {key[0]}")
        answer = (now + self._ttl, result)
        self._answers[key] = answer
        return answer

    def _run(self, key: tuple[str, int]) -> None:
        result: AddrInfo | OSError
        try:
            result = self._lookup(*key)[0]
        except OSError as exc:
            # A name that does not resolve (a rescheduled pod, a typo): this node's error.
            reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
            result = OSError(errno.EHOSTUNREACH, f"cannot resolve {key[0]}: {reason}")
        with self._lock:
            self._pending.discard(key)
            self._done[key] = result


RESOLVER = Resolver()


def _target(host: str, port: int, resolver: Resolver) -> AddrInfo:
    """An IP literal needs no lookup (and no thread); a name goes through ``resolver``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return resolver.resolve(host, port)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, socket.SOCK_STREAM, 0, "", (host, port)


class TcpTransport:
    """Plain TCP with TCP_NODELAY (a request behind an unanswered one must not wait for
    a delayed ACK). Raises BlockingIOError while the node's name is being resolved."""

    def __init__(self, address: tuple[str, int], resolver: Resolver = RESOLVER):
        host, port = address
        family, kind, proto, _, target = _target(host, port, resolver)
        self.sock = socket.socket(family, kind, proto)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = self.sock.connect_ex(target)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.sock.close()
            raise _error(code, "cannot connect")
        self._connected = code == 0

    @property
    def wants_write(self) -> bool:
        return True  # a connect completes when the socket becomes writable

    def fileno(self) -> int:
        return self.sock.fileno()

    def finish(self) -> bool:
        if not self._connected:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise _error(code, "cannot connect")
            self._connected = True
        return True

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return self.sock.send(data)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


class TcpConnector:
    """The plaintext connector (the default)."""

    def __init__(self, resolver: Resolver = RESOLVER):
        self.resolver = resolver

    def open(self, address: tuple[str, int]) -> Transport:
        return TcpTransport(address, self.resolver)

    def open_blocking(self, address: tuple[str, int], timeout: float) -> socket.socket:
        try:
            sock = socket.create_connection(address, timeout=timeout)
        except socket.gaierror as exc:
            raise OSError(
                errno.EHOSTUNREACH, f"cannot resolve {address[0]}: {exc.strerror}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


PLAIN = TcpConnector()
