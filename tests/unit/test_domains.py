"""Sending domains on the fakes: creation with keys, verification, rotation, drift, the submit check.

Invariant checked throughout: a Petrel-signed domain has exactly one active RSA key, and its private
key is in the secret store (and matches the published public half).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from petrel.errors import Conflict, InvalidRequest, NotFound
from petrel.mail import dnsauth
from petrel.mail.dkim import DkimKey
from petrel.models.api import CreateDomainRequest
from petrel.models.records import DkimSigner, DomainStatus, Mailbox, SendingDomain, Tenant
from petrel.services import domains
from petrel.services.domains import DomainDeps
from petrel.services.submit import check_sender_domain
from tests.fakes import records
from tests.fakes.dns import FakeResolver
from tests.fakes.world import FakeWorld

PREFIX = "petrel-test/tenants/"


class World:
    def __init__(self) -> None:
        self.fakes = FakeWorld()
        self.resolver = FakeResolver()
        self.selectors: Iterator[str] = iter(f"ptl202601s{n}" for n in range(100))
        self.deps = DomainDeps(
            tenants=self.fakes.tenants,
            secrets=self.fakes.secrets,
            resolver=self.resolver,
            clock=self.fakes.clock,
            secrets_prefix=PREFIX,
            mailboxes=self.fakes.mailboxes,
            new_selector=lambda now: next(self.selectors),
        )

    def tenant(self, *, host: str | None = "mail.acme.test", **fields: Any) -> Tenant:
        tenant = records.tenant(**fields)
        self.fakes.tenants.put_tenant(tenant)
        if host:
            self.fakes.tenants.put_server(records.server(tenant.tenant_id, host=host))
        return tenant

    def create(self, tenant: Tenant, domain: str = "acme.test", **fields: object) -> SendingDomain:
        return domains.create_domain(
            self.deps, tenant, CreateDomainRequest.model_validate({"domain": domain, **fields})
        )

    def stored(self, tenant: Tenant, domain: str = "acme.test") -> SendingDomain:
        found = self.fakes.tenants.get_domain(tenant.tenant_id, domain)
        assert found is not None
        return found


@pytest.fixture
def world() -> World:
    return World()


def assert_one_active_rsa_key_in_secrets(world: World, domain: SendingDomain) -> None:
    active = [k for k in domain.keys if k.state == "active" and k.algorithm == "rsa"]
    assert len(active) == 1
    (key,) = active
    assert key.secret_name is not None
    pem = world.fakes.secrets.secrets[key.secret_name]
    assert dnsauth.tags(DkimKey.load(pem).public_record())["p"] == key.public_key


def test_create_answers_the_records_and_keeps_only_the_public_key(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    assert domain.status is DomainStatus.PENDING and not domain.sendable
    (key,) = domain.keys
    assert key.selector == "ptl202601s0" and key.secret_name == f"{PREFIX}{tenant.tenant_id}/dkim/acme.test/ptl202601s0"
    assert_one_active_rsa_key_in_secrets(world, domain)
    assert "PRIVATE" not in domain.model_dump_json()  # the private half is in the secret store only
    by = {(r.purpose, r.name): r for r in domain.records}
    assert by[("spf", "acme.test")].value == "v=spf1 a:mail.acme.test ~all"
    assert by[("dkim", "ptl202601s0._domainkey.acme.test")].value == f"v=DKIM1; k=rsa; p={key.public_key}"
    assert by[("dmarc", "_dmarc.acme.test")].value.startswith("v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.test")
    assert by[("return_path_mx", "acme.test")].value == "10 mail.acme.test."
    assert world.stored(tenant) == domain
    view = domains.view(domain, tenant)
    assert view.selectors == ["ptl202601s0"] and not view.sending_allowed


def test_create_with_ed25519_a_return_path_and_given_spf(world: World) -> None:
    tenant = world.tenant(host="192.0.2.7")
    domain = world.create(tenant, return_path_domain="bounce.acme.test", ed25519=True, receives=True)
    assert [k.algorithm for k in domain.keys] == ["rsa", "ed25519"]
    assert all(k.secret_name in world.fakes.secrets.secrets for k in domain.keys)
    assert domain.spf == ("ip4:192.0.2.7",) and domain.mx == ()  # an address is no MX host
    purposes = {r.purpose for r in domain.records}
    assert "return_path_spf" in purposes
    given = world.create(tenant, "other.test", spf=["include:_spf.mailu.test", "ip6:2001:db8::1"], mx=["mx.other.test"])
    assert given.spf == ("include:_spf.mailu.test", "ip6:2001:db8::1") and given.mx == ("mx.other.test",)


def test_receives_defaults_to_having_a_mailbox_on_the_domain(world: World) -> None:
    tenant = world.tenant()
    inbox = Mailbox(
        tenant_id=tenant.tenant_id,
        mailbox_id="mbx_1",
        address="inbox@acme.test",
        host="mail.acme.test",
        port=993,
        username="inbox@acme.test",
        secret_name="x",
        created_at=world.fakes.clock.now(),
    )
    world.fakes.mailboxes.create_mailbox(inbox)
    assert world.create(tenant, return_path_domain="b.acme.test").receives
    assert not world.create(tenant, "other.test").receives


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"domain": "not a domain"}, "/domain"),
        ({"domain": "acme.test", "return_path_domain": "x"}, "/return_path_domain"),
        ({"domain": "acme.test", "spf": ["+all"]}, "/spf"),
        ({"domain": "acme.test", "mx": ["-bad.test"]}, "/mx"),
        ({"domain": "acme.test", "signer": "mailu"}, "/selector"),
        ({"domain": "acme.test", "selector": "two.labels"}, "/selector"),
    ],
)
def test_create_refuses_invalid_values(world: World, fields: dict[str, object], pointer: str) -> None:
    tenant = world.tenant()
    with pytest.raises(InvalidRequest) as caught:
        domains.create_domain(world.deps, tenant, CreateDomainRequest.model_validate(fields))
    assert caught.value.extra["errors"][0]["pointer"] == pointer
    assert world.fakes.secrets.secrets == {} and world.fakes.tenants.domains == {}


def test_create_without_servers_or_spf_is_refused(world: World) -> None:
    tenant = world.tenant(host=None)
    with pytest.raises(InvalidRequest, match="no SMTP server"):
        world.create(tenant)


def test_a_domain_belongs_to_one_tenant(world: World) -> None:
    first, second = world.tenant(), world.tenant()
    world.create(first)
    with pytest.raises(Conflict, match="already"):
        world.create(first)
    with pytest.raises(Conflict, match="another tenant"):
        world.create(second)
    with pytest.raises(NotFound):  # never revealed to the other tenant
        domains.get_domain(world.deps, second.tenant_id, "acme.test")
    assert len(world.fakes.secrets.secrets) == 1  # the refused creates wrote no key


class CrashingTenants:
    """create_domain dies (after nothing was written) the first `crashes` times."""

    def __init__(self, world: World, crashes: int) -> None:
        self.inner = world.fakes.tenants
        self.crashes = crashes

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def create_domain(self, domain: SendingDomain) -> None:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("the function died")
        self.inner.create_domain(domain)


def test_a_create_that_dies_between_the_secret_and_the_record_is_retried_twice(world: World) -> None:
    tenant = world.tenant()
    deps = DomainDeps(
        tenants=CrashingTenants(world, crashes=2),  # type: ignore[arg-type]
        secrets=world.fakes.secrets,
        resolver=world.resolver,
        clock=world.fakes.clock,
        secrets_prefix=PREFIX,
    )
    request = CreateDomainRequest(domain="acme.test", selector="fixed")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            domains.create_domain(deps, tenant, request)
        assert world.fakes.tenants.domains == {}  # no record: the domain is not half-made
    domain = domains.create_domain(deps, tenant, request)
    # the retry with the same selector adopted the orphaned secret: one secret, the record's own key
    assert list(world.fakes.secrets.secrets) == [f"{PREFIX}{tenant.tenant_id}/dkim/acme.test/fixed"]
    assert_one_active_rsa_key_in_secrets(world, world.stored(tenant))
    assert domain == world.stored(tenant)


class SecretsRunningFirst:
    """A SecretStore whose first `create_secret` first runs `between` (another request, to the end)."""

    def __init__(self, world: World, between: Callable[[], object]) -> None:
        self.inner = world.fakes.secrets
        self.between: list[Callable[[], object]] = [between]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def create_secret(self, name: str, value: str) -> None:
        if self.between:
            self.between.pop()()
        self.inner.create_secret(name, value)


def test_two_creates_with_one_selector_never_pair_a_record_with_another_key(world: World) -> None:
    """The second create passed the "not taken" check, then the first ran to its end: the second's key
    write must not replace the key the first's record names."""
    tenant = world.tenant()
    request = CreateDomainRequest(domain="acme.test", selector="fixed")

    def first() -> SendingDomain:
        return domains.create_domain(world.deps, tenant, request)

    second = dataclasses.replace(world.deps, secrets=SecretsRunningFirst(world, first))  # type: ignore[arg-type]

    with pytest.raises(Conflict, match="has been added already"):
        domains.create_domain(second, tenant, request)

    stored = world.stored(tenant)
    assert_one_active_rsa_key_in_secrets(world, stored)  # the record's public key is its secret's
    assert list(world.fakes.secrets.secrets) == [f"{PREFIX}{tenant.tenant_id}/dkim/acme.test/fixed"]


