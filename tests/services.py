"""Throwaway PostgreSQL (with wal2json) and memcached processes for tests, fixtures and demos.

Plain module: no pytest imports. Everything listens on 127.0.0.1 only, on free ports, in
temporary directories that are removed on ``stop()``. Every started service is also stopped
at interpreter exit (``atexit``), so a crashed test run does not leave servers behind.

PostgreSQL refuses to run as root; when this process is root the server side (initdb,
pg_ctl, postgres) runs as an unprivileged system user (``pgci`` by default, created on
first use) through ``runuser``. Client programs (pg_recvlogical) run as the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = [
    "Capture",
    "Decoding",
    "MemcachedNode",
    "MemcachedPool",
    "PgDatabase",
    "PostgresCluster",
    "PostgresStandby",
    "ServiceError",
    "Statement",
    "capture_wal2json",
    "capture_wal2json_many",
    "clean_env",
    "exit_on_sigterm",
    "free_port",
]

LOCALHOST = "127.0.0.1"
PG_USER_ENV = "PGCI_USER"  # name of the unprivileged user used when running as root
DEFAULT_PG_USER = "pgci"
PG_BINDIR_ENV = "PG_BINDIR"  # optional override of the PostgreSQL bin directory
PG_START_TIMEOUT = 30.0
_CLIENT_PROGRAMS = frozenset({"pg_recvlogical", "psql", "pg_isready", "pg_dump", "pg_basebackup"})
_PORT_IN_USE = re.compile(r"address already in use|could not bind|could not create any TCP/IP")


class ServiceError(RuntimeError):
    """A test service could not be started or driven; the first line says why."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_root() -> bool:
    return os.geteuid() == 0


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept)


def _read_tail(path: Path, lines: int = 15) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return ""


def _with_detail(reason: str, detail: str) -> str:
    return f"{reason}\n{detail}" if detail else reason


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process (server, client program or the daemon): ours
    without the variables that could redirect it, libpq's ``PG*`` and the daemon's
    ``INVALIDATOR_*`` overrides, plus ``extra``. The DSNs and config files we hand over
    are the whole truth."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INVALIDATOR_"))}
    return {**kept, **extra}


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_LIVE: dict[int, _Stoppable] = {}
_LIVE_LOCK = threading.Lock()


def _track(service: _Stoppable) -> None:
    with _LIVE_LOCK:
        _LIVE[id(service)] = service


def _untrack(service: _Stoppable) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(id(service), None)


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        services = list(_LIVE.values())
    for service in reversed(services):
        with contextlib.suppress(Exception):
            service.stop()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so cleanup (finally, atexit) still runs.

    Only installs the handler when SIGTERM has its default disposition and we are on the
    main thread; otherwise does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _handler)


