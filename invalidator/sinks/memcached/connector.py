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
import socket
from typing import Protocol


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


class TcpTransport:
    """Plain TCP with TCP_NODELAY (a request behind an unanswered one must not wait for
    a delayed ACK)."""

    def __init__(self, address: tuple[str, int]):
        host, port = address
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            # A name that does not resolve (a rescheduled pod, a typo): this node's error.
            raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host}: {exc.strerror}") from None
        family, kind, proto, _, target = infos[0]
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

    def open(self, address: tuple[str, int]) -> Transport:
        return TcpTransport(address)

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
