"""TenantStore contract: tenants, API keys by hash, revocation, domains, SMTP servers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from boto3.dynamodb.types import TypeSerializer

from petrel import resources
from petrel.ids import new_id
from petrel.models.records import ApiKey, DomainStatus, SendingDomain, SmtpSecurity
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


def test_a_domain_belongs_to_one_tenant(backend: Backend) -> None:
    first = records.domain("tn_a", "example.com")
    backend.tenants.create_domain(first)
    with pytest.raises(AlreadyExists):
        backend.tenants.create_domain(records.domain("tn_b", "example.com"))
    assert backend.tenants.get_domain("tn_b", "example.com") is None
    assert backend.tenants.find_domain("example.com") == first
    assert backend.tenants.find_domain("EXAMPLE.com") == first
    assert backend.tenants.find_domain("example.org") is None


def test_concurrent_creates_of_one_domain_by_two_tenants_one_wins(backend: Backend) -> None:
    import threading

    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def create(tenant_id: str) -> None:
        barrier.wait()
        try:
            backend.tenants.create_domain(records.domain(tenant_id, "race.example"))
            outcomes[tenant_id] = "created"
        except AlreadyExists:
            outcomes[tenant_id] = "refused"

    threads = [threading.Thread(target=create, args=(t,)) for t in ("tn_a", "tn_b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["created", "refused"]
    (winner,) = [t for t, outcome in outcomes.items() if outcome == "created"]
    found = backend.tenants.find_domain("race.example")
    assert found is not None and found.tenant_id == winner
    assert [d.tenant_id for d in backend.tenants.list_all_domains()] == [winner]


def test_delete_domain_frees_the_name(backend: Backend) -> None:
    domain = records.domain("tn_a", "example.com")
    backend.tenants.create_domain(domain)
    with pytest.raises(RecordNotFound):  # another tenant cannot delete it (nor its claim)
        backend.tenants.delete_domain("tn_b", "example.com")
    assert backend.tenants.find_domain("example.com") == domain
    backend.tenants.delete_domain("tn_a", "example.com")
    assert backend.tenants.get_domain("tn_a", "example.com") is None
    assert backend.tenants.find_domain("example.com") is None
    with pytest.raises(RecordNotFound):
        backend.tenants.delete_domain("tn_a", "example.com")
    backend.tenants.create_domain(records.domain("tn_b", "example.com"))
    assert backend.tenants.find_domain("example.com") is not None


def test_list_all_domains_by_tenant_then_domain(backend: Backend) -> None:
    made = [records.domain(t, d) for t, d in (("tn_b", "b.example"), ("tn_a", "z.example"), ("tn_a", "a.example"))]
    for domain in made:
        backend.tenants.create_domain(domain)
    backend.tenants.put_tenant(records.tenant(tenant_id="tn_a"))  # other items of the tenant are not domains
    backend.tenants.put_server(records.server("tn_a"))
    listed = backend.tenants.list_all_domains()
    assert [(d.tenant_id, d.domain) for d in listed] == [
        ("tn_a", "a.example"),
        ("tn_a", "z.example"),
        ("tn_b", "b.example"),
    ]
    assert listed[0] == made[2]
    assert [t.tenant_id for t in backend.tenants.list_tenants()] == ["tn_a"]  # a claim is no tenant


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


# -- writes on the revision read (a verify, a rotation and a delete that overlap never undo each other) --


def _old_style_domain(backend: Backend, request: pytest.FixtureRequest, tenant_id: str, name: str) -> None:
    """A domain as stored before issue 10: its four fields, no revision, no claim."""
    fields = {"tenant_id": tenant_id, "domain": name, "return_path_domain": name, "created_at": "2025-01-01T00:00:00Z"}
    if backend.kind == "fake":
        backend.tenants.put_domain(SendingDomain.model_validate(fields))
        return
    table = resources.physical_name("petrel-test", resources.TENANTS.name)
    item = {"pk": tenant_id, "sk": resources.domain_sk(name), **fields}
    request.getfixturevalue("aws_clients")["dynamodb"].put_item(
        TableName=table, Item=TypeSerializer().serialize(item)["M"]
    )


def test_update_domain_writes_only_on_the_revision_read(backend: Backend) -> None:
    domain = records.domain("tn_a", "example.com", status=DomainStatus.PENDING)
    backend.tenants.create_domain(domain)
    assert domain.revision == 0
    first = domain.model_copy(update={"status": DomainStatus.VERIFIED, "revision": 1})
    backend.tenants.update_domain(first, 0)
    assert backend.tenants.get_domain("tn_a", "example.com") == first
    with pytest.raises(WriteConflict):  # written on revision 0, which is gone: refused, nothing changes
        backend.tenants.update_domain(
            domain.model_copy(update={"return_path_domain": "b.example.com", "revision": 1}), 0
        )
    assert backend.tenants.get_domain("tn_a", "example.com") == first
    with pytest.raises(ValueError, match="revision"):  # the stored revision must be the next one
        backend.tenants.update_domain(first.model_copy(update={"revision": 5}), 1)
    second = first.model_copy(update={"status": DomainStatus.FAILED, "revision": 2})
    backend.tenants.update_domain(second, 1)
    assert backend.tenants.get_domain("tn_a", "example.com") == second
    assert backend.tenants.find_domain("example.com") == second
    with pytest.raises(RecordNotFound):
        backend.tenants.update_domain(records.domain("tn_b", "example.com").model_copy(update={"revision": 1}), 0)


def test_of_two_concurrent_updates_on_one_revision_one_wins(backend: Backend) -> None:
    import threading

    backend.tenants.create_domain(records.domain("tn_a", "race.example"))
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def update(rp: str) -> None:
        changed = records.domain("tn_a", "race.example", return_path=rp).model_copy(update={"revision": 1})
        barrier.wait()
        try:
            backend.tenants.update_domain(changed, 0)
            outcomes[rp] = "written"
        except WriteConflict:
            outcomes[rp] = "refused"

    threads = [threading.Thread(target=update, args=(rp,)) for rp in ("a.race.example", "b.race.example")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["refused", "written"]
    (winner,) = [rp for rp, outcome in outcomes.items() if outcome == "written"]
    found = backend.tenants.get_domain("tn_a", "race.example")
    assert found is not None and found.return_path_domain == winner and found.revision == 1


def test_an_old_domain_reads_as_revision_zero_and_is_claimed_by_its_first_update(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    _old_style_domain(backend, request, "tn_a", "old.example")
    _old_style_domain(backend, request, "tn_b", "old.example")  # before issue 10 two tenants could have one
    old = backend.tenants.get_domain("tn_a", "old.example")
    assert old is not None and old.revision == 0 and old.keys == () and old.status is DomainStatus.PENDING
    assert backend.tenants.find_domain("old.example") is None  # no claim yet
    whole = old.model_copy(update={"spf": ("a:mail.example",), "revision": 1})
    backend.tenants.update_domain(whole, 0, claim=True)
    assert backend.tenants.find_domain("old.example") == whole
    other = backend.tenants.get_domain("tn_b", "old.example")
    assert other is not None
    with pytest.raises(AlreadyExists):  # tn_a has the claim: tn_b's record is not written
        backend.tenants.update_domain(other.model_copy(update={"spf": ("a:x.example",), "revision": 1}), 0, claim=True)
    assert backend.tenants.get_domain("tn_b", "old.example") == other
    again = whole.model_copy(update={"status": DomainStatus.VERIFIED, "revision": 2})
    backend.tenants.update_domain(again, 1, claim=True)  # the claim is tn_a's already: fine
    assert backend.tenants.find_domain("old.example") == again
    with pytest.raises(WriteConflict):
        backend.tenants.update_domain(again.model_copy(update={"revision": 2}), 1, claim=True)


def test_delete_domain_on_a_revision(backend: Backend, request: pytest.FixtureRequest) -> None:
    domain = records.domain("tn_a", "example.com")
    backend.tenants.create_domain(domain)
    backend.tenants.update_domain(domain.model_copy(update={"revision": 1}), 0)
    with pytest.raises(WriteConflict):  # read at revision 0: a key added since would be orphaned
        backend.tenants.delete_domain("tn_a", "example.com", expected_revision=0)
    assert backend.tenants.find_domain("example.com") is not None
    backend.tenants.delete_domain("tn_a", "example.com", expected_revision=1)
    assert backend.tenants.find_domain("example.com") is None
    with pytest.raises(RecordNotFound):
        backend.tenants.delete_domain("tn_a", "example.com", expected_revision=1)
    _old_style_domain(backend, request, "tn_a", "old.example")
    backend.tenants.delete_domain("tn_a", "old.example", expected_revision=0)  # no revision stored: 0
    assert backend.tenants.get_domain("tn_a", "old.example") is None


def test_an_old_domain_of_a_tenant_without_the_claim_is_deleted_leaving_the_claim(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    _old_style_domain(backend, request, "tn_a", "old.example")
    _old_style_domain(backend, request, "tn_b", "old.example")
    old = backend.tenants.get_domain("tn_a", "old.example")
    assert old is not None
    claimed = old.model_copy(update={"revision": 1})
    backend.tenants.update_domain(claimed, 0, claim=True)
    backend.tenants.delete_domain("tn_b", "old.example", expected_revision=0)  # its duplicate goes, unclaimed
    assert backend.tenants.get_domain("tn_b", "old.example") is None
    assert backend.tenants.find_domain("old.example") == claimed  # tn_a's claim stays
    _old_style_domain(backend, request, "tn_b", "old.example")
    backend.tenants.delete_domain("tn_b", "old.example")
    assert backend.tenants.find_domain("old.example") == claimed


def test_pause_server_once_and_keep_other_settings(backend: Backend) -> None:
    """Two workers reaching the same verdict pause the server once (one event); the pause never rewrites
    its settings, so an operator's change stored meanwhile is kept."""
    server = records.server("tn_a")
    backend.tenants.put_server(server)
    backend.tenants.put_server(server.model_copy(update={"weight": 7}))  # an operator's change
    resume_at = DEFAULT_START + timedelta(hours=1)

    first = backend.tenants.pause_server(
        "tn_a", server.server_id, at=DEFAULT_START, reason="bounce rate 12%", resume_at=resume_at
    )
    second = backend.tenants.pause_server(
        "tn_a", server.server_id, at=DEFAULT_START + timedelta(seconds=1), reason="again", resume_at=None
    )

    assert (first, second) == (True, False)
    (stored,) = backend.tenants.list_servers("tn_a")
    assert stored.weight == 7
    assert (stored.paused_at, stored.paused_reason, stored.resume_at) == (DEFAULT_START, "bounce rate 12%", resume_at)
    assert [(e.type, e.detail) for e in stored.events] == [("server.paused", "bounce rate 12%")]


