"""DnsResolver contract: the in-memory FakeResolver and DnsPythonResolver against a real Knot server.

Both give TXT records as one string each (character-strings joined), MX records as (preference, host
lower-cased without the dot) in order, [] for a name or type that does not exist, and DnsLookupError
when no answer comes (a server that refuses, or one that never answers).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pytest

from petrel.adapters.dns import DnsPythonResolver, parse_resolvers
from petrel.ports import DnsLookupError, DnsResolver
from tests.fakes.dns import FakeResolver
from tests.support_dns import unique_zone

if TYPE_CHECKING:
    from local.knot import KnotServer


class Zone(Protocol):
    @property
    def resolver(self) -> DnsResolver: ...
    @property
    def name(self) -> str: ...

    def txt(self, name: str, *values: str) -> None: ...
    def mx(self, name: str, *hosts: tuple[int, str]) -> None: ...
    def unanswerable(self) -> str: ...


@dataclass
class FakeZone:
    resolver: FakeResolver
    name: str

    def txt(self, name: str, *values: str) -> None:
        self.resolver.publish_txt(name, *values)

    def mx(self, name: str, *hosts: tuple[int, str]) -> None:
        self.resolver.publish_mx(name, *hosts)

    def unanswerable(self) -> str:
        self.resolver.failing.add("refused.invalid")
        return "refused.invalid"


@dataclass
class KnotZone:
    server: KnotServer
    resolver: DnsPythonResolver
    name: str

    def txt(self, name: str, *values: str) -> None:
        self.server.publish(name, "TXT", list(values))

    def mx(self, name: str, *hosts: tuple[int, str]) -> None:
        self.server.publish(name, "MX", [f"{p} {h}." for p, h in hosts])

    def unanswerable(self) -> str:
        return "a-zone-knot-does-not-serve.invalid"  # Knot refuses it: not authoritative


@pytest.fixture(params=["fake", "knot"])
def zone(request: pytest.FixtureRequest) -> Iterator[Zone]:
    name = unique_zone("contract")
    if request.param == "fake":
        yield FakeZone(FakeResolver(), name)
        return
    server: KnotServer = request.getfixturevalue("dns_server")
    server.add_zone(name)
    yield KnotZone(server, DnsPythonResolver([(server.host, server.port)], timeout=2.0), name)


def test_txt_records_are_one_string_each(zone: Zone) -> None:
    long_key = "v=DKIM1; k=rsa; p=" + "A" * 400  # more than one 255-octet character-string
    zone.txt(f"s1._domainkey.{zone.name}", long_key)
    zone.txt(zone.name, "v=spf1 a ~all", "google-site-verification=abc")
    assert zone.resolver.txt(f"s1._domainkey.{zone.name}") == [long_key]
    assert sorted(zone.resolver.txt(zone.name)) == ["google-site-verification=abc", "v=spf1 a ~all"]
    assert zone.resolver.txt(f"S1._DOMAINKEY.{zone.name.upper()}.") == [long_key]


def test_mx_records_in_preference_order(zone: Zone) -> None:
    zone.mx(zone.name, (20, "Backup.Example.test"), (10, "mail.example.test"))
    assert zone.resolver.mx(zone.name) == [(10, "mail.example.test"), (20, "backup.example.test")]


def test_absent_names_and_types_are_empty(zone: Zone) -> None:
    zone.txt(zone.name, "v=spf1 -all")
    assert zone.resolver.txt(f"nothing.{zone.name}") == []  # NXDOMAIN
    assert zone.resolver.mx(zone.name) == []  # the name exists, no MX
    assert zone.resolver.txt(f"_dmarc.{zone.name}") == []


def test_no_answer_is_a_lookup_error(zone: Zone) -> None:
    with pytest.raises(DnsLookupError):
        zone.resolver.txt(zone.unanswerable())


def test_a_server_that_never_answers_times_out() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = DnsPythonResolver([silent.getsockname()], timeout=0.3)
        with pytest.raises(DnsLookupError, match="timed out"):
            resolver.txt("anything.test")
        with pytest.raises(DnsLookupError):
            resolver.mx("anything.test")
    finally:
        silent.close()


def test_resolvers_setting_is_parsed() -> None:
    assert parse_resolvers("") == []
    assert parse_resolvers("127.0.0.1:5353, 10.0.0.2") == [("127.0.0.1", 5353), ("10.0.0.2", 53)]
    assert parse_resolvers("[::1]:5353,2001:db8::1") == [("::1", 5353), ("2001:db8::1", 53)]
