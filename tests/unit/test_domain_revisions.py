"""Sending domains changed by overlapping requests, and domains stored before issue 10.

Invariants, and the tests that would break them:
- Every change to a domain record is made on the revision it read, or not at all: a verify, a
  rotation, a drift re-check and a delete that overlap keep each other's keys, promotions and events
  (the store's write is intercepted so that the other request runs in between).
- No orphan secret after a refused write: every DKIM secret under the tenant's prefix is named by a
  key of a stored domain (a crash between a secret and its record may leave one: documented).
- A domain stored the old way (tenant_id, domain, return_path_domain, created_at) is made whole by
  its first verification (a key in the secret store, records, its claim), once, and never by the
  drift re-check; a name another tenant claimed is refused with 409 and nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from petrel.entrypoints.api import create_api
from petrel.errors import Conflict, InvalidRequest, NotFound
from petrel.mail import dnsauth
from petrel.mail.dkim import DkimKey
from petrel.models.records import DomainStatus, SendingDomain
from petrel.services import domains
from petrel.services.domains import DomainDeps
from tests.fakes import records
from tests.unit.api_fakes import FakeApiContainer, LambdaContext, event
from tests.unit.test_domains import PREFIX, World, assert_one_active_rsa_key_in_secrets

OLD_FIELDS = {"domain": "acme.test", "return_path_domain": "acme.test", "created_at": "2025-01-01T00:00:00Z"}


@pytest.fixture
def world() -> World:
    return World()


class Interleaved:
    """A TenantStore whose next writes (`update_domain`, `delete_domain`) first run `between` (another
    request, on the plain store): the write then finds the revision it read gone."""

    def __init__(self, world: World, *between: Callable[[], object]) -> None:
        self.inner = world.fakes.tenants
        self.between = list(between)
        self.writes = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def _run_between(self) -> None:
        self.writes += 1
        if self.between:
            self.between.pop(0)()

    def update_domain(self, domain: SendingDomain, expected_revision: int, *, claim: bool = False) -> None:
        self._run_between()
        self.inner.update_domain(domain, expected_revision, claim=claim)

    def delete_domain(self, tenant_id: str, domain: str, expected_revision: int | None = None) -> None:
        self._run_between()
        self.inner.delete_domain(tenant_id, domain, expected_revision)


class CrashingWrites:
    """A TenantStore whose `update_domain` dies before writing the first `crashes` times `when` holds."""

    def __init__(self, world: World, crashes: int, when: Callable[[bool], bool] = lambda claim: True) -> None:
        self.inner = world.fakes.tenants
        self.crashes = crashes
        self.when = when

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def update_domain(self, domain: SendingDomain, expected_revision: int, *, claim: bool = False) -> None:
        if self.crashes and self.when(claim):
            self.crashes -= 1
            raise RuntimeError("the function died")
        self.inner.update_domain(domain, expected_revision, claim=claim)


def deps_on(world: World, tenants: object) -> DomainDeps:
    return DomainDeps(
        tenants=tenants,  # type: ignore[arg-type]
        secrets=world.fakes.secrets,
        resolver=world.resolver,
        clock=world.fakes.clock,
        secrets_prefix=PREFIX,
        mailboxes=world.fakes.mailboxes,
        new_selector=world.deps.new_selector,
    )


def assert_no_orphan_secret(world: World) -> None:
    named = {k.secret_name for d in world.fakes.tenants.domains.values() for k in d.keys if k.secret_name}
    assert set(world.fakes.secrets.secrets) == named


def verified_domain(world: World) -> tuple[Any, SendingDomain]:
    tenant = world.tenant()
    created = world.create(tenant)
    world.resolver.publish(created.records)
    return tenant, domains.verify(world.deps, tenant.tenant_id, "acme.test")


def dkim_record(domain: SendingDomain, selector: str) -> Any:
    return next(r for r in domain.records if r.purpose == "dkim" and r.selector == selector)


# -- overlapping changes ----------------------------------------------------------------------------


def test_a_rotation_overlapped_by_a_drift_check_keeps_its_key_and_the_failure(world: World) -> None:
    tenant, domain = verified_domain(world)
    old = domain.keys[0]

    def drift_fails_it() -> None:
        world.resolver.publish_txt(dkim_record(domain, old.selector).name)  # the DKIM record disappears
        assert domains.recheck_domains(world.deps).failed == [f"{tenant.tenant_id}/acme.test"]

    store = Interleaved(world, drift_fails_it)
    rotated = domains.rotate_key(deps_on(world, store), tenant.tenant_id, "acme.test")
    assert store.writes == 2  # refused once, re-applied on the re-read
    stored = world.stored(tenant)
    assert stored == rotated and stored.revision == 3
    assert stored.status is DomainStatus.FAILED and not stored.sendable  # the failure was not undone
    assert [e.type for e in stored.events] == ["domain.verified", "domain.dns_error"]
    new = next(k for k in stored.keys if k.state == "next")
    assert_one_active_rsa_key_in_secrets(world, stored)
    assert_no_orphan_secret(world)
    # the tenant publishes the new key: the next verification promotes it and the domain recovers
    world.resolver.publish_txt(dkim_record(stored, new.selector).name, dkim_record(stored, new.selector).value)
    promoted = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert {k.selector: k.state for k in promoted.keys} == {old.selector: "retired", new.selector: "active"}
    assert promoted.status is DomainStatus.VERIFIED
    assert [e.type for e in promoted.events] == ["domain.verified", "domain.dns_error", "domain.verified"]
    assert_one_active_rsa_key_in_secrets(world, promoted)


def test_a_verify_overlapped_by_a_rotation_keeps_the_new_key_and_promotes_it(world: World) -> None:
    tenant = world.tenant()
    created = world.create(tenant)
    world.resolver.publish(created.records)
    old = created.keys[0]

    def rotate_and_publish() -> None:
        rotating = domains.rotate_key(world.deps, tenant.tenant_id, "acme.test")
        new = next(k for k in rotating.keys if k.state == "next")
        world.resolver.publish_txt(dkim_record(rotating, new.selector).name, dkim_record(rotating, new.selector).value)

    verified = domains.verify(deps_on(world, Interleaved(world, rotate_and_publish)), tenant.tenant_id, "acme.test")
    stored = world.stored(tenant)
    assert stored == verified
    (new,) = [k for k in stored.keys if k.selector != old.selector]
    assert {k.selector: k.state for k in stored.keys} == {old.selector: "retired", new.selector: "active"}
    assert stored.status is DomainStatus.VERIFIED and [e.type for e in stored.events] == ["domain.verified"]
    assert_one_active_rsa_key_in_secrets(world, stored)
    assert_no_orphan_secret(world)


def test_two_overlapping_verifies_keep_both_events(world: World) -> None:
    tenant, domain = verified_domain(world)
    dkim = dkim_record(domain, domain.keys[0].selector)

    def drift_sees_it_gone_then_it_is_back() -> None:
        world.resolver.publish_txt(dkim.name)
        domains.recheck_domains(world.deps)
        world.resolver.publish_txt(dkim.name, dkim.value)

    world.fakes.clock.advance(hours=1)
    after = domains.verify(
        deps_on(world, Interleaved(world, drift_sees_it_gone_then_it_is_back)), tenant.tenant_id, "acme.test"
    )
    stored = world.stored(tenant)
    assert stored == after and stored.status is DomainStatus.VERIFIED
    # a blind write would have put back the first read: one `domain.verified`, the failure lost
    assert [e.type for e in stored.events] == ["domain.verified", "domain.dns_error", "domain.verified"]


def test_two_overlapping_verifies_that_both_look_once_the_record_is_gone(world: World) -> None:
    tenant, domain = verified_domain(world)
    dkim = dkim_record(domain, domain.keys[0].selector)
    world.resolver.publish_txt(dkim.name)  # both see the DKIM record gone
    store = Interleaved(world, lambda: domains.recheck_domains(world.deps))
    after = domains.verify(deps_on(world, store), tenant.tenant_id, "acme.test")
    assert after.status is DomainStatus.FAILED
    assert [e.type for e in world.stored(tenant).events] == ["domain.verified", "domain.dns_error"]  # once


def test_a_rotation_beaten_by_another_deletes_its_secret(world: World) -> None:
    tenant, _ = verified_domain(world)
    store = Interleaved(world, lambda: domains.rotate_key(world.deps, tenant.tenant_id, "acme.test"))
    with pytest.raises(Conflict, match="rotation in progress"):
        domains.rotate_key(deps_on(world, store), tenant.tenant_id, "acme.test")
    stored = world.stored(tenant)
    assert [k.state for k in stored.keys] == ["active", "next"]  # the winner's key
    assert_no_orphan_secret(world)


def test_a_rotation_that_keeps_losing_gives_up_with_409_and_no_secret(world: World) -> None:
    tenant, before = verified_domain(world)
    again = [lambda: domains.verify(world.deps, tenant.tenant_id, "acme.test")] * domains.MAX_TRIES
    store = Interleaved(world, *again)
    with pytest.raises(Conflict, match="try again"):
        domains.rotate_key(deps_on(world, store), tenant.tenant_id, "acme.test")
    assert store.writes == domains.MAX_TRIES
    stored = world.stored(tenant)
    assert stored.keys == before.keys and stored.revision == before.revision + domains.MAX_TRIES
    assert_no_orphan_secret(world)


def test_a_rotation_of_a_domain_deleted_meanwhile_deletes_its_secret(world: World) -> None:
    tenant, _ = verified_domain(world)
    store = Interleaved(world, lambda: domains.delete_domain(world.deps, tenant.tenant_id, "acme.test"))
    with pytest.raises(NotFound):
        domains.rotate_key(deps_on(world, store), tenant.tenant_id, "acme.test")
    assert world.fakes.tenants.domains == {} and world.fakes.secrets.secrets == {}


def test_a_delete_overlapped_by_a_rotation_deletes_the_new_key_too(world: World) -> None:
    tenant, _ = verified_domain(world)
    store = Interleaved(world, lambda: domains.rotate_key(world.deps, tenant.tenant_id, "acme.test"))
    domains.delete_domain(deps_on(world, store), tenant.tenant_id, "acme.test")
    assert store.writes == 2
    assert world.fakes.tenants.domains == {} and world.fakes.tenants.domain_claims == {}
    assert world.fakes.secrets.secrets == {}  # the rotation's key went with the others


def test_a_verify_of_a_domain_deleted_meanwhile_is_not_found_and_writes_nothing(world: World) -> None:
    tenant, _ = verified_domain(world)
    store = Interleaved(world, lambda: domains.delete_domain(world.deps, tenant.tenant_id, "acme.test"))
    with pytest.raises(NotFound):
        domains.verify(deps_on(world, store), tenant.tenant_id, "acme.test")
    assert world.fakes.tenants.domains == {} and world.fakes.secrets.secrets == {}


def test_a_drift_check_of_a_domain_deleted_meanwhile_skips_it(world: World) -> None:
    tenant, _ = verified_domain(world)
    store = Interleaved(world, lambda: domains.delete_domain(world.deps, tenant.tenant_id, "acme.test"))
    report = domains.recheck_domains(deps_on(world, store))
    assert report.checked == 0 and report.errors == [] and world.fakes.tenants.domains == {}


def test_a_verify_that_dies_at_its_write_twice_changes_nothing_until_it_is_retried(world: World) -> None:
    tenant = world.tenant()
    created = world.create(tenant)
    world.resolver.publish(created.records)
    deps = deps_on(world, CrashingWrites(world, crashes=2))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            domains.verify(deps, tenant.tenant_id, "acme.test")
        assert world.stored(tenant) == created
    verified = domains.verify(deps, tenant.tenant_id, "acme.test")
    assert world.stored(tenant) == verified and verified.revision == 1
    assert [e.type for e in verified.events] == ["domain.verified"]
    assert_no_orphan_secret(world)


# -- domains stored before issue 10 ---------------------------------------------------------------


def old_domain(world: World, tenant_id: str) -> SendingDomain:
    """Stored the old way: its four fields only (no keys, records, status, revision or claim)."""
    domain = SendingDomain.model_validate({"tenant_id": tenant_id, **OLD_FIELDS})
    world.fakes.tenants.put_domain(domain)
    return domain


def test_verify_makes_an_old_domain_whole_and_lists_the_records_to_publish(world: World) -> None:
    tenant = world.tenant()
    old = old_domain(world, tenant.tenant_id)
    assert domains.predates_keys(old) and old.status is DomainStatus.PENDING and not old.sendable
    assert world.fakes.tenants.find_domain("acme.test") is None
    whole = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert whole == world.stored(tenant) and whole.status is DomainStatus.PENDING and whole.revision == 2
    (key,) = whole.keys
    assert key.selector == "ptl202601s0" and key.state == "active"
    assert_one_active_rsa_key_in_secrets(world, whole)
    assert whole.spf == ("a:mail.acme.test",) and whole.mx == ("mail.acme.test",)
    assert whole.dmarc_rua == "mailto:dmarc@acme.test" and whole.return_path_domain == "acme.test"
    by = {r.purpose: r for r in whole.records}
    assert set(by) == {"spf", "dkim", "dmarc", "return_path_mx"}
    assert by["dkim"].value == f"v=DKIM1; k=rsa; p={key.public_key}" and by["dkim"].status == "missing"
    assert world.fakes.tenants.find_domain("acme.test") == whole  # claimed: no other tenant can add it
    world.resolver.publish(whole.records)
    verified = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert verified.status is DomainStatus.VERIFIED and verified.keys == whole.keys  # no second key
    assert_no_orphan_secret(world)


def test_an_old_domain_another_tenant_claimed_is_a_409_and_nothing_is_written(world: World) -> None:
    first, second = world.tenant(), world.tenant()
    old = old_domain(world, second.tenant_id)  # before issue 10 two tenants could both have it
    world.create(first)
    with pytest.raises(Conflict, match="another tenant"):
        domains.verify(world.deps, second.tenant_id, "acme.test")
    assert world.stored(second) == old
    assert_no_orphan_secret(world)
    domains.delete_domain(world.deps, second.tenant_id, "acme.test")  # as the 409 says: its copy goes
    assert world.fakes.tenants.get_domain(second.tenant_id, "acme.test") is None
    assert world.fakes.tenants.find_domain("acme.test") == world.stored(first)  # the claim stays first's


def test_an_old_domain_claimed_by_another_tenant_while_its_key_is_made_is_a_409(world: World) -> None:
    first, second = world.tenant(), world.tenant()
    old = old_domain(world, second.tenant_id)
    store = Interleaved(world, lambda: world.create(first))
    with pytest.raises(Conflict, match="another tenant"):
        domains.verify(deps_on(world, store), second.tenant_id, "acme.test")
    assert world.stored(second) == old and world.fakes.tenants.find_domain("acme.test") == world.stored(first)
    assert_no_orphan_secret(world)  # the key made for `second` went


def test_two_first_verifications_of_an_old_domain_make_one_key(world: World) -> None:
    tenant = world.tenant()
    old_domain(world, tenant.tenant_id)
    store = Interleaved(world, lambda: domains.verify(world.deps, tenant.tenant_id, "acme.test"))
    answered = domains.verify(deps_on(world, store), tenant.tenant_id, "acme.test")
    stored = world.stored(tenant)
    assert answered == stored and len(stored.keys) == 1
    assert stored.keys[0].selector == "ptl202601s1"  # the one the overlapping verification made
    assert_one_active_rsa_key_in_secrets(world, stored)
    assert_no_orphan_secret(world)


def test_an_old_domain_with_no_server_to_authorize_is_refused_and_left_alone(world: World) -> None:
    tenant = world.tenant(host=None)
    old = old_domain(world, tenant.tenant_id)
    with pytest.raises(InvalidRequest, match="no SMTP server"):
        domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert world.stored(tenant) == old and world.fakes.secrets.secrets == {}


def test_a_rotation_of_an_old_domain_asks_for_a_verify_first(world: World) -> None:
    tenant = world.tenant()
    old = old_domain(world, tenant.tenant_id)
    with pytest.raises(Conflict, match="verify it first"):
        domains.rotate_key(world.deps, tenant.tenant_id, "acme.test")
    assert world.stored(tenant) == old and world.fakes.secrets.secrets == {}


def test_the_drift_check_leaves_an_old_domain_alone(world: World) -> None:
    tenant = world.tenant()
    old = old_domain(world, tenant.tenant_id)
    report = domains.recheck_domains(world.deps)
    assert report.checked == 0 and report.errors == []
    assert world.stored(tenant) == old and world.fakes.secrets.secrets == {}


def test_an_old_domain_whose_claiming_write_dies_twice_is_made_whole_by_the_retry(world: World) -> None:
    tenant = world.tenant()
    old = old_domain(world, tenant.tenant_id)
    deps = deps_on(world, CrashingWrites(world, crashes=2, when=lambda claim: claim))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            domains.verify(deps, tenant.tenant_id, "acme.test")
        assert world.stored(tenant) == old and world.fakes.tenants.find_domain("acme.test") is None
    whole = domains.verify(deps, tenant.tenant_id, "acme.test")
    assert_one_active_rsa_key_in_secrets(world, world.stored(tenant))
    assert world.fakes.tenants.find_domain("acme.test") == whole
    # each dead attempt left the secret it made unreferenced (a new selector each time): unused, harmless
    assert len(set(world.fakes.secrets.secrets) - {k.secret_name for k in whole.keys}) == 2


def test_an_old_domain_whose_verify_write_dies_twice_is_initialized_once(world: World) -> None:
    tenant = world.tenant()
    old_domain(world, tenant.tenant_id)
    deps = deps_on(world, CrashingWrites(world, crashes=2, when=lambda claim: not claim))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            domains.verify(deps, tenant.tenant_id, "acme.test")
        stored = world.stored(tenant)
        assert [k.selector for k in stored.keys] == ["ptl202601s0"] and stored.revision == 1
    whole = domains.verify(deps, tenant.tenant_id, "acme.test")
    assert [k.selector for k in whole.keys] == ["ptl202601s0"] and whole.checked_at is not None
    assert_no_orphan_secret(world)  # made whole once: one key, one secret


# -- through the API routes ---------------------------------------------------------------------------


def call(handler: Any, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    result: dict[str, Any] = handler(event(method, path, None, **kw), LambdaContext())
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else None


def test_the_verify_route_makes_an_old_domain_whole_and_refuses_a_claimed_one() -> None:
    world = World()
    container = FakeApiContainer(world.fakes)
    handler = create_api(container)
    for tenant_id in ("tn_a", "tn_b"):
        world.fakes.tenants.put_tenant(records.tenant(tenant_id=tenant_id))
        world.fakes.tenants.put_server(records.server(tenant_id, host="mail.acme.test"))
        old_domain(world, tenant_id)
    status, view = call(handler, "POST", "/v1/domains/acme.test/verify", tenant_id="tn_a")
    assert status == 200, view
    assert view["status"] == "pending" and len(view["selectors"]) == 1 and not view["sending_allowed"]
    assert {r["purpose"] for r in view["records"]} == {"spf", "dkim", "dmarc", "return_path_mx"}
    assert {r["status"] for r in view["records"]} == {"missing"}
    status, problem = call(handler, "POST", "/v1/domains/acme.test/verify", tenant_id="tn_b")
    assert status == 409 and "another tenant" in problem["detail"]
    assert domains.predates_keys(world.stored(records.tenant(tenant_id="tn_b")))
    assert_no_orphan_secret(world)


def test_the_admin_verify_route_makes_an_old_domain_whole_and_refuses_a_claimed_one() -> None:
    from tests.unit.test_admin_api import AdminApi

    world = World()
    admin = AdminApi(world.fakes)
    for tenant_id in ("tn_a", "tn_b"):
        world.fakes.tenants.put_tenant(records.tenant(tenant_id=tenant_id))
        world.fakes.tenants.put_server(records.server(tenant_id, host="mail.acme.test"))
        old_domain(world, tenant_id)
    answer = admin("POST", "/v1/admin/tenants/tn_a/domains/acme.test/verify")
    assert answer.status == 200, answer
    view = answer.json()
    assert view["status"] == "pending" and len(view["selectors"]) == 1
    assert {r["purpose"] for r in view["records"]} == {"spf", "dkim", "dmarc", "return_path_mx"}
    assert admin("GET", "/v1/admin/domains/acme.test").json()["selectors"] == view["selectors"]  # claimed
    refused = admin("POST", "/v1/admin/tenants/tn_b/domains/acme.test/verify")
    assert refused.status == 409 and "another tenant" in refused.json()["detail"]
    assert_no_orphan_secret(world)


def test_the_caching_store_reads_a_domain_fresh_after_its_conditional_write() -> None:
    from petrel.adapters.caching import CachingTenantStore
    from petrel.ports import WriteConflict
    from tests.fakes.tenants import FakeTenantStore

    inner = FakeTenantStore()
    tenants = CachingTenantStore(inner, ttl=3600, timer=lambda: 0.0)
    domain = records.domain("tn_a", "acme.test")
    inner.create_domain(domain)
    assert tenants.get_domain("tn_a", "acme.test") == domain  # cached now
    moved = domain.model_copy(update={"status": DomainStatus.FAILED, "revision": 1})
    tenants.update_domain(moved, 0)
    assert tenants.get_domain("tn_a", "acme.test") == moved
    inner.update_domain(domain.model_copy(update={"revision": 2}), 1)  # another process writes
    with pytest.raises(WriteConflict):
        tenants.update_domain(moved.model_copy(update={"revision": 2}), 1)
    found = tenants.get_domain("tn_a", "acme.test")  # the refusal dropped the stale copy: the re-read is fresh
    assert found is not None and found.revision == 2


def test_overlapping_rotations_drawing_one_selector_never_share_its_secret(world: World) -> None:
    """The secret is written create-only: the rotation that draws a selector whose secret the other
    one has written takes another, so the winner's record names a secret no other request wrote."""
    tenant, _ = verified_domain(world)
    same = "ptl202601s1"  # the selector the overlapping rotation is about to draw too
    store = Interleaved(world, lambda: domains.rotate_key(world.deps, tenant.tenant_id, "acme.test"))
    loser = dataclasses.replace(deps_on(world, store), new_selector=lambda now: same)
    with pytest.raises(Conflict, match="rotation in progress"):
        domains.rotate_key(loser, tenant.tenant_id, "acme.test")
    stored = world.stored(tenant)
    (winner,) = [k for k in stored.keys if k.state == "next"]
    assert winner.secret_name is not None and winner.selector != same
    assert domains.secret_name(world.deps, tenant.tenant_id, "acme.test", same) in world.fakes.secrets.deleted
    pem = world.fakes.secrets.secrets[winner.secret_name]
    assert dnsauth.tags(DkimKey.load(pem).public_record())["p"] == winner.public_key  # the winner's own key
    assert_no_orphan_secret(world)
