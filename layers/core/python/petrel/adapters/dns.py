"""The DnsResolver port on dnspython: the configured resolvers (or the system's), a timeout per
lookup, TCP when a UDP answer comes back truncated (a 2048-bit DKIM key with its SPF neighbours can
outgrow 512 bytes)."""

from __future__ import annotations

import dns.exception
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT

from petrel.ports import DnsLookupError


def parse_resolvers(value: str) -> list[tuple[str, int]]:
    """`host` or `host:port` separated by commas (an IPv6 address in brackets when it has a port)."""
    servers: list[tuple[str, int]] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif part.count(":") == 1:
            host, _, port_text = part.partition(":")
            port = int(port_text)
        else:
            host, port = part, 53
        servers.append((host, port))
    return servers


class DnsPythonResolver:
    """`nameservers` empty: the system's resolvers (/etc/resolv.conf)."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float) -> None:
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [host for host, _ in nameservers]
            self._resolver.nameserver_ports = {host: port for host, port in nameservers}
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._resolver.cache = None  # a verification must see the zone as it is now

    @classmethod
    def from_setting(cls, resolvers: str, timeout: float) -> DnsPythonResolver:
        """From a function's settings: PETREL_DNS_RESOLVERS ("host[:port],...") and the timeout."""
        return cls(parse_resolvers(resolvers), timeout)

    def _resolve(self, name: str, rtype: str) -> dns.resolver.Answer | None:
        try:
            # dnspython retries a truncated UDP answer over TCP itself.
            return self._resolver.resolve(name, rtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsLookupError(f"{rtype} {name}: timed out") from exc
        except dns.resolver.NoNameservers as exc:  # SERVFAIL, REFUSED, ... from every server
            raise DnsLookupError(f"{rtype} {name}: no server answered ({exc})") from exc
        except dns.exception.DNSException as exc:
            raise DnsLookupError(f"{rtype} {name}: {exc}") from exc

    def txt(self, name: str) -> list[str]:
        answer = self._resolve(name, "TXT")
        if answer is None or answer.rrset is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset if isinstance(r, TXT)]

    def mx(self, name: str) -> list[tuple[int, str]]:
        answer = self._resolve(name, "MX")
        if answer is None or answer.rrset is None:
            return []
        found = [
            (r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer.rrset if isinstance(r, MX)
        ]
        return sorted(found)
