"""Changing a sending domain (`PATCH /v1/domains/{domain}`, its admin mirror, `petrel domain update`).

Invariants, and the tests that would break them:
- A record whose name, type and value did not change keeps its last result; a new or changed one
  is `pending` (the return path moved: its records are new, the SPF/DKIM/DMARC ones stay verified).
- When a required record is new or changed, the domain is not sendable until verified again: status
  `pending`, and a verified domain records a `domain.dns_error` event naming the record.
- A change that changes nothing writes nothing and keeps the status; keys are never touched.
- An update and a verify that overlap keep each other's work (the store's write is intercepted so the
  verify runs in between): the update is re-applied to the verified revision.
- Another tenant's domain is a 404; an invalid value a 422 naming its field; unknown fields refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from petrel.errors import Conflict, InvalidRequest, NotFound
from petrel.models.api import UpdateDomainRequest
from petrel.models.records import DomainStatus, SendingDomain
from petrel.services import domains
from tests.fakes.world import FakeWorld
from tests.unit.cli_fakes import Cli
from tests.unit.test_admin_api import AdminApi, add_server, problem
from tests.unit.test_cli_admin import _publish
from tests.unit.test_domain_revisions import OLD_FIELDS, Interleaved, deps_on
from tests.unit.test_domains import World, assert_one_active_rsa_key_in_secrets
from tests.unit.test_domains_api import DomainApi


@pytest.fixture
def world() -> World:
    return World()


def verified(world: World) -> tuple[str, SendingDomain]:
    tenant = world.tenant()
    created = world.create(tenant)
    world.resolver.publish(created.records)
    domain = domains.verify(world.deps, tenant.tenant_id, "acme.test")
    assert domain.status is DomainStatus.VERIFIED
    return tenant.tenant_id, domain


def update(world: World, tenant_id: str, **fields: object) -> SendingDomain:
    return domains.update_domain(world.deps, tenant_id, "acme.test", UpdateDomainRequest.model_validate(fields))


# -- the service ---------------------------------------------------------------------------------------


def test_a_new_return_path_asks_for_its_records_and_stops_mail_until_verified(world: World) -> None:
    tenant_id, before = verified(world)
    changed = update(world, tenant_id, return_path_domain="bounces.acme.test")

    assert changed.return_path_domain == "bounces.acme.test"
    assert changed.status is DomainStatus.PENDING and not changed.sendable
    by = {(r.purpose, r.name): r for r in changed.records}
    assert by[("return_path_spf", "bounces.acme.test")].status == "pending"
    assert by[("return_path_mx", "bounces.acme.test")].status == "pending"
    assert ("return_path_mx", "acme.test") not in by
    for purpose in ("spf", "dkim", "dmarc"):  # the same records: their last result holds
        assert all(r.status == "verified" for r in changed.records if r.purpose == purpose)
    assert changed.keys == before.keys
    assert_one_active_rsa_key_in_secrets(world, changed)
    event = changed.events[-1]
    assert event.type == "domain.dns_error" and "return-path SPF record (TXT bounces.acme.test)" in str(event.detail)
    assert changed.revision == before.revision + 1
    assert world.fakes.tenants.get_domain(tenant_id, "acme.test") == changed

    world.resolver.publish(changed.records)
    again = domains.verify(world.deps, tenant_id, "acme.test")
    assert again.status is DomainStatus.VERIFIED and again.events[-1].type == "domain.verified"


def test_a_changed_spf_value_is_pending_and_a_non_required_change_keeps_the_status(world: World) -> None:
    tenant_id, before = verified(world)
    dmarc = update(world, tenant_id, dmarc_rua="mailto:reports@acme.test")
    assert dmarc.status is DomainStatus.VERIFIED and dmarc.events == before.events  # DMARC is not required
    assert next(r for r in dmarc.records if r.purpose == "dmarc").status == "pending"  # a new value

    spf = update(world, tenant_id, spf=["include:_spf.mailu.test"])
    assert spf.status is DomainStatus.PENDING
    assert next(r for r in spf.records if r.purpose == "spf").value == "v=spf1 include:_spf.mailu.test ~all"
    assert next(r for r in spf.records if r.purpose == "spf").status == "pending"
    assert next(r for r in spf.records if r.purpose == "dkim").status == "verified"


def test_a_change_that_changes_nothing_writes_nothing(world: World) -> None:
    tenant_id, before = verified(world)
    same = update(world, tenant_id, return_path_domain="ACME.test.", spf=["a:mail.acme.test"], receives=False)
    assert same == before and same.status is DomainStatus.VERIFIED
    assert update(world, tenant_id) == before


def test_a_pending_domain_stays_pending_without_an_event(world: World) -> None:
    tenant = world.tenant()
    world.create(tenant)
    changed = update(world, tenant.tenant_id, mx=["mx1.acme.test", "mx2.acme.test"])
    assert changed.status is DomainStatus.PENDING and changed.events == ()
    assert [r.value for r in changed.records if r.purpose == "return_path_mx"] == [
        "10 mx1.acme.test.",
        "10 mx2.acme.test.",
    ]


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [({"return_path_domain": "x"}, "/return_path_domain"), ({"spf": ["+all"]}, "/spf"), ({"mx": ["-bad.test"]}, "/mx")],
)
def test_invalid_values_are_refused_and_nothing_changes(world: World, fields: dict[str, object], pointer: str) -> None:
    tenant_id, before = verified(world)
    with pytest.raises(InvalidRequest) as refused:
        update(world, tenant_id, **fields)
    assert refused.value.extra["errors"][0]["pointer"] == pointer
    assert world.fakes.tenants.get_domain(tenant_id, "acme.test") == before


def test_another_tenants_domain_and_an_old_domain(world: World) -> None:
    tenant_id, _ = verified(world)
    other = world.tenant(tenant_id="tn_other")
    with pytest.raises(NotFound):
        update(world, other.tenant_id, return_path_domain="b.acme.test")
    world.fakes.tenants.put_domain(
        SendingDomain.model_validate({**OLD_FIELDS, "domain": "old.test", "tenant_id": tenant_id})
    )
    with pytest.raises(Conflict, match="verify it first"):
        domains.update_domain(world.deps, tenant_id, "old.test", UpdateDomainRequest(receives=True))


def test_an_update_overlapped_by_a_verify_is_applied_to_the_verified_revision(world: World) -> None:
    tenant = world.tenant()
    created = world.create(tenant)
    world.resolver.publish(created.records)
    store = Interleaved(world, lambda: domains.verify(world.deps, tenant.tenant_id, "acme.test"))
    request = UpdateDomainRequest(return_path_domain="bounces.acme.test")

    changed = domains.update_domain(deps_on(world, store), tenant.tenant_id, "acme.test", request)

    assert store.writes == 2  # the first write found the verify's revision
    stored = world.stored(tenant)
    assert stored == changed and stored.return_path_domain == "bounces.acme.test"
    assert stored.status is DomainStatus.PENDING and stored.revision == created.revision + 2
    assert [e.type for e in stored.events] == ["domain.verified", "domain.dns_error"]  # both requests' work
    assert next(r for r in stored.records if r.purpose == "spf").status == "verified"


def test_a_verify_overlapped_by_an_update_checks_the_new_records(world: World) -> None:
    tenant = world.tenant()
    created = world.create(tenant)
    world.resolver.publish(created.records)
    request = UpdateDomainRequest(return_path_domain="bounces.acme.test")
    store = Interleaved(world, lambda: domains.update_domain(world.deps, tenant.tenant_id, "acme.test", request))

    after = domains.verify(deps_on(world, store), tenant.tenant_id, "acme.test")

    assert after.return_path_domain == "bounces.acme.test" and world.stored(tenant) == after
    assert after.status is DomainStatus.PENDING  # the new return path's SPF is not published
    assert any(r.purpose == "return_path_spf" and r.status == "missing" for r in after.records)


def test_an_update_that_keeps_losing_gives_up_with_409(world: World) -> None:
    tenant_id, before = verified(world)
    others = [lambda: domains.verify(world.deps, tenant_id, "acme.test") for _ in range(domains.MAX_TRIES)]
    store = Interleaved(world, *others)
    with pytest.raises(Conflict):
        domains.update_domain(deps_on(world, store), tenant_id, "acme.test", UpdateDomainRequest(spf=["a:x.acme.test"]))
    stored = world.fakes.tenants.get_domain(tenant_id, "acme.test")
    assert stored is not None and stored.spf == before.spf and stored.status is DomainStatus.VERIFIED


# -- the tenant API ----------------------------------------------------------------------------------


def test_the_patch_route() -> None:
    api = DomainApi()
    created = api("POST", "/v1/domains", {"domain": "acme.test"})[1]
    api.publish(created)
    assert api("POST", "/v1/domains/acme.test/verify")[1]["status"] == "verified"

    status, view = api("PATCH", "/v1/domains/acme.test", {"return_path_domain": "bounces.acme.test"})
    assert status == 200, view
    assert view["status"] == "pending" and not view["sending_allowed"]
    assert view["return_path_domain"] == "bounces.acme.test" and view["selectors"] == created["selectors"]
    assert view["events"][-1]["type"] == "domain.dns_error"
    assert api("GET", "/v1/domains/acme.test") == (200, view)

    assert api("PATCH", "/v1/domains/acme.test", {"return_path_domain": "b.acme.test"}, tenant_id="tn_b")[0] == 404
    status, problem_ = api("PATCH", "/v1/domains/acme.test", {"spf": ["+all"]})
    assert status == 422 and problem_["errors"][0]["pointer"] == "/spf"
    assert api("PATCH", "/v1/domains/acme.test", {"selector": "s2"})[0] == 422  # keys: rotate
    assert api("PATCH", "/v1/domains/acme.test", {"spf": []})[0] == 422
    status, problem_ = api("PATCH", "/v1/domains/acme.test", {"receives": True}, scopes="send read")
    assert status == 403 and "domains" in problem_["detail"]
    assert api("GET", "/v1/domains/acme.test") == (200, view)  # the refusals changed nothing


# -- the admin API and the CLI --------------------------------------------------------------------------


def test_the_admin_patch_route() -> None:
    world = FakeWorld()
    api = AdminApi(world)
    acme, other = api.tenant(), api.tenant()
    add_server(api, acme)
    assert api("POST", f"/v1/admin/tenants/{acme}/domains", {"domain": "acme.test"}).status == 201
    changed = api("PATCH", f"/v1/admin/tenants/{acme}/domains/acme.test", {"mx": ["mx.acme.test"], "receives": True})
    assert changed.status == 200, changed
    view: dict[str, Any] = changed.json()
    assert [r["value"] for r in view["records"] if r["purpose"] == "return_path_mx"] == ["10 mx.acme.test."]
    problem(api("PATCH", f"/v1/admin/tenants/{other}/domains/acme.test", {"receives": True}), 404)
    problem(api("PATCH", f"/v1/admin/tenants/{acme}/domains/acme.test", {"mx": ["-bad"]}), 422)
    problem(api("PATCH", f"/v1/admin/tenants/{acme}/domains/acme.test", {"signer": "mailu"}), 422)
    stored = world.tenants.get_domain(acme, "acme.test")
    assert stored is not None and stored.mx == ("mx.acme.test",) and stored.receives


def test_domain_update_prints_the_records_and_asks_for_a_verify(tmp_path: Path) -> None:
    cli = Cli(FakeWorld(), tmp_path)
    tenant_id = cli.tenant()
    added = cli("--json", "domain", "add", tenant_id, "acme.example", "--spf", "a:mail.acme.example")
    assert added.status == 0, added.err
    _publish(cli, added.json())
    assert cli("domain", "verify", tenant_id, "acme.example").status == 0

    changed = cli(
        "domain", "update", tenant_id, "acme.example", "--return-path-domain", "bounces.acme.example",
        "--spf", "a:mail.acme.example", "--spf", "include:_spf.mailu.example", "--mx", "mx.acme.example",
        "--no-receives", "--dmarc-rua", "mailto:rua@acme.example",
    )  # fmt: skip
    assert changed.status == 0, changed.err
    summary, records = changed.out.split("\n\n")
    assert summary.splitlines()[1].split()[:4] == ["acme.example", "pending", "petrel", "bounces.acme.example"]
    assert records.splitlines()[0].split() == ["PURPOSE", "TYPE", "NAME", "VALUE", "REQUIRED", "STATUS", "DETAIL"]
    assert "include:_spf.mailu.example" in records and "domain verify" in changed.err
    [stored] = cli.world.tenants.list_domains(tenant_id)
    assert stored.spf == ("a:mail.acme.example", "include:_spf.mailu.example") and not stored.receives
    assert stored.dmarc_rua == "mailto:rua@acme.example" and stored.status is DomainStatus.PENDING

    nothing = cli("domain", "update", tenant_id, "acme.example")
    assert nothing.status == 2 and nothing.out == "" and nothing.err.count("\n") == 1
    refused = cli("domain", "update", tenant_id, "acme.example", "--mx=-bad")
    assert refused.status == 2 and refused.err.count("\n") == 1
    assert cli.world.tenants.list_domains(tenant_id) == [stored]
