"""Verified TLS to memcached nodes (``pools.NAME.tls``): a ``Connector`` beside the plain one.

Every connection is TLS 1.2+ with the node's certificate verified against ``ca_file`` (or
the system's trust store) and its host checked (the server string's hostname or IP, or
``server_name``). There is no plaintext fallback: a handshake that fails is the node's
error like a refused connection, and the channel backs off and tries again.

Non-blocking use (the daemon's channels): ``open`` starts a TCP connect; ``finish``
completes it, wraps the socket and drives ``do_handshake``. While the handshake waits,
``wants_write`` says which readiness it waits for, so the loop selects on READ only when
OpenSSL wants to read (no busy loop on an always-writable socket). After the handshake,
``send``/``recv`` turn OpenSSL's want-read/want-write into ``BlockingIOError`` (they are
``ssl.SSLError``, an ``OSError`` but not a ``BlockingIOError``), so the channel's usual
"not now" path handles them; a send that wanted to write is retried with the same bytes,
as OpenSSL requires (the channel keeps its ``outbuf`` until it is taken). ``recv`` reads
until OpenSSL has nothing buffered (``pending()``), because decrypted bytes held inside
the SSL object never make the socket readable again.

Certificate rotation: each ``open`` checks (at most every ``check_every`` seconds) the
files' mtime, size and inode; if one changed, the context is rebuilt and used for new
connections. Open connections keep theirs. A rebuild that fails (a half-written file) keeps
the previous context and is tried again at the next check.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping

from invalidator.config import Config
from invalidator.config.pools import TlsConfig
from invalidator.core.placement import node_name
from invalidator.errors import ConfigError
from invalidator.sinks.memcached.connector import PLAIN, Connector, TcpTransport, Transport

CHECK_EVERY = 2.0  # seconds between looks at the certificate files' mtimes
_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def _ssl_text(exc: BaseException) -> str:
    """OpenSSL's message without the ``(_ssl.c:NNNN)`` suffix."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    return _SSL_LOCATION.sub("", text) or type(exc).__name__


def handshake_error(exc: OSError) -> OSError:
    """A failed handshake as an ``OSError`` whose ``strerror`` says why."""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        reason = f"connection closed by the server ({_ssl_text(exc)})"
    elif isinstance(exc, ssl.SSLError):
        reason = _ssl_text(exc)
    else:
        reason = exc.strerror or str(exc)
    return OSError(errno.EPROTO, f"TLS handshake failed: {reason}")


