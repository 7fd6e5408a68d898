"""Helpers for tests that use a real DNS server (local/knot.py): zone names of their own, and the
`dnsfunc` dkimpy's `dkim.verify` takes, asking that server instead of the system's resolvers."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import dns.exception
import dns.rdatatype
import dns.resolver

from local.knot import resolver_at

DnsFunc = Callable[..., bytes | None]


def unique_zone(label: str = "t") -> str:
    """A zone name no other test uses (`<label>-<hex>.test`): tests sharing one server never interfere."""
    return f"{label}-{uuid.uuid4().hex[:12]}.test"


def txt_values(resolver: dns.resolver.Resolver, name: str) -> list[bytes]:
    """Each TXT record at `name` as its character-strings joined, as a DKIM or SPF reader sees it; []
    when there is none."""
    try:
        answer = resolver.resolve(name, dns.rdatatype.TXT)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return sorted(b"".join(rdata.strings) for rdata in answer)


def dkim_dnsfunc(host: str, port: int) -> DnsFunc:
    """dkimpy's `dnsfunc(name, timeout=5)`: the TXT record at `name` (bytes or str) asked of `host`:`port`,
    its character-strings joined; None when there is none (dkimpy then fails the signature)."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode() if isinstance(name, bytes) else name
        try:
            values = txt_values(resolver_at(host, port, timeout), text)
        except dns.exception.Timeout:
            return None
        return values[0] if values else None

    return lookup
