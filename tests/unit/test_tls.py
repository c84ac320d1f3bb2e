"""`pools.NAME.tls` without services: config validation, the TLS transport's want-read /
want-write handling and buffered records against an in-process TLS server, and the
connector's re-reading of rotated certificate files."""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from invalidator.config import parse_config
from invalidator.config.build import node_addresses, static_router
from invalidator.config.env import EnvOverrides
from invalidator.config.pools import TlsConfig
from invalidator.errors import ConfigError
from invalidator.sinks.memcached.channel import NodeChannel
from invalidator.sinks.memcached.connector import PLAIN
from invalidator.sinks.memcached.nodeset import NodeSet
from invalidator.sinks.memcached.tls import (
    TlsConnector,
    TlsTransport,
    node_connectors,
    pool_connectors,
)

RULES = [{"table": "users", "keys": ["user:{id}"]}]


def config(pools: dict[str, Any]) -> Any:
    return parse_config({"pools": pools, "rules": RULES}, "config.yaml", EnvOverrides())


def config_error(pools: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        config(pools)
    return str(caught.value)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(tmp_path: Path, ca: trustme.CA) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


# ----------------------------------------------------------------------------- config


def test_tls_settings_load_and_give_the_pool_a_tls_connector(ca_file: Path) -> None:
    loaded = config({"default": {"servers": ["127.0.0.1:11211"], "tls": {"ca_file": str(ca_file)}}})
    assert loaded.pools["default"].tls == TlsConfig(ca_file=str(ca_file))
    assert isinstance(node_connectors(loaded)["127.0.0.1:11211"], TlsConnector)


def test_cert_file_without_key_file_is_a_config_error(ca_file: Path) -> None:
    message = config_error(
        {"default": {"servers": ["a:1"], "tls": {"ca_file": str(ca_file), "cert_file": "x"}}}
    )
    assert "pools.default.tls: give both cert_file and key_file" in message


def test_an_unreadable_file_names_the_field_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    message = config_error({"default": {"servers": ["a:1"], "tls": {"ca_file": str(missing)}}})
    assert f"ca_file: cannot read {missing}: No such file or directory" in message


def test_an_unknown_tls_field_is_an_error(ca_file: Path) -> None:
    message = config_error(
        {"default": {"servers": ["a:1"], "tls": {"ca_file": str(ca_file), "verify": False}}}
    )
    assert "pools.default.tls.verify: unknown field" in message


def test_a_node_in_two_pools_with_different_tls_is_a_config_error(ca_file: Path) -> None:
    message = config_error(
        {
            "default": {"servers": ["a:1"], "tls": {"ca_file": str(ca_file)}},
            "other": {"servers": ["a:1"]},
        }
    )
    assert "node a:1 is in pools 'default' and 'other' with different tls settings" in message
    same = {"ca_file": str(ca_file)}
    config(
        {"default": {"servers": ["a:1"], "tls": same}, "other": {"servers": ["a:1"], "tls": same}}
    )


def test_a_file_that_is_not_a_certificate_is_named_never_quoted(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("SECRET-CONTENT not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        TlsConnector(TlsConfig(ca_file=str(bogus)), where="pools.default.tls")
    assert str(caught.value).startswith(f"pools.default.tls.ca_file: cannot load {bogus}")
    assert "SECRET" not in str(caught.value)


# ----------------------------------------------------------------------------- a TLS server


class Server:
    """One TLS connection served in a thread, step by step, by the test."""

    def __init__(self, ca: trustme.CA):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.context)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.address: tuple[str, int] = self.listener.getsockname()
        self.conn: ssl.SSLSocket | None = None
        self.handshake = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def serve_handshake(self) -> None:
        """Accept at once; hold the handshake until ``handshake`` is set."""

        def run() -> None:
            try:
                raw, _ = self.listener.accept()
                self.handshake.wait(10)
                self.conn = self.context.wrap_socket(raw, server_side=True)
            except BaseException as exc:
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def server(ca: trustme.CA) -> Iterator[Server]:
    srv = Server(ca)
    yield srv
    srv.close()


def connected(server: Server, ca_file: Path) -> TlsTransport:
    """A transport whose handshake with ``server`` is complete."""
    server.serve_handshake()
    server.handshake.set()
    transport = TlsConnector(TlsConfig(ca_file=str(ca_file))).open(server.address)
    assert isinstance(transport, TlsTransport)
    for _ in range(100):
        writers = [transport] if transport.wants_write else []
        select.select([transport], writers, [], 2)
        if transport.finish():
            break
    else:
        pytest.fail("handshake did not complete")
    assert server.done.wait(5) and server.conn is not None, server.error
    return transport


def test_a_handshake_waiting_for_the_server_waits_for_read_only(
    server: Server, ca_file: Path
) -> None:
    """After the ClientHello, finish() is False and wants_write False: the loop selects on
    READ only (no spinning on a writable socket); it completes on readable events."""
    server.serve_handshake()
    transport = TlsConnector(TlsConfig(ca_file=str(ca_file))).open(server.address)
    try:
        assert transport.wants_write  # connecting
        select.select([], [transport], [], 2)
        assert transport.finish() is False  # ClientHello sent; the server holds its reply
        assert transport.wants_write is False
        assert select.select([transport], [], [], 0.2)[0] == []  # nothing to do: no spin
        server.handshake.set()
        turns = 0
        while not transport.finish():
            turns += 1
            assert turns < 20
            writers = [transport] if transport.wants_write else []
            select.select([transport], writers, [], 2)
        assert server.done.wait(5) and server.error is None
    finally:
        transport.close()


def test_a_wrong_host_fails_the_handshake_with_a_readable_reason(
    server: Server, ca_file: Path
) -> None:
    server.serve_handshake()
    server.handshake.set()
    transport = TlsConnector(TlsConfig(ca_file=str(ca_file), server_name="db.example")).open(
        server.address
    )
    try:
        with pytest.raises(OSError) as caught:
            for _ in range(100):
                writers = [transport] if transport.wants_write else []
                select.select([transport], writers, [], 2)
                transport.finish()
        assert caught.value.strerror == (
            "TLS handshake failed: certificate verify failed: "
            "Hostname mismatch, certificate is not valid for 'db.example'."
        )
    finally:
        transport.close()


def test_send_that_would_block_is_blocking_io_and_the_same_bytes_go_again_in_order(
    server: Server, ca_file: Path
) -> None:
    """The server reads nothing until the client is blocked: send raises BlockingIOError
    (the channel's "not now"); passing the same bytes again later keeps the stream exact."""
    transport = connected(server, ca_file)
    assert server.conn is not None
    payload = b"".join(b"delete key:%08d\r\n" % i for i in range(200_000))  # ~4 MB
    outbuf = bytearray(payload)
    blocked = 0
    received = bytearray()

    def read_all() -> None:
        assert server.conn is not None
        while len(received) < len(payload):
            data = server.conn.recv(65536)
            if not data:
                break
            received.extend(data)

    reader: threading.Thread | None = None
    try:
        while outbuf:
            try:
                sent = transport.send(outbuf[:262144])
            except BlockingIOError:
                blocked += 1
                if reader is None:
                    reader = threading.Thread(target=read_all, daemon=True)
                    reader.start()
                select.select([], [transport], [], 2)
                continue
            del outbuf[:sent]
        assert reader is not None and blocked >= 1
        reader.join(10)
        assert bytes(received) == payload
    finally:
        transport.close()


def test_recv_leaves_no_decrypted_bytes_inside_the_ssl_object(
    server: Server, ca_file: Path
) -> None:
    """A record larger than the read size: recv returns all of it (OpenSSL's pending()
    bytes never wait for a readable socket that will not come), then BlockingIOError."""
    transport = connected(server, ca_file)
    assert server.conn is not None
    reply = b"DELETED\r\n" * 1500  # one 13.5 kB record
    server.conn.sendall(reply)
    try:
        got = bytearray()
        while len(got) < len(reply):
            select.select([transport], [], [], 2)
            try:
                got += transport.recv(100)
            except BlockingIOError:
                continue
            assert transport._ssl is not None and transport._ssl.pending() == 0
        assert bytes(got) == reply
        with pytest.raises(BlockingIOError):
            transport.recv(100)
    finally:
        transport.close()


def test_a_channel_over_tls_waits_for_read_during_the_handshake(
    server: Server, ca_file: Path
) -> None:
    """NodeChannel.wants_write follows the transport while connecting (the loop's select
    timeout is 0 whenever a channel wants to write: it must not while the server is
    thinking)."""
    server.serve_handshake()
    channel = NodeChannel(
        "127.0.0.1:1",
        server.address,
        on_error=lambda node, reason: None,
        connector=TlsConnector(TlsConfig(ca_file=str(ca_file))),
    )
    try:
        assert channel.ensure_connected() and channel.wants_write
        assert channel.transport is not None
        select.select([], [channel.transport], [], 2)
        channel.on_writable()  # connected; ClientHello sent
        assert channel.connecting and not channel.wants_write
        server.handshake.set()
    finally:
        channel.close()


# ----------------------------------------------------------------------------- rotation


def test_changed_files_rebuild_the_context_for_new_connections_only(
    tmp_path: Path, ca_file: Path
) -> None:
    """Within check_every nothing is looked at; then a changed file rebuilds the context;
    a file that cannot be loaded (half written) keeps the previous one until it can."""
    now = [0.0]
    events: list[tuple[str, str | None]] = []
    connector = TlsConnector(
        TlsConfig(ca_file=str(ca_file)),
        clock=lambda: now[0],
        check_every=2.0,
        on_reload=lambda what, error: events.append((what, error)),
    )
    first = connector.current()
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    now[0] = 1.0
    assert connector.current() is first  # not checked yet
    now[0] = 2.5
    second = connector.current()
    assert second is not first and connector.reloads == 1
    ca_file.write_text("-----BEGIN CERTIFICATE-----\ntruncat")  # a half-written file
    now[0] = 5.0
    assert connector.current() is second
    assert events[-1][0] == "reload failed" and "cannot load" in str(events[-1][1])
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    now[0] = 7.5
    assert connector.current() is not second and connector.reloads == 2
    assert events[0] == ("reloaded", None) and events[-1] == ("reloaded", None)


# ----------------------------------------------------------------------------- wiring


def test_each_pool_s_nodes_get_that_pool_s_connector_static_and_discovered(
    ca_file: Path,
) -> None:
    """NodeSet gives a node its pool's connector, also for nodes a discovered pool adds
    later (Membership calls ensure with the pool)."""
    loaded = config(
        {
            "secure": {"servers": ["a:1"], "tls": {"ca_file": str(ca_file)}},
            "default": {"servers": ["b:1"]},
        }
    )
    connectors = pool_connectors(loaded)
    nodes = NodeSet(
        static_router(loaded).placements,
        node_addresses(loaded),
        max_queue={"secure": 100, "default": 100},
        on_error=lambda node, reason: None,
        on_event=lambda node, event, count, message: None,
        connectors=connectors,
    )
    assert isinstance(nodes.channels["a:1"].connector, TlsConnector)
    assert nodes.channels["b:1"].connector is PLAIN
    nodes.ensure("c:1", ("c", 1), 100, "secure")  # a discovered member of "secure"
    assert nodes.channels["c:1"].connector is connectors["secure"]
