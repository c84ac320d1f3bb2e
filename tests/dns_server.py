"""A real DNS server (dnsmasq) on loopback serving a headless Service's SRV records."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dns.exception
import dns.resolver

from tests.services import ServiceError, free_port

SRV_NAME = "_memcached._tcp.memcached.caching.svc.cluster.local"


class DnsServer:
    """dnsmasq answering ``SRV_NAME`` with ``target:port`` records; ``set`` changes them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, records: list[tuple[str, int]]) -> None:
        """Serve exactly these (target, port) SRV records; targets resolve to 127.0.0.1."""
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-negcache",
            "local-ttl=0",
            "user=root",
            "pid-file=",
        ]
        for target, port in records:
            lines.append(f"srv-host={SRV_NAME},{target},{port}")
            lines.append(f"host-record={target},127.0.0.1")
        conf = self.dir / "dnsmasq.conf"
        conf.write_text("\n".join(lines) + "\n")
        # dnsmasq reads srv-host only at start: restart it on the same port.
        self.stop()
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-k", f"--conf-file={conf}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise ServiceError("dnsmasq not installed: apt-get install dnsmasq-base") from None
        self._wait(len(records))

    def _wait(self, count: int) -> None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 0.5
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise ServiceError(f"dnsmasq exited: {err.strip()}")
            try:
                if len(resolver.resolve(SRV_NAME, "SRV")) == count:
                    return
            except dns.exception.DNSException:
                pass
            time.sleep(0.05)
        raise ServiceError(f"dnsmasq on 127.0.0.1:{self.port} did not serve {count} records")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
