"""Domain verification against a real DNS server (Knot, local/knot.py) through DnsPythonResolver.

Each test has a zone of its own. The records published are the exact values `create_domain` answered
(what a tenant copies into their zone), changed or removed one at a time.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from petrel.adapters.dns import DnsPythonResolver
from petrel.models.api import CreateDomainRequest
from petrel.models.records import DnsRecordCheck, DomainStatus, SendingDomain, Tenant
from petrel.services import domains
from petrel.services.domains import DomainDeps
from tests.fakes import records
from tests.fakes.world import FakeWorld
from tests.support_dns import unique_zone

if TYPE_CHECKING:
    from local.knot import KnotServer


def publish(server: KnotServer, checks: Iterable[DnsRecordCheck]) -> None:
    """Publish records as answered: each (name, type) one RRset of all its values."""
    sets: dict[tuple[str, str], list[str]] = {}
    for record in checks:
        sets.setdefault((record.name, record.type), []).append(record.value)
    server.publish_all([(name, rtype, values) for (name, rtype), values in sets.items()])


@dataclass
class Setup:
    server: KnotServer
    world: FakeWorld
    deps: DomainDeps
    tenant: Tenant
    zone: str

    def create(self, **fields: object) -> SendingDomain:
        request = CreateDomainRequest.model_validate({"domain": self.zone, **fields})
        return domains.create_domain(self.deps, self.tenant, request)

    def verify(self) -> SendingDomain:
        return domains.verify(self.deps, self.tenant.tenant_id, self.zone)

    def record(self, domain: SendingDomain, purpose: str) -> DnsRecordCheck:
        return next(r for r in domain.records if r.purpose == purpose)

    def status(self, domain: SendingDomain, purpose: str) -> str:
        return self.record(domain, purpose).status


@pytest.fixture
def setup(dns_server: KnotServer) -> Iterator[Setup]:
    world = FakeWorld()
    zone = unique_zone("dom")
    dns_server.add_zone(zone)
    tenant = records.tenant()
    world.tenants.put_tenant(tenant)
    world.tenants.put_server(records.server(tenant.tenant_id, host=f"mail.{zone}"))
    deps = DomainDeps(
        tenants=world.tenants,
        secrets=world.secrets,
        resolver=DnsPythonResolver([(dns_server.host, dns_server.port)], timeout=2.0),
        clock=world.clock,
        secrets_prefix="petrel-test/tenants/",
    )
    yield Setup(dns_server, world, deps, tenant, zone)


def test_every_record_right(setup: Setup) -> None:
    domain = setup.create(ed25519=True, return_path_domain=f"bounces.{setup.zone}", receives=True)
    publish(setup.server, domain.records)
    verified = setup.verify()
    assert {(r.purpose, r.status) for r in verified.records} == {
        ("spf", "verified"),
        ("dkim", "verified"),
        ("dmarc", "verified"),
        ("return_path_mx", "verified"),
        ("return_path_spf", "verified"),
        ("mx", "verified"),
    }
    assert verified.status is DomainStatus.VERIFIED and [e.type for e in verified.events] == ["domain.verified"]


def test_each_required_record_missing(setup: Setup) -> None:
    domain = setup.create()
    for left_out in ("spf", "dkim"):
        setup.server.remove(setup.zone, "TXT")
        publish(setup.server, (r for r in domain.records if r.purpose != left_out))
        if left_out == "dkim":
            setup.server.remove(setup.record(domain, "dkim").name, "TXT")
        checked = setup.verify()
        assert setup.status(checked, left_out) == "missing" and checked.status is DomainStatus.PENDING
        others = {r.purpose: r.status for r in checked.records if r.purpose != left_out}
        assert set(others.values()) == {"verified"}


def test_wrong_records_show_what_was_found(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    dkim = setup.record(domain, "dkim")
    foreign = "v=DKIM1; k=rsa; p=" + "B" * 392
    setup.server.publish(dkim.name, "TXT", [foreign])
    setup.server.publish(setup.zone, "TXT", ["v=spf1 a:elsewhere.example ~all"])
    setup.server.publish(setup.zone, "MX", ["10 other.example."])
    checked = setup.verify()
    assert setup.record(checked, "dkim").status == "wrong" and setup.record(checked, "dkim").found == (foreign,)
    spf = setup.record(checked, "spf")
    assert spf.status == "wrong" and spf.found == ("v=spf1 a:elsewhere.example ~all",)
    assert f"a:mail.{setup.zone}" in (spf.detail or "")
    mx = setup.record(checked, "return_path_mx")
    assert mx.status == "wrong" and mx.found == ("10 other.example.",)
    setup.server.publish(setup.zone, "TXT", [f"v=spf1 a:mail.{setup.zone} +all"])
    assert setup.status(setup.verify(), "spf") == "wrong"


def test_duplicated_spf_and_dmarc_none_are_warnings(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    spf = setup.record(domain, "spf").value
    setup.server.publish(setup.zone, "TXT", [spf, "v=spf1 mx -all"])
    setup.server.publish(f"_dmarc.{setup.zone}", "TXT", [f"v=DMARC1; p=none; rua=mailto:d@{setup.zone}"])
    checked = setup.verify()
    assert setup.status(checked, "spf") == "warning" and "permerror" in (setup.record(checked, "spf").detail or "")
    assert setup.status(checked, "dmarc") == "warning"
    assert len(setup.record(checked, "spf").found) == 2
    assert checked.status is DomainStatus.VERIFIED  # warnings do not stop mail


def test_spf_over_ten_lookups_through_a_chain_of_includes(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    # include:l0 -> l1 -> l2 -> l3, each with `a` and `mx`: 1 + 3 + 3 + 3 + 2 = 12 lookups
    for level in range(4):
        nxt = f" include:l{level + 1}.{setup.zone}" if level < 3 else ""
        setup.server.publish(f"l{level}.{setup.zone}", "TXT", [f"v=spf1 a mx{nxt} ~all"])
    setup.server.publish(setup.zone, "TXT", [f"v=spf1 a:mail.{setup.zone} include:l0.{setup.zone} ~all"])
    checked = setup.verify()
    spf = setup.record(checked, "spf")
    assert spf.status == "warning" and "more than 10 DNS lookups" in (spf.detail or "")
    setup.server.publish(f"l2.{setup.zone}", "TXT", ["v=spf1 a ~all"])  # the chain ends at l2: 8
    assert setup.status(setup.verify(), "spf") == "verified"


def test_the_tenants_server_authorized_through_an_include(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    setup.server.publish(f"_spf.{setup.zone}", "TXT", [f"v=spf1 a:mail.{setup.zone} ip4:192.0.2.0/24 -all"])
    setup.server.publish(setup.zone, "TXT", [f"v=spf1 include:_spf.{setup.zone} -all"])
    assert setup.status(setup.verify(), "spf") == "verified"


def test_a_resolver_timeout_leaves_records_pending(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    assert setup.verify().status is DomainStatus.VERIFIED
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        deps = DomainDeps(
            tenants=setup.world.tenants,
            secrets=setup.world.secrets,
            resolver=DnsPythonResolver([silent.getsockname()], timeout=0.3),
            clock=setup.world.clock,
            secrets_prefix="petrel-test/tenants/",
        )
        for _ in range(2):
            checked = domains.verify(deps, setup.tenant.tenant_id, setup.zone)
            assert {r.status for r in checked.records} == {"pending"}
            assert all((r.detail or "").startswith("lookup failed: ") for r in checked.records)
            assert checked.status is DomainStatus.VERIFIED and checked.sendable
            assert domains.recheck_domains(deps).lookup_errors == [f"{setup.tenant.tenant_id}/{setup.zone}"]
    finally:
        silent.close()
    assert [e.type for e in setup.world.tenants.list_all_domains()[0].events] == ["domain.verified"]


def test_drift_after_a_record_is_removed(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    setup.verify()
    dkim = setup.record(domain, "dkim")
    setup.server.remove(dkim.name, "TXT")
    setup.world.clock.advance(hours=1)
    report = domains.recheck_domains(setup.deps)
    assert report.failed == [f"{setup.tenant.tenant_id}/{setup.zone}"]
    failed = setup.world.tenants.get_domain(setup.tenant.tenant_id, setup.zone)
    assert failed is not None and failed.status is DomainStatus.FAILED and not failed.sendable
    assert failed.events[-1].type == "domain.dns_error" and dkim.name in (failed.events[-1].detail or "")
    publish(setup.server, [dkim])
    setup.world.clock.advance(hours=1)
    assert domains.recheck_domains(setup.deps).recovered == [f"{setup.tenant.tenant_id}/{setup.zone}"]
    back = setup.world.tenants.get_domain(setup.tenant.tenant_id, setup.zone)
    assert back is not None and back.status is DomainStatus.VERIFIED
    assert [e.type for e in back.events] == ["domain.verified", "domain.dns_error", "domain.verified"]


def test_rotation_promotes_the_new_key_once_published(setup: Setup) -> None:
    domain = setup.create()
    publish(setup.server, domain.records)
    setup.verify()
    rotating = domains.rotate_key(setup.deps, setup.tenant.tenant_id, setup.zone)
    new = next(k for k in rotating.keys if k.state == "next")
    assert {k.state for k in setup.verify().keys} == {"active", "next"}  # not published yet: nothing moves
    publish(setup.server, [r for r in rotating.records if r.selector == new.selector])
    promoted = setup.verify()
    states = {k.selector: k.state for k in promoted.keys}
    assert states == {domain.keys[0].selector: "retired", new.selector: "active"}
    assert promoted.status is DomainStatus.VERIFIED and promoted.signing_keys == (promoted.keys[1],)


def test_a_mailu_signed_domain_takes_the_key_it_finds(setup: Setup) -> None:
    domain = setup.create(signer="mailu", selector="dkim")
    publish(setup.server, (r for r in domain.records if r.purpose != "dkim"))
    long_key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "C" * 302 + "IDAQAB"
    setup.server.publish(f"dkim._domainkey.{setup.zone}", "TXT", [f"v=DKIM1; k=rsa; p={long_key}"])
    verified = setup.verify()
    assert verified.status is DomainStatus.VERIFIED and verified.keys[0].public_key == long_key
    assert verified.signing_keys == ()  # MailU signs