def test_resume_server_ends_only_the_pause_it_saw(backend: Backend) -> None:
    server = records.server("tn_a")
    backend.tenants.put_server(server)
    backend.tenants.pause_server("tn_a", server.server_id, at=DEFAULT_START, reason="failures", resume_at=None)
    later = DEFAULT_START + timedelta(minutes=5)

    assert not backend.tenants.resume_server("tn_a", server.server_id, paused_at=later, at=later, detail="x")
    assert backend.tenants.resume_server(
        "tn_a", server.server_id, paused_at=DEFAULT_START, at=later, detail="probation over"
    )
    assert not backend.tenants.resume_server(
        "tn_a", server.server_id, paused_at=DEFAULT_START, at=later, detail="probation over"
    )
    (stored,) = backend.tenants.list_servers("tn_a")
    assert not stored.paused and stored.paused_reason is None and stored.resume_at is None
    assert [e.type for e in stored.events] == ["server.paused", "server.resumed"]


def test_pause_of_a_missing_server_is_refused(backend: Backend) -> None:
    assert not backend.tenants.pause_server("tn_a", "srv_gone", at=DEFAULT_START, reason="x", resume_at=None)
    assert backend.tenants.list_servers("tn_a") == []


def test_fractional_rates_and_a_servers_shaping_round_trip(backend: Backend) -> None:
    """DynamoDB stores numbers as Decimals: a rate of 7.5 must come back 7.5 (not 7), a whole one whole."""
    from petrel.models.records import ServerEvent, ServerShaping, SmtpServer, WarmupStep

    tenant = records.tenant(send_rate_per_second=2.5, api_plan="bulk")
    backend.tenants.put_tenant(tenant)
    assert backend.tenants.get_tenant(tenant.tenant_id) == tenant
    server = SmtpServer(
        tenant_id=tenant.tenant_id,
        server_id="srv_1",
        host="mail.acme.test",
        port=587,
        username="relay@acme.test",
        secret_name="petrel-test/tenants/x",
        created_at=DEFAULT_START,
        shaping=ServerShaping(
            rate_per_second=7.5, bounce_threshold=0.05, warmup=(WarmupStep(day=0, daily_cap=100),), burst=15
        ),
        paused_at=DEFAULT_START,
        paused_reason="bounce rate",
        events=(ServerEvent(type="server.paused", at=DEFAULT_START, detail="bounce rate"),),
    )
    backend.tenants.put_server(server)
    assert backend.tenants.list_servers(tenant.tenant_id) == [server]
