"""DNS SRV discovery of a pool's memcached nodes (a Kubernetes headless Service).

``_memcached._tcp.memcached.caching.svc.cluster.local`` answers with one SRV record per
ready pod, whose target is the pod's stable name. The node name is
``f"{target}:{port}"`` — the same string apps put in ``MEMCACHED_SERVERS`` — so rendezvous
placement agrees with theirs; the address to connect to is the target's A record.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.resolver

from invalidator.core.placement import parse_server
from invalidator.errors import CacheError


class DiscoveryError(CacheError):
    """A pool's SRV name could not be resolved."""


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """One discovered node: its name as apps write it, and where to connect."""

    name: str
    address: tuple[str, int]


def _resolver(nameservers: Sequence[str] | None, timeout: float) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        hosts = [parse_server(n if ":" in n.strip("[]") else f"{n}:53") for n in nameservers]
        resolver.nameservers = [host for host, _ in hosts]
        resolver.port = hosts[0][1]
    resolver.lifetime = timeout
    return resolver


def resolve(
    srv: str, nameservers: Sequence[str] | None = None, timeout: float = 2.0
) -> list[Member]:
    """The pool's members now, sorted by name; raises DiscoveryError."""
    resolver = _resolver(nameservers, timeout)
    try:
        answer = resolver.resolve(srv, "SRV")
    except (dns.exception.DNSException, OSError) as exc:
        raise DiscoveryError(f"discover {srv}: {exc}") from None
    members: list[Member] = []
    for record in answer:
        target = record.target.to_text().rstrip(".")
        port = int(record.port)
        try:
            ip = str(ipaddress.ip_address(target))
        except ValueError:
            try:
                ip = resolver.resolve(target, "A")[0].to_text()
            except (dns.exception.DNSException, OSError) as exc:
                raise DiscoveryError(f"discover {srv}: target {target}: {exc}") from None
        members.append(Member(f"{target}:{port}", (ip, port)))
    return sorted(members)