def _ensure_user(name: str) -> pwd.struct_passwd:
    """Create (once) an unprivileged system user to run PostgreSQL as; return its entry."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    if not os.path.exists(useradd):
        raise ServiceError(
            "useradd not found (needed to run PostgreSQL as non-root): apt-get install passwd"
        )
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    # 9: the name is already in use (a concurrent run created it first).
    if proc.returncode not in (0, 9):
        raise ServiceError(
            _with_detail(
                f"could not create system user {name!r} for PostgreSQL", _tail(proc.stderr)
            )
        )
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"system user {name!r} still missing after useradd") from None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)) or (0,)


def _find_pg_bindir() -> Path:
    candidates: list[Path] = []
    override = os.environ.get(PG_BINDIR_ENV)
    if override:
        candidates.append(Path(override))
    # Debian layout: /usr/lib/postgresql/<major>/bin. Prefer majors that have wal2json.
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    debian.sort(
        key=lambda p: ((p.parent / "lib" / "wal2json.so").exists(), _version_key(p.parent.name)),
        reverse=True,
    )
    candidates.extend(debian)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql-15"
    )


def _pg_major(bindir: Path) -> str:
    """Best-effort major version for package hints (Debian layout), default 15."""
    name = bindir.parent.name
    return name if name.isdigit() else "15"


def _process_state(pid: int) -> str | None:
    """Linux process state letter (R, S, T, Z, ...) or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ..." -- comm may contain spaces and parentheses.
    return stat.rpartition(")")[2].split()[0]


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PgDatabase:
    """A database inside a PostgresCluster."""

    cluster: PostgresCluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    def execute(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.cluster.execute(query, params, dbname=self.name)

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self.cluster.connect(self.name)


class PostgresCluster:
    """A private PostgreSQL cluster on 127.0.0.1 with ``wal_level=logical`` and trust auth.

    >>> with PostgresCluster() as pg:
    ...     pg.execute("SELECT 1")

    ``tls=True`` starts it with ``ssl = on``: a test CA (``trustme``) signs a server
    certificate for ``localhost`` and ``127.0.0.1`` (``ca_file`` is the CA's certificate for
    clients' ``sslrootcert``), and pg_hba accepts TCP connections only over TLS (``hostssl``;
    ``hostnossl`` is rejected), so whatever connects has proved it speaks TLS. The harness's
    own connections use libpq's default ``sslmode=prefer``.
    """

    def __init__(
        self,
        *,
        bindir: str | os.PathLike[str] | None = None,
        run_as: str | None = None,
        tls: bool = False,
    ):
        self.tls = tls
        self._ca: Any = None  # the trustme.CA of a tls=True cluster
        self._bindir_override = Path(bindir) if bindir is not None else None
        self._bindir: Path | None = None
        self._run_as_name = run_as
        self._run_as: pwd.struct_passwd | None = None
        self._base: Path | None = None
        self._port: int | None = None
        self._running = False

    # -- properties -------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServiceError("PostgreSQL cluster is not started")
        return self._port

    @property
    def running(self) -> bool:
        return self._running

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._dir()

    @property
    def log_file(self) -> Path:
        return self._dir() / "postgres.log"

    @property
    def tls_dir(self) -> Path:
        """Where a ``tls=True`` cluster keeps ``ca.crt``, ``server.crt`` and ``server.key``."""
        return self._dir() / "tls"

    @property
    def ca_file(self) -> Path:
        """The test CA's certificate (PEM) that signed the server's: clients' sslrootcert."""
        if not self.tls:
            raise ServiceError("PostgreSQL cluster was not started with tls=True")
        return self.tls_dir / "ca.crt"

    @property
    def server_key_file(self) -> Path:
        """The server's private key (PEM; owned by the server user, mode 0600)."""
        if not self.tls:
            raise ServiceError("PostgreSQL cluster was not started with tls=True")
        return self.tls_dir / "server.key"

    def dsn(
        self,
        dbname: str = "postgres",
        user: str = "postgres",
        *,
        password: str | None = None,
        host: str | None = None,
        **params: str | os.PathLike[str],
    ) -> str:
        """A ``postgresql://`` URL reaching this cluster over TCP on 127.0.0.1 (or ``host``,
        e.g. ``localhost``), with ``password`` and libpq ``params`` (``sslmode``,
        ``sslrootcert``, ...) when given."""
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        url = f"postgresql://{auth}@{host or self.host}:{self.port}/{quote(dbname, safe='')}"
        if params:
            url += "?" + "&".join(
                f"{name}={quote(os.fspath(value), safe='/')}" for name, value in params.items()
            )
        return url

    def issue_client_cert(self, user: str, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """A client certificate for ``user`` signed by this cluster's CA (the server asks
        for one: ``ssl_ca_file``): ``(cert, key)`` PEM files written to ``directory``, the
        key with mode 0600 as libpq requires; for ``sslcert``/``sslkey``."""
        if self._ca is None:
            raise ServiceError("PostgreSQL cluster was not started with tls=True")
        cert = self._ca.issue_cert(user, common_name=user)
        cert_file, key_file = Path(directory) / f"{user}.crt", Path(directory) / f"{user}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        key_file.touch(mode=0o600)
        os.chmod(key_file, 0o600)
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file

    def tls_dsn(
        self,
        dbname: str = "postgres",
        user: str = "postgres",
        *,
        host: str = "localhost",
        password: str | None = None,
        sslrootcert: str | os.PathLike[str] | None = None,
        sslmode: str = "verify-full",
        **params: str | os.PathLike[str],
    ) -> str:
        """A DSN that verifies this ``tls=True`` cluster's certificate (``verify-full``
        against ``ca_file`` unless another ``sslrootcert`` is given); ``params`` adds libpq
        parameters (``sslcert``, ``sslkey``, ...)."""
        return self.dsn(
            dbname,
            user,
            password=password,
            host=host,
            sslmode=sslmode,
            sslrootcert=sslrootcert if sslrootcert is not None else self.ca_file,
            **params,
        )

    def bin(self, name: str) -> str:
        """Path of a PostgreSQL program (initdb, pg_ctl, pg_recvlogical, psql, ...)."""
        bindir = self._resolve_bindir()
        path = bindir / name
        if not path.is_file():
            major = _pg_major(bindir)
            package = (
                f"postgresql-client-{major}" if name in _CLIENT_PROGRAMS else f"postgresql-{major}"
            )
            raise ServiceError(f"{name} not found in {bindir}: apt-get install {package}")
        return str(path)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        if self._running:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Drop idle replication slots, stop the server (fast mode), remove its directory."""
        base, self._base = self._base, None
        try:
            if self._running:
                with contextlib.suppress(Exception):
                    self.drop_replication_slots()
                self._pg_ctl_stop(base)
        finally:
            self._running = False
            self._port = None
            _untrack(self)
            if base is not None:
                shutil.rmtree(base, ignore_errors=True)

    def restart(self) -> None:
        """Stop the server (fast mode: connections are cut) and start it again on the same
        port and data directory; slots, databases and data survive."""
        if not self._running or self._base is None:
            raise ServiceError("PostgreSQL is not running")
        self._pg_ctl_stop(self._base)
        self._pg_ctl_start()
        self._wait_until_ready()

    def _start(self) -> None:
        self._resolve_bindir()
        for program in ("initdb", "pg_ctl", "postgres"):
            self.bin(program)
        if _is_root():
            if shutil.which("runuser") is None:
                raise ServiceError(
                    "runuser not found (needed to run PostgreSQL as non-root):"
                    " apt-get install util-linux"
                )
            self._run_as = _ensure_user(
                self._run_as_name or os.environ.get(PG_USER_ENV, DEFAULT_PG_USER)
            )
        _track(self)
        self._base = self._make_base_dir()
        self._initdb()
        if self.tls:
            self._make_certificates()
        self._configure_hba()
        last_error: ServiceError | None = None
        for _attempt in range(3):
            self._port = free_port()
            try:
                self._pg_ctl_start()
                break
            except ServiceError as err:
                last_error = err
                if not _PORT_IN_USE.search(str(err).lower()):
                    raise
        else:
            assert last_error is not None
            raise last_error
        self._running = True
        self._wait_until_ready()
        self._check_server()

    def _resolve_bindir(self) -> Path:
        if self._bindir is None:
            if self._bindir_override is not None:
                if not (self._bindir_override / "initdb").is_file():
                    raise ServiceError(
                        f"initdb not found in {self._bindir_override}:"
                        " apt-get install postgresql-15"
                    )
                self._bindir = self._bindir_override
            else:
                self._bindir = _find_pg_bindir()
        return self._bindir

    def _dir(self) -> Path:
        if self._base is None:
            raise ServiceError("PostgreSQL cluster is not started")
        return self._base

    def _make_base_dir(self) -> Path:
        parent: str | None = None
        if self._run_as is not None:
            # The server user must be able to reach the directory; TMPDIR may be private.
            parent = tempfile.gettempdir()
            probe = Path(parent)
            if not all(os.stat(p).st_mode & 0o001 for p in (probe, *probe.parents)):
                parent = "/tmp"
        base = Path(tempfile.mkdtemp(prefix="pgci-", dir=parent))
        if self._run_as is not None:
            os.chown(base, self._run_as.pw_uid, self._run_as.pw_gid)
        os.chmod(base, 0o700)
        return base

    def _server_cmd(self, argv: Sequence[str]) -> list[str]:
        if self._run_as is None:
            return list(argv)
        return ["runuser", "-u", self._run_as.pw_name, "--", *argv]

    def _run_server_tool(
        self, argv: Sequence[str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._server_cmd(argv),
                cwd=self._dir(),
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise ServiceError(
                _with_detail(
                    f"{Path(argv[0]).name} did not finish within {timeout:.0f}s",
                    _read_tail(self.log_file),
                )
            ) from err

    def _initdb(self) -> None:
        proc = self._run_server_tool(
            [
                self.bin("initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            timeout=120,
        )
        if proc.returncode != 0:
            raise ServiceError(
                _with_detail(
                    f"initdb failed (exit {proc.returncode})", _tail(proc.stdout + proc.stderr)
                )
            )

    def _make_certificates(self) -> None:
        """A test CA and a server certificate for localhost and 127.0.0.1 in ``tls_dir``;
        the key owned by the server user with mode 0600 (PostgreSQL refuses it otherwise)."""
        import trustme

        tls = self.tls_dir
        tls.mkdir(mode=0o755)
        ca = self._ca = trustme.CA()
        cert = ca.issue_cert("localhost", LOCALHOST)
        ca.cert_pem.write_to_path(str(tls / "ca.crt"))
        # The leaf, then the CA: the server sends the whole chain.
        (tls / "server.crt").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        key = tls / "server.key"
        key.touch(mode=0o600)
        os.chmod(key, 0o600)
        cert.private_key_pem.write_to_path(str(key))
        if self._run_as is not None:
            for path in (tls, tls / "ca.crt", tls / "server.crt", key):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _configure_hba(self) -> None:
        """Make sure TCP connections from 127.0.0.1 (normal and replication) are trusted;
        with ``tls``, only over TLS (``hostssl``) and plaintext ones rejected."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        active = {
            tuple(line.split())
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        }
        wanted = [
            ("host", "replication", "all", "127.0.0.1/32", "trust"),
            ("host", "all", "all", "127.0.0.1/32", "trust"),
        ]
        if self.tls:
            # The first matching line wins: TLS connections are trusted, plaintext refused.
            wanted = [
                ("hostssl", "replication", "all", "127.0.0.1/32", "trust"),
                ("hostssl", "all", "all", "127.0.0.1/32", "trust"),
                ("hostnossl", "replication", "all", "127.0.0.1/32", "reject"),
                ("hostnossl", "all", "all", "127.0.0.1/32", "reject"),
            ]
        missing = [entry for entry in wanted if entry not in active]
        if missing:
            # Prepend: the first matching line wins in pg_hba.conf.
            head = "".join(" ".join(entry) + "\n" for entry in missing)
            hba.write_text("# added by tests/services.py\n" + head + text)

    def _server_options(self) -> list[str]:
        settings = {
            "port": str(self.port),
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            "fsync": "off",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "unix_socket_directories": str(self.socket_dir),
            "listen_addresses": LOCALHOST,
            "wal_sender_timeout": "60s",
            "max_connections": "100",
            "shared_buffers": "128MB",
            "timezone": "UTC",
        }
        if self.tls:
            settings |= {
                "ssl": "on",
                "ssl_cert_file": str(self.tls_dir / "server.crt"),
                "ssl_key_file": str(self.tls_dir / "server.key"),
                "ssl_ca_file": str(self.tls_dir / "ca.crt"),
            }
        options: list[str] = []
        for name, value in settings.items():
            options += ["-c", f"{name}={value}"]
        return options

    def _pg_ctl_start(self) -> None:
        log = self.log_file
        if log.exists():
            log.unlink()
        proc = self._run_server_tool(
            [
                self.bin("pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(log),
                "-w",
                "-t",
                str(int(PG_START_TIMEOUT)),
                "-o",
                shlex.join(self._server_options()),
            ],
            timeout=PG_START_TIMEOUT + 15,
        )
        if proc.returncode != 0:
            detail = _read_tail(log) or _tail(proc.stdout + proc.stderr)
            # The server may be half-up (pg_ctl timed out); make sure it is gone.
            self._pg_ctl_stop(self._base)
            raise ServiceError(
                _with_detail(f"PostgreSQL did not start on {self.host}:{self.port}", detail)
            )

    def _pg_ctl_stop(self, base: Path | None) -> None:
        if base is None:
            return
        data = base / "data"
        pid_file = data / "postmaster.pid"
        if not pid_file.exists():
            return
        for mode in ("fast", "immediate"):
            with contextlib.suppress(Exception):
                proc = subprocess.run(
                    self._server_cmd(
                        [self.bin("pg_ctl"), "stop", "-D", str(data), "-m", mode, "-w", "-t", "30"]
                    ),
                    cwd=base,
                    env=clean_env(),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=45,
                    check=False,
                )
                if proc.returncode == 0 or not pid_file.exists():
                    return
        # Last resort: kill the postmaster; its children exit when it is gone.
        with contextlib.suppress(Exception):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + PG_START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as err:
                last = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                time.sleep(0.1)
        raise ServiceError(
            _with_detail(
                f"PostgreSQL on {self.host}:{self.port} not answering after "
                f"{PG_START_TIMEOUT:.0f}s ({last})",
                _read_tail(self.log_file),
            )
        )

    def _check_server(self) -> None:
        rows = self.execute("SHOW wal_level")
        if rows[0][0] != "logical":
            raise ServiceError(f"PostgreSQL started with wal_level={rows[0][0]}, expected logical")
        slot = f"pgci_probe_{os.getpid()}"
        try:
            with self.connect() as conn:
                conn.execute(
                    "SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)", [slot]
                )
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        except psycopg.errors.UndefinedFile as err:
            package = f"postgresql-{_pg_major(self._resolve_bindir())}-wal2json"
            raise ServiceError(
                f"wal2json not installed: apt-get install {package} ({str(err).strip()})"
            ) from err

    # -- SQL helpers ------------------------------------------------------------------

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit psycopg connection (use it as a context manager)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10)

    def execute(
        self, query: str, params: Sequence[Any] | None = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement (or several, without params) in autocommit; return its rows."""
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            if cur.description is None:
                return []
            return cur.fetchall()

    def create_database(self, name: str) -> PgDatabase:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)).as_string())
        return PgDatabase(self, name)

    def drop_database(self, name: str) -> None:
        """Drop a database, its replication slots (terminating their consumers) and sessions."""
        self.drop_replication_slots(name, terminate_active=True)
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            .format(sql.Identifier(name))
            .as_string()
        )

    def drop_replication_slot(self, slot: str, *, timeout: float = 10.0) -> None:
        """Drop one slot, waiting for a just-finished consumer to let go of it; missing is ok."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                return
            except psycopg.errors.UndefinedObject:
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def drop_replication_slots(
        self, dbname: str | None = None, *, terminate_active: bool = False
    ) -> list[str]:
        """Drop the cluster's slots (of one database if given); inactive ones unless asked."""
        if terminate_active:
            self.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE active_pid IS NOT NULL AND (%s::text IS NULL OR database = %s)",
                [dbname, dbname],
            )
        rows = self.execute(
            "SELECT slot_name FROM pg_replication_slots"
            " WHERE (%s::text IS NULL OR database = %s) AND (%s OR NOT active)",
            [dbname, dbname, terminate_active],
        )
        dropped = []
        for (slot,) in rows:
            self.drop_replication_slot(slot)
            dropped.append(slot)
        return dropped

    def current_wal_lsn(self, dbname: str = "postgres") -> str:
        return str(self.execute("SELECT pg_current_wal_lsn()::text", dbname=dbname)[0][0])


class PostgresStandby(PostgresCluster):
    """A physical hot standby of ``primary``: ``pg_basebackup -R -X stream`` run as the same
    unprivileged user, streaming from it on its own port of 127.0.0.1. Apps read it on a
    cache miss; ``set_apply_delay`` makes it lag (``recovery_min_apply_delay``), ``promote``
    turns it into a primary on a new timeline (a failover).

    >>> with PostgresStandby(primary, apply_delay_ms=400) as standby:
    ...     standby.wait_for_replay(primary.current_wal_lsn())
    """

    def __init__(self, primary: PostgresCluster, *, apply_delay_ms: int = 0):
        user = primary._run_as.pw_name if primary._run_as is not None else primary._run_as_name
        super().__init__(bindir=primary._resolve_bindir(), run_as=user)
        self.primary = primary
        self._initial_delay_ms = apply_delay_ms

    def _initdb(self) -> None:
        primary = self.primary
        proc = self._run_server_tool(
            [
                self.bin("pg_basebackup"),
                "-h",
                primary.host,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.data_dir),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            timeout=120,
        )
        if proc.returncode != 0:
            raise ServiceError(
                _with_detail(
                    f"pg_basebackup from {primary.host}:{primary.port} failed"
                    f" (exit {proc.returncode})",
                    _tail(proc.stdout + proc.stderr),
                )
            )
        self._write_apply_delay(self._initial_delay_ms)

    def _check_server(self) -> None:
        if not self.execute("SELECT pg_is_in_recovery()")[0][0]:
            raise ServiceError("the standby is not in recovery after start")

    def _write_apply_delay(self, milliseconds: int) -> None:
        """Set ``recovery_min_apply_delay`` in postgresql.auto.conf (not on the command
        line, whose settings a reload could not change)."""
        auto = self.data_dir / "postgresql.auto.conf"
        lines = [
            line
            for line in auto.read_text().splitlines()
            if not line.startswith("recovery_min_apply_delay")
        ]
        lines.append(f"recovery_min_apply_delay = '{milliseconds}ms'")
        auto.write_text("\n".join(lines) + "\n")

    def set_apply_delay(self, milliseconds: int) -> None:
        """Replay each commit no sooner than ``milliseconds`` after it (0: at once)."""
        self._write_apply_delay(milliseconds)
        self.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        want = f"{milliseconds}ms" if milliseconds else "0"
        while time.monotonic() < deadline:
            shown = str(self.execute("SHOW recovery_min_apply_delay")[0][0])
            if shown == want or (milliseconds and shown == f"{milliseconds / 1000:g}s"):
                return
            time.sleep(0.02)
        raise ServiceError(f"recovery_min_apply_delay did not become {milliseconds}ms")

    def replay_lsn(self) -> str:
        return str(self.execute("SELECT pg_last_wal_replay_lsn()::text")[0][0])

    def wait_for_replay(self, lsn: str, timeout: float = 30.0) -> None:
        """Wait until this standby has replayed the primary's WAL up to ``lsn``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])[0][0]
            if done:
                return
            time.sleep(0.02)
        raise ServiceError(f"standby did not replay {lsn} within {timeout:.0f}s")

    def promote(self) -> None:
        """End recovery: this server becomes a primary on a new timeline."""
        proc = self._run_server_tool(
            [self.bin("pg_ctl"), "promote", "-D", str(self.data_dir), "-w", "-t", "60"],
            timeout=75,
        )
        if proc.returncode != 0:
            raise ServiceError(
                _with_detail(
                    f"pg_ctl promote failed (exit {proc.returncode})",
                    _tail(proc.stdout + proc.stderr),
                )
            )


# --------------------------------------------------------------------------- wal2json capture

#: One step of a captured scenario: SQL run on an autocommit connection (several statements
#: without parameters are allowed; without explicit BEGIN/COMMIT they form one transaction),
#: or a callable given that connection.
Statement = str | Callable[[psycopg.Connection[tuple[Any, ...]]], object]


@dataclass(frozen=True)
class Decoding:
    """One logical slot read with pg_recvlogical: plugin options and where to write."""

    slot: str
    options: Mapping[str, str] = field(
        default_factory=lambda: {"format-version": "2", "include-lsn": "1"}
    )
    output: Path | None = None


@dataclass
class Capture:
    lines: list[str]
    stderr: str


def capture_wal2json(
    cluster: PostgresCluster,
    dbname: str,
    slot: str,
    sql_statements: Sequence[Statement],
    options: Mapping[str, str] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    stderr: list[str] | None = None,
) -> list[str]:
    """Run ``sql_statements`` and return what wal2json emitted for them, one string per line.

    The slot (plugin wal2json) is created before the statements run and dropped afterwards.
    ``options`` become ``-o name=value`` (default: format-version=2, include-lsn=1; when given,
    exactly these). ``output`` keeps pg_recvlogical's file there. Lines pg_recvlogical wrote to
    stderr (server WARNINGs, e.g. tables without replica identity) are appended to ``stderr``.
    """
    decoding = Decoding(
        slot,
        dict(options) if options is not None else {"format-version": "2", "include-lsn": "1"},
        Path(output) if output is not None else None,
    )
    result = capture_wal2json_many(cluster, dbname, sql_statements, [decoding], timeout=timeout)
    if stderr is not None:
        stderr.extend(result[slot].stderr.splitlines())
    return result[slot].lines


def capture_wal2json_many(
    cluster: PostgresCluster,
    dbname: str,
    sql_statements: Sequence[Statement],
    decodings: Sequence[Decoding],
    *,
    timeout: float = 60.0,
) -> dict[str, Capture]:
    """Like capture_wal2json, but the same changes read through several slots/option sets."""
    created: list[str] = []
    try:
        for decoding in decodings:
            cluster.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'wal2json')",
                [decoding.slot],
                dbname=dbname,
            )
            created.append(decoding.slot)
        with cluster.connect(dbname) as conn:
            for statement in sql_statements:
                if isinstance(statement, str):
                    conn.execute(statement)
                else:
                    statement(conn)
        endpos = _flush_wal(cluster, dbname)
        return {d.slot: _recvlogical(cluster, dbname, d, endpos, timeout) for d in decodings}
    finally:
        for slot in created:
            with contextlib.suppress(Exception):
                cluster.drop_replication_slot(slot)


def _flush_wal(cluster: PostgresCluster, dbname: str) -> str:
    """Flush all WAL inserted so far and return pg_current_wal_lsn() (the --endpos).

    Records that no commit flushes (non-transactional logical messages in PostgreSQL < 17)
    stay unflushed, invisible to walsenders and beyond pg_current_wal_lsn(). A committed
    transactional message in *another* database flushes them; slots of ``dbname`` never
    decode it.
    """
    other = "template1" if dbname == "postgres" else "postgres"
    with cluster.connect(other) as conn:
        conn.execute("SELECT pg_logical_emit_message(true, 'pgci-flush', '')")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _recvlogical(
    cluster: PostgresCluster, dbname: str, decoding: Decoding, endpos: str, timeout: float
) -> Capture:
    with tempfile.TemporaryDirectory(prefix="pgci-recv-") as tmp:
        path = decoding.output if decoding.output is not None else Path(tmp) / "out.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()  # pg_recvlogical appends
        argv = [
            cluster.bin("pg_recvlogical"),
            "-d",
            cluster.dsn(dbname),
            "--slot",
            decoding.slot,
            "--start",
            "--no-loop",
            "--endpos",
            endpos,
            "-f",
            str(path),
        ]
        for name, value in decoding.options.items():
            argv += ["-o", f"{name}={value}"]
        try:
            proc = subprocess.run(
                argv,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise ServiceError(
                f"pg_recvlogical did not reach endpos {endpos} within {timeout:.0f}s "
                f"(slot {decoding.slot})"
            ) from err
        if proc.returncode != 0:
            raise ServiceError(
                _with_detail(
                    f"pg_recvlogical failed (exit {proc.returncode}, slot {decoding.slot})",
                    _tail(proc.stderr),
                )
            )
        text = path.read_text() if path.exists() else ""
        return Capture(text.splitlines(), proc.stderr)


# --------------------------------------------------------------------------- memcached


class TlsFiles:
    """A test CA (``trustme``) and the PEM files of memcached ``-Z`` nodes and clients.

    Written to a directory readable by ``nobody`` (memcached drops to it as root): the CA
    bundle ``ca.pem``, the node's ``node.pem`` (chain) and ``node.key`` (SANs ``localhost``
    and ``127.0.0.1``), and a client certificate ``client.pem``/``client.key`` for nodes
    that require one (``require_client_cert``). ``rotate()`` rewrites every file in place
    with a new CA (as Kubernetes updates a mounted Secret): restart the nodes to load it.
    """

    def __init__(self, directory: Path | None = None, *, require_client_cert: bool = False):
        try:
            import trustme  # noqa: F401
        except ImportError as err:
            raise ServiceError("trustme is not installed: pip install -e '.[dev]'") from err
        self.dir = Path(directory or tempfile.mkdtemp(prefix="invalidator-tls-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.require_client_cert = require_client_cert
        self.generation = 0
        self.rotate()

    ca_file = property(lambda self: self.dir / "ca.pem")
    cert_file = property(lambda self: self.dir / "node.pem")
    key_file = property(lambda self: self.dir / "node.key")
    client_cert_file = property(lambda self: self.dir / "client.pem")
    client_key_file = property(lambda self: self.dir / "client.key")

    def rotate(self) -> None:
        """A new CA, node and client certificate, written over the same paths."""
        import trustme

        ca = trustme.CA()
        node = ca.issue_cert("localhost", LOCALHOST)
        client = ca.issue_cert("invalidator@example.test")
        files = {
            self.ca_file: ca.cert_pem.bytes(),
            self.cert_file: b"".join(blob.bytes() for blob in node.cert_chain_pems),
            self.key_file: node.private_key_pem.bytes(),
            self.client_cert_file: b"".join(blob.bytes() for blob in client.cert_chain_pems),
            self.client_key_file: client.private_key_pem.bytes(),
        }
        for path, data in files.items():
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data)
            temporary.chmod(0o644)  # memcached runs as nobody
            os.replace(temporary, path)
        self.generation += 1

    def memcached_args(self) -> list[str]:
        options = f"ssl_chain_cert={self.cert_file},ssl_key={self.key_file}"
        if self.require_client_cert:
            options += f",ssl_ca_cert={self.ca_file},ssl_verify_mode=2"
        return ["-Z", "-o", options]

    def client_context(self, *, client_cert: bool | None = None) -> ssl.SSLContext:
        """What an app (or the harness) uses: verifies the node against ``ca.pem``."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.require_client_cert if client_cert is None else client_cert:
            context.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
        return context

    def pool_tls(self, *, client_cert: bool | None = None, **extra: str) -> dict[str, str]:
        """The daemon's ``pools.NAME.tls`` for these files."""
        settings = {"ca_file": str(self.ca_file), **extra}
        if self.require_client_cert if client_cert is None else client_cert:
            settings["cert_file"] = str(self.client_cert_file)
            settings["key_file"] = str(self.client_key_file)
        return settings

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class MemcachedNode:
    """One memcached process on 127.0.0.1 (``-U 0 -m 64 -t 1 -c 1024``); with ``tls``,
    TLS only (``-Z``, the files' certificate); ``args`` are added to its command line
    (e.g. ``-vv``: ``output()`` returns what it logged)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        tls: TlsFiles | None = None,
        args: Sequence[str] = (),
    ):
        self.tls = tls
        self._args = list(args)
        self._fixed_port = port
        self._port: int | None = port
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None  # a TemporaryFile holding memcached's stderr
        self._paused = False

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServiceError("memcached node is not started")
        return self._port

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServiceError("memcached node is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.running else "stopped")
        return f"<MemcachedNode {self.host}:{self._port} {state}>"

    def start(self) -> Self:
        """Start memcached (a free port the first time; the same port afterwards)."""
        if self.running:
            return self
        binary = self._binary or shutil.which("memcached") or "/usr/bin/memcached"
        if not os.path.isfile(binary):
            raise ServiceError("memcached not found: apt-get install memcached")
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            if self._port is None:
                self._port = free_port()
            try:
                self._spawn(binary)
                return self
            except ServiceError as err:
                self.stop()
                if attempt + 1 == attempts or not _PORT_IN_USE.search(str(err).lower()):
                    raise
                self._port = self._fixed_port
        return self  # pragma: no cover

    def _spawn(self, binary: str) -> None:
        argv = [binary, "-l", LOCALHOST, "-p", str(self.port), "-U", "0", "-m", "64", "-t", "1"]
        argv += ["-c", "1024"]
        if self.tls is not None:
            argv += self.tls.memcached_args()
        argv += self._args
        if _is_root():
            argv += ["-u", "nobody"]
        # Kept open while memcached runs (its stderr); closed by stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr
        )
        self._paused = False
        _track(self)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceError(
                    _with_detail(
                        f"memcached exited with code {self._proc.returncode} on {self.server}",
                        self._stderr_tail(),
                    )
                )
            with contextlib.suppress(OSError):
                if self._command(b"version\r\n", timeout=0.5).startswith(b"VERSION "):
                    return
            time.sleep(0.05)
        raise ServiceError(
            _with_detail(f"memcached on {self.server} not answering after 10s", self._stderr_tail())
        )

    def output(self) -> str:
        """Everything memcached wrote to stdout/stderr so far (with ``-vv``: each command)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read().decode(errors="replace"))

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(Exception):
            self._stderr.seek(0)
            return _tail(self._stderr.read().decode(errors="replace"))
        return ""

    def _command(self, command: bytes, timeout: float = 2.0) -> bytes:
        """Send one text-protocol command, return its first response line."""
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((self.host, self.port), timeout=timeout)
            )
            if self.tls is not None:
                context = self.tls.client_context()
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname=self.host))
            sock.sendall(command)
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data

    def stop(self) -> None:
        """Stop memcached (resuming it first if paused); the port is kept for restart()."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if self._paused:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        _untrack(self)

    def restart(self) -> Self:
        """Stop and start again on the same port: every stored item is lost."""
        port = self.port
        self.stop()
        self._port = port
        saved, self._fixed_port = self._fixed_port, port
        try:
            return self.start()
        finally:
            self._fixed_port = saved

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers."""
        if not self.running:
            raise ServiceError("memcached node is not running")
        os.kill(self.pid, signal.SIGSTOP)
        self._paused = True
        self._wait_state(lambda state: state == "T")

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if not self.running:
            raise ServiceError("memcached node is not running")
        os.kill(self.pid, signal.SIGCONT)
        self._paused = False
        self._wait_state(lambda state: state != "T")

    def _wait_state(self, ok: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            state = _process_state(self.pid)
            if state is None or ok(state):
                return
            time.sleep(0.005)

    def flush(self) -> None:
        """flush_all: every item becomes invalid."""
        try:
            reply = self._command(b"flush_all\r\n")
        except OSError as err:
            raise ServiceError(f"flush_all on {self.server} failed: {err}") from err
        if reply.strip() != b"OK":
            raise ServiceError(f"flush_all on {self.server} answered {reply!r}")

    def ensure_running(self) -> None:
        """Resume if paused, start again (same port) if it died or was stopped."""
        if self._paused and self.running:
            self.resume()
        if not self.running:
            if self._port is None:
                self.start()
            else:
                self.restart()


class MemcachedPool:
    """N memcached nodes; ``servers`` lists them as "127.0.0.1:PORT"; with ``tls`` every
    node speaks TLS only, with that certificate."""

    def __init__(self, size: int = 3, *, tls: TlsFiles | None = None):
        if size < 1:
            raise ValueError("size must be >= 1")
        self.tls = tls
        self.nodes: list[MemcachedNode] = [MemcachedNode(tls=tls) for _ in range(size)]

    @property
    def servers(self) -> list[str]:
        return [node.server for node in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[MemcachedNode]:
        return iter(self.nodes)

    def __getitem__(self, index: int) -> MemcachedNode:
        return self.nodes[index]

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def reset(self) -> None:
        """Every node running, unpaused and empty."""
        for node in self.nodes:
            node.ensure_running()
            node.flush()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
