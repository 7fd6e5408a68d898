"""petrel.mail.providers: recipient domains grouped by the provider that receives their mail.

Invariant: two domains whose mail goes to the same provider share one provider bucket (gmail.com and
googlemail.com, a Workspace domain and gmail.com); unrelated small domains never share one.
"""

from __future__ import annotations

import pytest

from petrel.mail.providers import ProviderLookup, provider_of, registrable
from petrel.ports import DnsLookupError
from tests.fakes.dns import FakeResolver


@pytest.mark.parametrize(
    ("domain", "mx", "provider"),
    [
        ("gmail.com", ["gmail-smtp-in.l.google.com"], "google"),
        ("googlemail.com", ["gmail-smtp-in.l.google.com"], "google"),
        ("gmail.com", [], "google"),  # known without a lookup
        ("acme-corp.example", ["aspmx.l.google.com", "alt1.aspmx.l.google.com"], "google"),  # Workspace
        ("acme.example", ["smtp.google.com."], "google"),  # trailing dot, case
        ("contoso.example", ["contoso-example.mail.protection.outlook.com"], "microsoft"),
        ("hotmail.co.uk", ["eur.olc.protection.outlook.com"], "microsoft"),
        ("yahoo.co.jp", ["mta5.am0.yahoodns.net"], "yahoo"),
        ("aol.com", ["mx-aol.mail.gm0.yahoodns.net"], "yahoo"),
        ("icloud.com", ["mx01.mail.icloud.com"], "apple"),
        ("bank.example", ["mxa-001.pphosted.com"], "proofpoint"),
        ("firm.example", ["eu-smtp-inbound-1.mimecast.com"], "mimecast"),
        ("gmx.de", ["mx00.gmx.net"], "united-internet"),
        ("MiXeD.Example", ["MX1.Mail.Example-Host.NET"], "example-host.net"),  # registrable part
        ("shop.co.uk", ["mx1.mailhost.co.uk", "mx2.other.com"], "mailhost.co.uk"),  # two-level suffix
        ("tiny.example", [], "tiny.example"),  # no MX: the domain itself
        ("null.example", ["."], "null.example"),  # a null MX is no MX
        ("both.example", ["mx.self-hosted.org", "backup.google.com"], "google"),  # a known backup wins
    ],
)
def test_provider_of(domain: str, mx: list[str], provider: str) -> None:
    assert provider_of(domain, mx) == provider


def test_the_primary_mx_decides_among_unknown_hosts() -> None:
    assert provider_of("a.example", ["mx.first.net", "mx.second.net"]) == "first.net"


@pytest.mark.parametrize(
    ("host", "part"),
    [
        ("a.b.c.example.com", "example.com"),
        ("mx.foo.com.au", "foo.com.au"),
        ("co.uk", "co.uk"),
        ("localhost", "localhost"),
    ],
)
def test_registrable(host: str, part: str) -> None:
    assert registrable(host) == part


def test_the_lookup_asks_dns_once_per_domain_in_preference_order() -> None:
    dns = FakeResolver()
    dns.publish_mx("corp.example", (20, "mx2.backup-host.net"), (10, "mx1.primary-host.net"))
    asked: list[str] = []

    def mx(name: str) -> list[tuple[int, str]]:
        asked.append(name)
        return dns.mx(name)

    lookup = ProviderLookup(mx)
    assert lookup("Corp.Example") == "primary-host.net"
    assert lookup("corp.example") == "primary-host.net"
    assert lookup("gmail.com") == "google"  # known: no lookup
    assert asked == ["corp.example"]


def test_a_failed_lookup_groups_the_domain_by_itself_and_is_asked_again() -> None:
    answers: list[list[tuple[int, str]] | None] = [None, [(10, "aspmx.l.google.com")]]

    def mx(_name: str) -> list[tuple[int, str]]:
        answer = answers.pop(0)
        if answer is None:
            raise DnsLookupError("timeout")
        return answer

    lookup = ProviderLookup(mx)
    assert lookup("flaky.example") == "flaky.example"
    assert lookup("flaky.example") == "google"


def test_the_lookup_forgets_the_least_recent_domain_past_its_size() -> None:
    asked: list[str] = []

    def mx(name: str) -> list[tuple[int, str]]:
        asked.append(name)
        return [(10, f"mx.{name}")]

    lookup = ProviderLookup(mx, size=2)
    for domain in ("a.example", "b.example", "a.example", "c.example", "a.example", "b.example"):
        lookup(domain)
    assert asked == ["a.example", "b.example", "c.example", "b.example"]
