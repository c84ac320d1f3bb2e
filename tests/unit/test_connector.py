"""The socket seam: plain TCP transports, and their failures as the node's own errors."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn
from invalidator.sinks.memcached.channel import NodeChannel
from invalidator.sinks.memcached.connector import (
    PLAIN,
    AddrInfo,
    Resolver,
    TcpConnector,
    TcpTransport,
    Transport,
)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def finish(transport: TcpTransport, timeout: float = 5.0) -> bool:
    select.select([], [transport], [], timeout)
    return transport.finish()


def test_a_transport_connects_without_blocking_and_carries_bytes(
    listener: socket.socket,
) -> None:
    """open() returns at once; finish() completes the connect; send/recv move bytes."""
    transport = PLAIN.open(listener.getsockname())
    peer, _ = listener.accept()
    try:
        assert finish(transport)
        assert transport.send(b"version\r\n") == 9
        assert peer.recv(100) == b"version\r\n"
        peer.sendall(b"VERSION 1.6\r\n")
        select.select([transport], [], [], 5)
        assert transport.recv(100) == b"VERSION 1.6\r\n"
    finally:
        peer.close()
        transport.close()


def test_a_refused_connection_is_an_oserror_naming_the_reason() -> None:
    """Nothing listens: finish() raises OSError whose strerror says the connect failed."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()  # the port is free again: nothing listens there
    transport = PLAIN.open(address)
    try:
        with pytest.raises(OSError) as caught:
            finish(transport)
        assert caught.value.strerror is not None
        assert caught.value.strerror.startswith("cannot connect: ECONNREFUSED")
    finally:
        transport.close()


class SlowDns:
    """A resolver lookup the test releases: stands for a slow or failing DNS server."""

    def __init__(self, answer: list[AddrInfo] | None = None) -> None:
        self.answer = answer
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[AddrInfo]:
        self.calls += 1
        self.release.wait(10)
        if self.answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answer


def resolved(connector: TcpConnector, address: tuple[str, int]) -> Transport:
    """Open once the (released) lookup has answered."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return connector.open(address)
        except BlockingIOError:
            assert time.monotonic() < deadline, "the lookup never answered"
            time.sleep(0.01)


def test_a_name_is_resolved_off_the_caller_and_then_connected(listener: socket.socket) -> None:
    """While the lookup runs, open() answers at once (BlockingIOError); then it connects."""
    port = listener.getsockname()[1]
    dns = SlowDns([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
    connector = TcpConnector(Resolver(dns))
    started = time.monotonic()
    with pytest.raises(BlockingIOError):
        connector.open(("memcached-0.example", port))
    assert time.monotonic() - started < 1.0  # the caller never waits for DNS
    dns.release.set()
    transport = resolved(connector, ("memcached-0.example", port))
    peer, _ = listener.accept()
    try:
        assert finish(transport)  # type: ignore[arg-type]
    finally:
        peer.close()
        transport.close()
    assert dns.calls == 1


def test_an_ip_address_needs_no_lookup(listener: socket.socket) -> None:
    """IP literals connect at once, without the resolver."""
    dns = SlowDns()
    transport = TcpConnector(Resolver(dns)).open(listener.getsockname())
    transport.close()
    assert dns.calls == 0


def test_a_name_that_does_not_resolve_is_an_oserror_not_a_gaierror() -> None:
    """A rescheduled pod's vanished name fails like any unreachable node."""
    dns = SlowDns()
    dns.release.set()
    connector = TcpConnector(Resolver(dns))
    with pytest.raises(OSError) as caught:
        resolved(connector, ("no-such-node.invalid", 11211))
    assert not isinstance(caught.value, (socket.gaierror, BlockingIOError))
    assert caught.value.strerror is not None
    assert caught.value.strerror.startswith("cannot resolve no-such-node.invalid")


def test_a_channel_waits_for_its_lookup_then_reports_a_failure_and_backs_off() -> None:
    """No failure while the name resolves; when it does not, the node's error and backoff."""
    dns = SlowDns()
    errors: list[tuple[str, str]] = []
    channel = NodeChannel(
        "no-such-node.invalid:11211",
        ("no-such-node.invalid", 11211),
        on_error=lambda node, reason: errors.append((node, reason)),
        connector=TcpConnector(Resolver(dns)),
    )
    txn = Txn()
    channel.submit(Operation("delete", "user:1", "default", "public.users"), txn)
    assert channel.ensure_connected() is False
    assert errors == [] and channel.retry_at == 0.0  # still resolving: not a failure
    dns.release.set()
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        channel.ensure_connected()
        time.sleep(0.01)
    assert [node for node, _ in errors] == ["no-such-node.invalid:11211"]
    assert errors[0][1].startswith("cannot resolve no-such-node.invalid")
    assert (channel.pending, txn.outstanding, channel.transport) == (1, 1, None)
    assert channel.retry_at > 0
    assert channel.ensure_connected() is False  # in its backoff: no second attempt
    assert len(errors) == 1
