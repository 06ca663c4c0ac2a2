"""The SSRF guard: a webhook's host is resolved, and every address must be public unless allow-listed. The POST then
goes to the address checked (not to a second lookup, which a rebinding DNS server could answer otherwise)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ALLOW_ENV", "Refused", "Target", "TargetGuard"]

ALLOW_ENV = "JOBKIT_WEBHOOK_ALLOW"
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Cloud metadata services some providers put at public-looking or special addresses.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200",
                                                        "fd00:ec2::254"))


class Refused(Exception):
    """A webhook target the guard will not call (not retried: fix the URL or the allow-list, then replay)."""


@dataclass(frozen=True)
class Target:
    """Where to send: the URL with its host replaced by the checked address, and the original host name."""

    url: str
    host: str
    port: int | None


class TargetGuard:
    """Checks webhook URLs. `allow`: addresses, networks (CIDR) or host names that may be private (default:
    $JOBKIT_WEBHOOK_ALLOW, comma-separated)."""

    def __init__(self, allow: Iterable[str] | None = None) -> None:
        given = list(allow) if allow is not None else [a for a in os.environ.get(ALLOW_ENV, "").split(",") if a]
        self.networks: list[_Network] = []
        self.names: set[str] = set()
        for entry in (a.strip() for a in given):
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.lower().rstrip("."))

    def _allowed(self, ip: _Address) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)

    def _why_not(self, ip: _Address) -> str | None:
        """Why `ip` may not be called, or None."""
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        seen = mapped or ip
        if self._allowed(ip) or self._allowed(seen):
            return None
        if seen in METADATA:
            return "a cloud metadata address"
        for test, what in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                           ("is_unspecified", "unspecified"), ("is_multicast", "multicast"), ("is_private", "private"),
                           ("is_reserved", "reserved")):
            if getattr(seen, test):
                return f"a {what} address"
        return None if seen.is_global else "not a public address"

    async def check(self, url: str) -> Target:
        """The Target of `url`; Refused when a resolved address is not public and not allowed; OSError when the
        host does not resolve (worth retrying)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            raise Refused(f"{url!r} is not an http(s) URL with a host")
        try:
            literal: _Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if host not in self.names:
            for ip in addresses:
                why = self._why_not(ip)
                if why:
                    raise Refused(f"{host} resolves to {ip}, {why}: webhooks go to public addresses only (allow-list"
                                  f" it with webhook_allow / ${ALLOW_ENV} if it is yours)")
        ip = addresses[0]
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        if parts.port:
            netloc += f":{parts.port}"
        return Target(parts._replace(netloc=netloc).geturl(), host, parts.port)