def test_a_selector_deleted_less_than_7_days_ago_is_refused_naming_it(world: World) -> None:
    tenant = world.tenant()
    world.create(tenant, selector="fixed", ed25519=True)
    domains.delete_domain(world.deps, tenant.tenant_id, "acme.test")
    before = (dict(world.fakes.secrets.secrets), set(world.fakes.secrets.deleted))

    with pytest.raises(Conflict) as refused:
        world.create(tenant, selector="fixed")

    assert refused.value.status == 409
    assert refused.value.detail == (
        "selector fixed was used for this domain in the last 7 days; choose another or omit it"
    )
    assert (dict(world.fakes.secrets.secrets), set(world.fakes.secrets.deleted)) == before  # nothing written
    assert world.fakes.tenants.domains == {} and world.fakes.tenants.list_all_domains() == []
    generated = world.create(tenant)  # without a selector: a new one
    assert_one_active_rsa_key_in_secrets(world, generated)
    domains.delete_domain(world.deps, tenant.tenant_id, "acme.test")
    for name in before[1]:
        world.fakes.secrets.purge(name)  # the recovery window ended: the selector is free again
    again = world.create(tenant, selector="fixed", ed25519=True)
    assert [k.selector for k in again.keys] == ["fixed", "fixede"]
    assert_one_active_rsa_key_in_secrets(world, again)


