"""TenantStore contract: tenants, API keys by hash, revocation, domains, SMTP servers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from petrel.ids import new_id
from petrel.models.records import ApiKey, SmtpSecurity
from petrel.ports import AlreadyExists, RecordNotFound, WriteConflict
from tests.fakes import records
from tests.fakes.clock import DEFAULT_START
from tests.integration.contracts.backends import Backend


def _key(tenant_id: str, key_hash: str, **fields: object) -> ApiKey:
    return ApiKey(
        tenant_id=tenant_id,
        key_id=fields.pop("key_id", new_id("key")),  # type: ignore[arg-type]
        key_hash=key_hash,
        prefix="ptl_abcdef",
        created_at=DEFAULT_START,
        **fields,  # type: ignore[arg-type]
    )


def test_put_and_get_tenant(backend: Backend) -> None:
    tenant = records.tenant("Acme", max_message_bytes=1_000_000)

    backend.tenants.put_tenant(tenant)

    assert backend.tenants.get_tenant(tenant.tenant_id) == tenant
    assert backend.tenants.get_tenant(new_id("tn")) is None


def test_list_tenants_oldest_first(backend: Backend) -> None:
    later = records.tenant("Later", at=DEFAULT_START + timedelta(hours=1))
    earlier = records.tenant("Earlier")
    backend.tenants.put_tenant(later)
    backend.tenants.put_tenant(earlier)

    assert [t.name for t in backend.tenants.list_tenants()] == ["Earlier", "Later"]


def test_put_tenant_overwrites(backend: Backend) -> None:
    tenant = records.tenant("Acme")
    backend.tenants.put_tenant(tenant)
    backend.tenants.put_tenant(tenant.model_copy(update={"name": "Acme Corp"}))

    found = backend.tenants.get_tenant(tenant.tenant_id)
    assert found is not None and found.name == "Acme Corp"


def test_api_key_found_by_hash_only(backend: Backend) -> None:
    key = _key("tn_a", "a" * 64, scopes=("emails:send",), name="ci")
    backend.tenants.put_api_key(key)

    assert backend.tenants.find_api_key("a" * 64) == key
    assert backend.tenants.find_api_key("b" * 64) is None
    assert backend.tenants.list_api_keys("tn_a") == [key]
    assert backend.tenants.list_api_keys("tn_b") == []


def test_an_ambiguous_hash_finds_nothing(backend: Backend) -> None:
    backend.tenants.put_api_key(_key("tn_a", "e" * 64))
    backend.tenants.put_api_key(_key("tn_b", "e" * 64))

    assert backend.tenants.find_api_key("e" * 64) is None


def test_revoke_api_key_once(backend: Backend) -> None:
    key = _key("tn_a", "c" * 64)
    backend.tenants.put_api_key(key)
    at = DEFAULT_START + timedelta(days=1)

    backend.tenants.revoke_api_key("tn_a", key.key_id, at)
    with pytest.raises(WriteConflict):  # already revoked: the first revocation's time stands
        backend.tenants.revoke_api_key("tn_a", key.key_id, at + timedelta(hours=1))

    found = backend.tenants.find_api_key("c" * 64)
    assert found is not None and found.revoked_at == at and not found.active


def test_revoke_unknown_or_foreign_key_is_refused(backend: Backend) -> None:
    key = _key("tn_a", "d" * 64)
    backend.tenants.put_api_key(key)

    with pytest.raises(RecordNotFound):
        backend.tenants.revoke_api_key("tn_b", key.key_id, DEFAULT_START)
    with pytest.raises(RecordNotFound):
        backend.tenants.revoke_api_key("tn_a", new_id("key"), DEFAULT_START)
    found = backend.tenants.find_api_key("d" * 64)
    assert found is not None and found.active


def test_domains_per_tenant(backend: Backend) -> None:
    first = records.domain("tn_a", "example.com", return_path="bounce.example.com")
    second = records.domain("tn_a", "example.net")
    other = records.domain("tn_b", "example.org")
    for d in (second, first, other):
        backend.tenants.put_domain(d)

    assert backend.tenants.get_domain("tn_a", "example.com") == first
    assert backend.tenants.get_domain("tn_b", "example.com") is None
    assert backend.tenants.get_domain("tn_a", "example.org") is None
    assert backend.tenants.list_domains("tn_a") == [first, second]
    assert backend.tenants.list_domains("tn_b") == [other]


def test_creating_a_domain_the_tenant_has_raises_already_exists_and_keeps_the_first(backend: Backend) -> None:
    first = records.domain("tn_a", "example.com")
    backend.tenants.create_domain(first)
    with pytest.raises(AlreadyExists):
        backend.tenants.create_domain(first.model_copy(update={"return_path_domain": "other.example.com"}))
    assert backend.tenants.get_domain("tn_a", "example.com") == first
    backend.tenants.create_domain(records.domain("tn_b", "example.com"))  # another tenant's is another record
    assert backend.tenants.get_domain("tn_b", "example.com") is not None


def test_servers_listed_deleted_and_kept_per_tenant(backend: Backend) -> None:
    kept = records.server("tn_a", security=SmtpSecurity.TLS, port=465, weight=3, pool="bulk", ca_bundle="PEM")
    gone = records.server("tn_a", enabled=False)
    foreign = records.server("tn_b")
    for s in (kept, gone, foreign):
        backend.tenants.put_server(s)

    assert sorted(backend.tenants.list_servers("tn_a"), key=lambda s: s.server_id) == sorted(
        [kept, gone], key=lambda s: s.server_id
    )

    backend.tenants.delete_server("tn_a", gone.server_id)
    with pytest.raises(RecordNotFound):
        backend.tenants.delete_server("tn_a", gone.server_id)
    with pytest.raises(RecordNotFound):  # another tenant's server
        backend.tenants.delete_server("tn_a", foreign.server_id)

    assert backend.tenants.list_servers("tn_a") == [kept]
    assert backend.tenants.list_servers("tn_b") == [foreign]
