"""Destination providers: recipient domains grouped by who receives their mail, so that one provider's
rate limit is one bucket however many domains it hosts (gmail.com and googlemail.com are Google; so is
every Google Workspace domain, whose MX is Google's).

The group is taken from the domain's MX hosts: a known provider by the suffix of any of its hosts, else
the registrable part of the primary (lowest preference) host, else the domain itself when it has no MX.
A few very large consumer domains are known without a lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from petrel.ports import DnsLookupError

# MX host suffix -> provider. A host matches a suffix when it is the suffix or ends with "." + suffix.
KNOWN_MX_SUFFIXES: dict[str, str] = {
    "google.com": "google",
    "googlemail.com": "google",
    "outlook.com": "microsoft",  # *.mail.protection.outlook.com, *.olc.protection.outlook.com
    "hotmail.com": "microsoft",
    "yahoodns.net": "yahoo",  # also AOL's MX
    "icloud.com": "apple",
    "me.com": "apple",
    "pphosted.com": "proofpoint",
    "ppe-hosted.com": "proofpoint",
    "mimecast.com": "mimecast",
    "zoho.com": "zoho",
    "zoho.eu": "zoho",
    "yandex.net": "yandex",
    "yandex.ru": "yandex",
    "mail.ru": "mailru",
    "protonmail.ch": "proton",
    "messagingengine.com": "fastmail",
    "gmx.net": "united-internet",
    "web.de": "united-internet",
    "ionos.com": "united-internet",
    "comcast.net": "comcast",
    "secureserver.net": "godaddy",
    "barracudanetworks.com": "barracuda",
}

# Recipient domains whose provider is known without asking DNS (the largest mailbox providers).
KNOWN_DOMAINS: dict[str, str] = {
    "gmail.com": "google",
    "googlemail.com": "google",
    "outlook.com": "microsoft",
    "hotmail.com": "microsoft",
    "live.com": "microsoft",
    "msn.com": "microsoft",
    "yahoo.com": "yahoo",
    "aol.com": "yahoo",
    "icloud.com": "apple",
    "me.com": "apple",
    "mac.com": "apple",
}

# Public suffixes of two labels under which names are registered one level down (a small table: a
# miss only groups a provider's hosts a little less, never wrongly across owners of big suffixes).
TWO_LEVEL_SUFFIXES = frozenset(
    f"{second}.{top}"
    for top, seconds in {
        "uk": ("co", "org", "ac", "gov", "ltd", "plc", "me", "net"),
        "au": ("com", "net", "org", "edu", "gov"),
        "nz": ("co", "org", "net", "ac"),
        "jp": ("co", "ne", "or", "ac", "go"),
        "kr": ("co", "or", "ne"),
        "br": ("com", "net", "org"),
        "cn": ("com", "net", "org"),
        "in": ("co", "net", "org"),
        "za": ("co", "org", "net"),
        "mx": ("com", "org"),
        "tr": ("com", "net", "org"),
        "sg": ("com", "net", "org"),
        "hk": ("com", "net", "org"),
        "tw": ("com", "net", "org"),
        "ar": ("com", "net", "org"),
        "il": ("co", "org", "net"),
    }.items()
    for second in seconds
)


def _clean(name: str) -> str:
    return name.strip().rstrip(".").lower()


def known_provider(host: str) -> str | None:
    """The provider whose MX suffix `host` ends with, or None."""
    host = _clean(host)
    labels = host.split(".")
    for start in range(len(labels) - 1):
        provider = KNOWN_MX_SUFFIXES.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    return None


def registrable(host: str) -> str:
    """The registrable part of `host`: its last two labels, or three under a two-level public suffix."""
    labels = _clean(host).split(".")
    keep = 3 if len(labels) >= 3 and ".".join(labels[-2:]) in TWO_LEVEL_SUFFIXES else 2
    return ".".join(labels[-keep:])


def provider_of(recipient_domain: str, mx_hosts: Sequence[str]) -> str:
    """The provider a recipient domain's mail goes to. `mx_hosts` in preference order, lowest (primary)
    first; [] when the domain has no MX (mail goes to the domain's own address records)."""
    domain = _clean(recipient_domain)
    if domain in KNOWN_DOMAINS:
        return KNOWN_DOMAINS[domain]
    hosts = [h for h in (_clean(host) for host in mx_hosts) if h]  # "." is a null MX (RFC 7505)
    for host in hosts:
        provider = known_provider(host)
        if provider is not None:
            return provider
    if hosts:
        return registrable(hosts[0])
    return domain


MxLookup = Callable[[str], list[tuple[int, str]]]  # petrel.ports.DnsResolver.mx


class ProviderLookup:
    """`provider_of` with the MX lookup done through a DnsResolver's `mx` and remembered (a bounded LRU
    of domains: a worker sees the same few destination domains over and over). A lookup that fails
    (DnsLookupError) groups the domain by itself and is not
    remembered, so the next batch asks again.

    Use: `ProviderLookup(resolver.mx)(recipient_domain)`."""

    def __init__(self, mx: MxLookup, *, size: int = 4096) -> None:
        self._mx = mx
        self._size = size
        self._known: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, recipient_domain: str) -> str:
        domain = _clean(recipient_domain)
        if domain in KNOWN_DOMAINS:
            return KNOWN_DOMAINS[domain]
        with self._lock:
            if domain in self._known:
                self._known.move_to_end(domain)
                return self._known[domain]
        try:
            records = self._mx(domain)
        except DnsLookupError:  # no answer: grouped by itself for now, asked again next time
            return domain
        provider = provider_of(domain, [host for _, host in sorted(records)])
        with self._lock:
            self._known[domain] = provider
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return provider