def _ed25519_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


def test_a_live_secret_of_the_other_algorithm_is_not_adopted(world: World) -> None:
    tenant = world.tenant()
    name = domains.secret_name(world.deps, tenant.tenant_id, "acme.test", "fixede")
    world.fakes.secrets.create_secret(name, _ed25519_pem())  # a create's Ed25519 key, orphaned

    with pytest.raises(Conflict, match="selector fixede was used"):
        world.create(tenant, selector="fixede")  # an RSA key asked for under that name

    assert world.fakes.tenants.domains == {}
    assert list(world.fakes.secrets.secrets) == [name]


def test_a_rotation_skips_a_selector_whose_secret_is_in_its_recovery_window(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    drawn = "ptl202601s1"  # what the rotation draws first: a key of that name was deleted days ago
    taken = domains.secret_name(world.deps, tenant.tenant_id, "acme.test", drawn)
    world.fakes.secrets.deleted.add(taken)

    rotated = domains.rotate_key(world.deps, tenant.tenant_id, "acme.test")

    (next_key,) = [k for k in rotated.keys if k.state == "next"]
    assert next_key.selector not in {drawn, domain.keys[0].selector}
    assert next_key.secret_name is not None
    pem = world.fakes.secrets.secrets[next_key.secret_name]
    assert dnsauth.tags(DkimKey.load(pem).public_record())["p"] == next_key.public_key
    assert taken not in world.fakes.secrets.secrets and world.stored(tenant) == rotated


def test_verify_all_published(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    world.resolver.publish(domain.records)
    world.fakes.clock.advance(minutes=5)
    verified = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert verified.status is DomainStatus.VERIFIED and verified.sendable
    assert {r.status for r in verified.records} == {"verified"}
    assert verified.verified_at == verified.checked_at == world.fakes.clock.now()
    assert [e.type for e in verified.events] == ["domain.verified"]
    assert world.stored(tenant) == verified
    again = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert [e.type for e in again.events] == ["domain.verified"]  # no second event without a change


def test_verify_reports_missing_wrong_and_warnings(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    world.resolver.publish(r for r in domain.records if r.purpose != "dkim")
    world.resolver.publish_txt("_dmarc.acme.test", "v=DMARC1; p=none")
    pending = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    by = {r.purpose: r for r in pending.records}
    assert pending.status is DomainStatus.PENDING
    assert by["dkim"].status == "missing" and by["dmarc"].status == "warning" and by["spf"].status == "verified"
    world.resolver.publish_txt(by["dkim"].name, "v=DKIM1; k=rsa; p=T1RIRVI=")
    wrong = {r.purpose: r for r in domains.verify(world.deps, tenant.tenant_id, "acme.test").records}["dkim"]
    assert wrong.status == "wrong" and wrong.found == ("v=DKIM1; k=rsa; p=T1RIRVI=",)
    world.resolver.publish_txt(by["dkim"].name, by["dkim"].value)
    world.resolver.publish_txt("acme.test", "v=spf1 a:mail.acme.test ~all", "v=spf1 mx ~all")
    done = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert done.status is DomainStatus.VERIFIED  # a duplicated SPF and DMARC p=none are warnings
    assert {r.purpose: r.status for r in done.records}["spf"] == "warning"


def test_a_lookup_without_an_answer_is_pending_and_never_fails_a_verified_domain(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    world.resolver.publish(domain.records)
    domains.verify(world.deps, tenant.tenant_id, "acme.test")
    world.resolver.failing.add(domain.keys[0].selector + "._domainkey.acme.test")
    for _ in range(2):
        after = domains.verify(world.deps, tenant.tenant_id, "acme.test")
        dkim = next(r for r in after.records if r.purpose == "dkim")
        assert dkim.status == "pending" and (dkim.detail or "").startswith("lookup failed: ")
        assert after.status is DomainStatus.VERIFIED and [e.type for e in after.events] == ["domain.verified"]


def test_drift_fails_a_verified_domain_and_recovers_it(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    world.resolver.publish(domain.records)
    domains.verify(world.deps, tenant.tenant_id, "acme.test")
    pending = world.create(tenant, "pending.test")  # never verified: not re-checked
    dkim = next(r for r in domain.records if r.purpose == "dkim")
    world.resolver.publish_txt(dkim.name)  # the DKIM record disappears
    world.fakes.clock.advance(hours=1)
    report = domains.recheck_domains(world.deps)
    assert report.checked == 1 and report.failed == [f"{tenant.tenant_id}/acme.test"]
    failed = world.stored(tenant)
    assert failed.status is DomainStatus.FAILED and not failed.sendable
    assert failed.events[-1].type == "domain.dns_error"
    assert failed.events[-1].detail == f"the DKIM record (TXT {dkim.name}) is missing"
    assert domains.recheck_domains(world.deps).failed == []  # no second event while it stays failed
    assert [e.type for e in world.stored(tenant).events] == ["domain.verified", "domain.dns_error"]
    world.resolver.publish_txt(dkim.name, dkim.value)
    assert domains.recheck_domains(world.deps).recovered == [f"{tenant.tenant_id}/acme.test"]
    recovered = world.stored(tenant)
    assert recovered.status is DomainStatus.VERIFIED
    assert [e.type for e in recovered.events] == ["domain.verified", "domain.dns_error", "domain.verified"]
    assert world.stored(tenant, "pending.test") == pending


def test_events_keep_the_last_twenty(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    world.resolver.publish(domain.records)
    dkim = next(r for r in domain.records if r.purpose == "dkim")
    domains.verify(world.deps, tenant.tenant_id, "acme.test")
    for _ in range(15):
        world.resolver.publish_txt(dkim.name)
        domains.recheck_domains(world.deps)
        world.resolver.publish_txt(dkim.name, dkim.value)
        domains.recheck_domains(world.deps)
    assert len(world.stored(tenant).events) == domains.MAX_EVENTS


def test_recheck_goes_on_past_a_domain_whose_check_raises(world: World) -> None:
    tenant = world.tenant()
    for name in ("a.test", "b.test"):
        world.resolver.publish(world.create(tenant, name).records)
        domains.verify(world.deps, tenant.tenant_id, name)
    world.resolver.publish_txt("b.test")  # b's SPF is gone

    class Exploding(FakeResolver):
        def txt(self, name: str) -> list[str]:
            if name == "a.test":
                raise RuntimeError("bug")
            return world.resolver.txt(name)

    deps = DomainDeps(
        tenants=world.fakes.tenants,
        secrets=world.fakes.secrets,
        resolver=Exploding(),
        clock=world.fakes.clock,
        secrets_prefix=PREFIX,
    )
    report = domains.recheck_domains(deps)
    assert report.errors == [f"{tenant.tenant_id}/a.test"] and report.failed == [f"{tenant.tenant_id}/b.test"]


def test_rotation_keeps_exactly_one_active_key(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    world.resolver.publish(domain.records)
    domains.verify(world.deps, tenant.tenant_id, "acme.test")
    old = domain.keys[0]
    rotating = domains.rotate_key(world.deps, tenant.tenant_id, "acme.test")
    assert_one_active_rsa_key_in_secrets(world, rotating)
    new = next(k for k in rotating.keys if k.state == "next")
    new_record = next(r for r in rotating.records if r.selector == new.selector)
    assert not new_record.required and new_record.value == f"v=DKIM1; k=rsa; p={new.public_key}"
    with pytest.raises(Conflict, match="rotation in progress"):
        domains.rotate_key(world.deps, tenant.tenant_id, "acme.test")
    unpublished = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert {k.selector: k.state for k in unpublished.keys} == {old.selector: "active", new.selector: "next"}
    assert_one_active_rsa_key_in_secrets(world, unpublished)
    world.resolver.publish_txt(new_record.name, new_record.value)
    world.fakes.clock.advance(hours=1)
    promoted = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert {k.selector: k.state for k in promoted.keys} == {old.selector: "retired", new.selector: "active"}
    assert promoted.status is DomainStatus.VERIFIED
    assert_one_active_rsa_key_in_secrets(world, promoted)
    required = {r.selector: r.required for r in promoted.records if r.purpose == "dkim"}
    assert required == {old.selector: False, new.selector: True}
    world.fakes.clock.advance(days=6)
    assert old.selector in {k.selector for k in domains.verify(world.deps, tenant.tenant_id, "acme.test").keys}
    world.fakes.clock.advance(days=1)
    dropped = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert [k.selector for k in dropped.keys] == [new.selector]
    assert old.secret_name not in world.fakes.secrets.secrets
    assert old.selector not in {r.selector for r in dropped.records}
    assert_one_active_rsa_key_in_secrets(world, dropped)


def test_a_mailu_signed_domain_learns_the_published_key(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant, signer="mailu", selector="dkim")
    assert domain.keys[0].secret_name is None and world.fakes.secrets.secrets == {}
    assert domain.signing_keys == ()
    world.resolver.publish(r for r in domain.records if r.purpose != "dkim")
    world.resolver.publish_txt("dkim._domainkey.acme.test", "v=DKIM1; k=rsa; p=TUFJTFU=")
    verified = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert verified.status is DomainStatus.VERIFIED and verified.keys[0].public_key == "TUFJTFU="
    dkim = next(r for r in verified.records if r.purpose == "dkim")
    assert dkim.value == "v=DKIM1; k=rsa; p=TUFJTFU=" and dkim.status == "verified"
    with pytest.raises(Conflict, match="MailU"):
        domains.rotate_key(world.deps, tenant.tenant_id, "acme.test")
    assert verified.signer is DkimSigner.MAILU


def test_delete_removes_the_secrets_and_frees_the_name(world: World) -> None:
    first, second = world.tenant(), world.tenant()
    world.create(first, ed25519=True)
    with pytest.raises(NotFound):
        domains.delete_domain(world.deps, second.tenant_id, "acme.test")
    domains.delete_domain(world.deps, first.tenant_id, "acme.test")
    assert world.fakes.secrets.secrets == {} and world.fakes.tenants.list_all_domains() == []
    with pytest.raises(NotFound):
        domains.delete_domain(world.deps, first.tenant_id, "acme.test")
    assert world.create(second).tenant_id == second.tenant_id


def test_submit_refuses_an_unverified_domain_naming_the_records(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    deps = world.fakes.submit_deps()
    with pytest.raises(InvalidRequest) as caught:
        check_sender_domain(deps, tenant, "Me <me@acme.test>")
    assert caught.value.detail == "the sending domain acme.test is not verified"
    details = [e["detail"] for e in caught.value.extra["errors"]]
    dkim = next(r for r in domain.records if r.purpose == "dkim")
    assert details == [
        "the SPF record (TXT acme.test) is not verified yet",
        f"the DKIM record (TXT {dkim.name}) is not verified yet",
    ]
    world.resolver.publish(r for r in domain.records if r.purpose != "spf")
    domains.verify(world.deps, tenant.tenant_id, "acme.test")
    with pytest.raises(InvalidRequest) as caught:
        check_sender_domain(deps, tenant, "me@acme.test")
    assert [e["detail"] for e in caught.value.extra["errors"]] == ["the SPF record (TXT acme.test) is missing"]
    assert all(e["pointer"] == "/from" for e in caught.value.extra["errors"])
    lenient = tenant.model_copy(update={"allow_unverified_domains": True})
    assert check_sender_domain(deps, lenient, "me@acme.test") == "acme.test"
    world.resolver.publish(domain.records)
    domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert check_sender_domain(deps, tenant, "me@acme.test") == "acme.test"


def test_a_failed_domain_is_refused_too(world: World) -> None:
    tenant = world.tenant()
    world.fakes.tenants.put_domain(records.domain(tenant.tenant_id, "acme.test", status=DomainStatus.FAILED))
    with pytest.raises(InvalidRequest, match="not verified"):
        check_sender_domain(world.fakes.submit_deps(), tenant, "me@acme.test")


def test_selectors_are_dns_labels() -> None:
    from datetime import UTC, datetime

    seen = {domains.generated_selector(datetime(2026, 3, 1, tzinfo=UTC)) for _ in range(50)}
    assert all(dnsauth.check_selector(s) == s and s.startswith("ptl202603") for s in seen)
    assert len(seen) > 40
    assert timedelta(days=7) == domains.RETIRED_KEEP


class Crashing:
    """A TenantStore whose `method` dies (before writing) the first `crashes` times."""

    def __init__(self, world: World, method: str, crashes: int) -> None:
        self.inner = world.fakes.tenants
        self.method = method
        self.crashes = crashes

    def __getattr__(self, name: str) -> object:
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        def dying(*args: object, **kwargs: object) -> object:
            if self.crashes:
                self.crashes -= 1
                raise RuntimeError("the function died")
            return real(*args, **kwargs)

        return dying


def _deps_with(world: World, tenants: object) -> DomainDeps:
    return DomainDeps(
        tenants=tenants,  # type: ignore[arg-type]
        secrets=world.fakes.secrets,
        resolver=world.resolver,
        clock=world.fakes.clock,
        secrets_prefix=PREFIX,
        new_selector=world.deps.new_selector,
    )


def test_a_delete_that_dies_after_the_secrets_is_finished_by_a_retry(world: World) -> None:
    tenant = world.tenant()
    world.create(tenant, ed25519=True)
    deps = _deps_with(world, Crashing(world, "delete_domain", crashes=2))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            domains.delete_domain(deps, tenant.tenant_id, "acme.test")
        assert world.fakes.secrets.secrets == {}  # the keys went first: nothing can sign with them
        assert world.fakes.tenants.get_domain(tenant.tenant_id, "acme.test") is not None
    domains.delete_domain(deps, tenant.tenant_id, "acme.test")
    assert world.fakes.tenants.domains == {} and world.fakes.tenants.domain_claims == {}
    assert world.fakes.secrets.secrets == {}


def test_a_rotation_that_dies_before_its_record_keeps_the_active_key(world: World) -> None:
    tenant = world.tenant()
    domain = world.create(tenant)
    deps = _deps_with(world, Crashing(world, "update_domain", crashes=2))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            domains.rotate_key(deps, tenant.tenant_id, "acme.test")
        assert world.stored(tenant) == domain  # unchanged: the old key still signs
        assert_one_active_rsa_key_in_secrets(world, world.stored(tenant))
    rotated = domains.rotate_key(deps, tenant.tenant_id, "acme.test")
    assert [k.state for k in rotated.keys] == ["active", "next"]
    assert_one_active_rsa_key_in_secrets(world, world.stored(tenant))
    # the two dead attempts each left an unreferenced secret (a new selector each time): unused, harmless
    referenced = {k.secret_name for k in rotated.keys}
    assert len(set(world.fakes.secrets.secrets) - referenced) == 2