def build_context(settings: TlsConfig, where: str = "tls") -> ssl.SSLContext:
    """A client context for ``settings``; a file that cannot be used is a ``ConfigError``
    naming the field and path (never the file's content)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if settings.ca_file is not None:
            context.load_verify_locations(cafile=settings.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except OSError as exc:
        detail = _ssl_text(exc) if isinstance(exc, ssl.SSLError) else exc.strerror
        raise ConfigError(f"{where}.ca_file: cannot load {settings.ca_file}: {detail}") from None
    if settings.cert_file is not None:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except OSError as exc:
            detail = _ssl_text(exc) if isinstance(exc, ssl.SSLError) else exc.strerror
            raise ConfigError(
                f"{where}.cert_file/key_file: cannot load {settings.cert_file} and "
                f"{settings.key_file}: {detail}"
            ) from None
    return context


class TlsTransport:
    """One node connection: TCP connect, then the TLS handshake, then records."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, server_name: str):
        self._tcp = TcpTransport(address)
        self._context = context
        self._server_name = server_name
        self._ssl: ssl.SSLSocket | None = None
        self._ready = False
        self._want_write = True  # connecting: writable means connected

    @property
    def wants_write(self) -> bool:
        """While ``finish`` is False: whether it waits for the socket to be writable (else
        only readable)."""
        return self._want_write

    def fileno(self) -> int:
        return self._ssl.fileno() if self._ssl is not None else self._tcp.fileno()

    def finish(self) -> bool:
        if self._ready:
            return True
        if self._ssl is None:
            self._tcp.finish()  # raises if the connect failed
            try:
                self._tcp.sock.getpeername()
            except OSError:
                return False  # still connecting
            self._ssl = self._context.wrap_socket(
                self._tcp.sock, server_hostname=self._server_name, do_handshake_on_connect=False
            )
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._want_write = False
            return False
        except ssl.SSLWantWriteError:
            self._want_write = True
            return False
        except OSError as exc:
            raise handshake_error(exc) from None
        self._ready = True
        self._want_write = True
        return True

    def send(self, data: bytes | bytearray | memoryview) -> int:
        assert self._ssl is not None and self._ready
        try:
            return self._ssl.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            # Not taken: the caller passes the same bytes again when writable.
            raise BlockingIOError(errno.EAGAIN, "TLS: not now") from None
        except ssl.SSLError as exc:
            raise OSError(errno.EPROTO, f"TLS: {self._alert() or _ssl_text(exc)}") from None

    def _alert(self) -> str | None:
        """Why the server closed, if it said so: under TLS 1.3 a refused client certificate
        is an alert the server sends after the handshake, so a send may meet the closed
        connection (EOF) while the alert, which says why, still waits to be read."""
        assert self._ssl is not None
        try:
            self._ssl.recv(1)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError):
            return None
        except ssl.SSLError as exc:
            return _ssl_text(exc)
        except OSError:
            return None
        return None

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes (more if OpenSSL still holds decrypted bytes: nothing may
        stay buffered where the socket will not signal it)."""
        assert self._ssl is not None and self._ready
        sock = self._ssl
        chunks: list[bytes] = []
        total = 0
        while total < size or sock.pending():
            try:
                data = sock.recv(max(size - total, sock.pending()))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as exc:
                if chunks:
                    break  # deliver what arrived; the error comes again on the next read
                raise OSError(errno.EPROTO, f"TLS: {_ssl_text(exc)}") from None
            if not data:
                if chunks:
                    break  # the close is seen on the next read (EOF stays readable)
                return b""
            chunks.append(data)
            total += len(data)
        if not chunks:
            raise BlockingIOError(errno.EAGAIN, "TLS: no record yet")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        if self._ssl is not None:
            self._ssl.close()
        self._tcp.close()


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TlsConnector:
    """Opens verified TLS connections to a pool's nodes; re-reads rotated certificates."""

    def __init__(
        self,
        settings: TlsConfig,
        *,
        where: str = "tls",
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
        on_reload: Callable[[str, str | None], None] | None = None,
    ):
        self.settings = settings
        self.where = where
        self.check_every = check_every
        self.clock = clock
        # (what, error): "reloaded" with None, or "reload failed" with the reason
        self.on_reload = on_reload or (lambda what, error: None)
        self._files = tuple(
            f for f in (settings.ca_file, settings.cert_file, settings.key_file) if f is not None
        )
        self._stamps = self._stat()
        self.context = build_context(settings, where)
        self._checked = clock()
        self.reloads = 0
        self.reload_error: str | None = None

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stamp(f) for f in self._files)

    def current(self) -> ssl.SSLContext:
        """The context for a new connection (rebuilt if the files changed)."""
        now = self.clock()
        if self._files and now - self._checked >= self.check_every:
            self._checked = now
            stamps = self._stat()
            if stamps != self._stamps:
                try:
                    context = build_context(self.settings, self.where)
                except ConfigError as exc:
                    # Keep the previous context; the stamps stay old, so retry next time.
                    if str(exc) != self.reload_error:
                        self.reload_error = str(exc)
                        self.on_reload("reload failed", str(exc))
                else:
                    self.context = context
                    self._stamps = stamps
                    self.reloads += 1
                    self.reload_error = None
                    self.on_reload("reloaded", None)
        return self.context

    def server_name(self, address: tuple[str, int]) -> str:
        return self.settings.server_name or address[0]

    def open(self, address: tuple[str, int]) -> Transport:
        return TlsTransport(address, self.current(), self.server_name(address))

    def open_blocking(self, address: tuple[str, int], timeout: float) -> socket.socket:
        context = self.current()
        sock = PLAIN.open_blocking(address, timeout)
        try:
            return context.wrap_socket(sock, server_hostname=self.server_name(address))
        except OSError as exc:
            sock.close()
            raise handshake_error(exc) from None


def _reporter(
    hook: Callable[[str, str, str | None], None] | None, pool: str
) -> Callable[[str, str | None], None] | None:
    if hook is None:
        return None
    return lambda what, error: hook(pool, what, error)


def pool_connectors(
    config: Config,
    default: Connector = PLAIN,
    on_reload: Callable[[str, str, str | None], None] | None = None,
) -> dict[str, Connector]:
    """Pool name → its connector: TLS where the pool says ``tls``, else ``default``.
    Raises ``ConfigError`` when a certificate file cannot be used."""
    connectors: dict[str, Connector] = {}
    for name, pool in config.pools.items():
        if pool.tls is None:
            connectors[name] = default
            continue
        connectors[name] = TlsConnector(
            pool.tls, where=f"pools.{name}.tls", on_reload=_reporter(on_reload, name)
        )
    return connectors


def node_connectors(
    config: Config, pools: Mapping[str, Connector] | None = None
) -> dict[str, Connector]:
    """Static node name → its pool's connector (a node in two pools has the same TLS
    settings in both: the config checks it)."""
    by_pool = pools if pools is not None else pool_connectors(config)
    return {
        node_name(server): by_pool[name]
        for name, pool in config.pools.items()
        for server in pool.servers
    }
