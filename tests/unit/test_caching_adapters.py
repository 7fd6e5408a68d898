"""petrel.adapters.caching: the caching adapters the worker's container puts around its ports (and
FakeWorld around the fakes): hits within the TTL, reads again after it, bounded in entries or bytes,
forgets what a write through it changes, and never caches what moves (a message's status)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import pytest

from petrel.adapters.caching import (
    CachingBlobStore,
    CachingMessageStore,
    CachingSecretStore,
    CachingTenantStore,
    TtlMemo,
    cache_ports,
)
from petrel.models.records import DomainStatus, EmailRecord, MessageStatus, SmtpServer, Tenant
from petrel.ports import AlreadyExists, EmailKey, MessageKey, RecordNotFound
from tests.fakes import records
from tests.fakes.infra import FakeBlobStore, FakeSecretStore
from tests.fakes.mailboxes import FakeMailboxStore
from tests.fakes.messages import FakeMessageStore
from tests.fakes.tenants import FakeTenantStore


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingTenantStore(FakeTenantStore):
    def __init__(self) -> None:
        super().__init__()
        self.tenant_reads = 0
        self.server_reads = 0

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        self.tenant_reads += 1
        return super().get_tenant(tenant_id)

    def list_servers(self, tenant_id: str) -> list[SmtpServer]:
        self.server_reads += 1
        return super().list_servers(tenant_id)


def test_a_memo_hits_within_its_ttl_and_loads_again_after() -> None:
    tick = Ticker()
    memo: TtlMemo[str, int] = TtlMemo(ttl=10, timer=tick)
    loads: list[int] = []

    def load(value: int) -> int:
        loads.append(value)
        return value

    assert memo.get("a", lambda: load(1)) == 1
    tick.now = 9.9
    assert memo.get("a", lambda: load(2)) == 1
    tick.now = 10.1
    assert memo.get("a", lambda: load(3)) == 3
    assert loads == [1, 3]


def test_a_memo_is_bounded_and_drops_what_expired() -> None:
    tick = Ticker()
    memo: TtlMemo[int, int] = TtlMemo(ttl=5, maxsize=3, timer=tick)
    for key in range(5):
        memo.get(key, functools.partial(int, key))
    assert len(memo) == 3  # the least recently used went first
    assert memo.get(0, lambda: -1) == -1  # evicted: loaded again

    tick.now = 6
    assert len(memo) == 0  # expired entries are gone, without a load to trigger it


def test_a_ttl_of_zero_caches_nothing() -> None:
    memo: TtlMemo[str, int] = TtlMemo(ttl=0, timer=Ticker())
    assert memo.get("a", lambda: 1) == 1
    assert memo.get("a", lambda: 2) == 2
    assert len(memo) == 0


def test_forget_forces_a_load() -> None:
    memo: TtlMemo[str, int] = TtlMemo(ttl=60, timer=Ticker())
    memo.get("k", lambda: 1)
    memo.forget("k")
    memo.forget("never-there")
    assert memo.get("k", lambda: 2) == 2


def test_a_load_that_raises_caches_nothing() -> None:
    memo: TtlMemo[str, int] = TtlMemo(ttl=60, timer=Ticker())

    def down() -> int:
        raise RecordNotFound("gone")

    with pytest.raises(RecordNotFound):
        memo.get("k", down)
    assert memo.get("k", lambda: 7) == 7


def test_threads_that_miss_the_same_key_at_once_wait_for_one_load() -> None:
    memo: TtlMemo[str, int] = TtlMemo(ttl=60, timer=Ticker())
    release = threading.Event()
    loads: list[str] = []
    results: list[int] = []

    def slow() -> int:
        loads.append("k")
        assert release.wait(5)
        return 42

    threads = [threading.Thread(target=lambda: results.append(memo.get("k", slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
    other = memo.get("other", lambda: 1)  # another key is not held up by the load in flight
    release.set()
    for thread in threads:
        thread.join(5)
    assert (loads, results, other) == (["k"], [42] * 4, 1)


def test_threads_waiting_on_a_load_that_raises_load_again() -> None:
    memo: TtlMemo[str, int] = TtlMemo(ttl=60, timer=Ticker())
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def first() -> int:
        calls.append(1)
        started.set()
        assert release.wait(5)
        raise RecordNotFound("gone")

    failures: list[BaseException] = []

    def run_first() -> None:
        try:
            memo.get("k", first)
        except RecordNotFound as exc:
            failures.append(exc)

    loser = threading.Thread(target=run_first)
    loser.start()
    assert started.wait(5)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(memo.get("k", lambda: calls.append(2) or 7)))
    waiter.start()
    release.set()
    loser.join(5)
    waiter.join(5)
    assert (len(failures), got, calls) == (1, [7], [1, 2])


def test_tenant_reads_are_cached_and_writes_through_the_cache_forget_them() -> None:
    tick = Ticker()
    inner = CountingTenantStore()
    tenants = CachingTenantStore(inner, ttl=30, timer=tick)
    tenant = records.tenant()
    server = records.server(tenant.tenant_id)
    inner.put_tenant(tenant)
    inner.put_server(server)

    assert tenants.get_tenant(tenant.tenant_id) == tenants.get_tenant(tenant.tenant_id) == tenant
    assert tenants.list_servers(tenant.tenant_id) == [server]
    tenants.list_servers(tenant.tenant_id)
    assert (inner.tenant_reads, inner.server_reads) == (1, 1)

    backup = records.server(tenant.tenant_id, host="backup.example.com")
    tenants.put_server(backup)  # a write through the cache forgets the tenant's server list
    assert {s.host for s in tenants.list_servers(tenant.tenant_id)} == {server.host, "backup.example.com"}
    assert inner.server_reads == 2

    tenants.delete_server(tenant.tenant_id, backup.server_id)
    assert tenants.list_servers(tenant.tenant_id) == [server]
    assert tenants.list_tenants() == [tenant]  # not cached: straight to the store


def test_a_memo_returns_but_does_not_keep_what_keep_refuses() -> None:
    memo: TtlMemo[str, int] = TtlMemo(ttl=30, timer=Ticker())
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    def odd(value: int) -> bool:
        return value % 2 == 1

    assert [memo.get("k", load, odd) for _ in range(3)] == [1, 1, 1]  # 1 is kept
    memo.forget("k")
    assert memo.get("k", load, odd) == 2  # refused: returned, not kept
    assert memo.get("k", load, odd) == 3  # so the next get loads again, and keeps it
    assert memo.get("k", load, odd) == 3 and len(loads) == 3


def test_the_send_routes_cache_keeps_only_what_lets_an_email_through() -> None:
    """`usable_only` (the API's send routes): a sendable domain and a server list with an enabled server
    are read once per ttl; a missing or unverified domain and a list without an enabled server are read
    on every call, so a fix shows at once; the tenant is read every time (a suspension refuses at once)."""
    tick = Ticker()
    inner = CountingTenantStore()
    tenants = CachingTenantStore(inner, ttl=5, timer=tick, usable_only=True)
    tenant = records.tenant()
    tid = tenant.tenant_id
    inner.put_tenant(tenant)
    assert tenants.get_tenant(tid) == tenants.get_tenant(tid) == tenant
    suspended = tenant.model_copy(update={"suspended_at": records.DEFAULT_START, "suspended_reason": "abuse"})
    inner.put_tenant(suspended)
    assert tenants.get_tenant(tid) == suspended and inner.tenant_reads == 3

    assert tenants.get_domain(tid, "example.com") is None
    inner.put_domain(records.domain(tid, status=DomainStatus.PENDING))
    pending = tenants.get_domain(tid, "example.com")
    assert pending is not None and not pending.sendable  # the missing domain was not kept
    verified = records.domain(tid)
    inner.put_domain(verified)
    assert tenants.get_domain(tid, "example.com") == verified  # nor the unverified one
    inner.put_domain(records.domain(tid, status=DomainStatus.FAILED))  # behind the cache
    assert tenants.get_domain(tid, "example.com") == verified  # the verified one is kept...
    tick.now = 6
    failed = tenants.get_domain(tid, "example.com")
    assert failed is not None and failed.status is DomainStatus.FAILED  # ...for the ttl

    disabled = records.server(tid, enabled=False)
    inner.put_server(disabled)
    assert tenants.list_servers(tid) == tenants.list_servers(tid) == [disabled]
    assert inner.server_reads == 2  # no enabled server: read each time
    inner.put_server(disabled.model_copy(update={"enabled": True}))
    assert tenants.list_servers(tid)[0].enabled and tenants.list_servers(tid)[0].enabled
    assert inner.server_reads == 3  # an enabled one: kept


def test_a_change_made_behind_the_cache_shows_after_the_ttl() -> None:
    tick = Ticker()
    inner = FakeTenantStore()
    tenants = CachingTenantStore(inner, ttl=30, timer=tick)
    tenant = records.tenant()
    domain = records.domain(tenant.tenant_id, return_path="bounces.example.com")
    inner.put_domain(domain)

    assert tenants.get_domain(tenant.tenant_id, "example.com") == domain
    inner.put_domain(records.domain(tenant.tenant_id, return_path="rp.example.com"))  # another process
    assert tenants.get_domain(tenant.tenant_id, "example.com") == domain
    tick.now = 31
    changed = tenants.get_domain(tenant.tenant_id, "example.com")
    assert changed is not None and changed.return_path_domain == "rp.example.com"


def test_a_forgotten_secret_is_read_again() -> None:
    inner = FakeSecretStore()
    inner.put_secret("smtp/1", "pw-1")
    secrets = CachingSecretStore(inner, ttl=3600, timer=Ticker())

    assert secrets.get_secret("smtp/1") == secrets.get_secret("smtp/1") == "pw-1"
    assert inner.reads == 1
    inner.put_secret("smtp/1", "pw-2")  # rotated in the store
    assert secrets.get_secret("smtp/1") == "pw-1"
    secrets.forget_secret("smtp/1")  # the server refused it
    assert secrets.get_secret("smtp/1") == "pw-2" and inner.reads == 2

    secrets.put_secret("smtp/1", "pw-3")  # a write through the cache
    assert secrets.get_secret("smtp/1") == "pw-3"
    secrets.delete_secret("smtp/1")
    with pytest.raises(RecordNotFound):
        secrets.get_secret("smtp/1")


def test_a_create_through_the_cache_is_create_only_and_read_fresh() -> None:
    inner = FakeSecretStore()
    secrets = CachingSecretStore(inner, ttl=3600, timer=Ticker())
    with pytest.raises(RecordNotFound):
        secrets.get_secret("dkim/s1")

    secrets.create_secret("dkim/s1", "key-1")
    assert secrets.get_secret("dkim/s1") == "key-1"
    inner.secrets["dkim/s1"] = "key-2"  # another writer's value, which the cache has not seen
    with pytest.raises(AlreadyExists):
        secrets.create_secret("dkim/s1", "key-3")
    assert secrets.get_secret("dkim/s1") == "key-2"  # the refusal dropped the cached value: read fresh


def test_bodies_are_bounded_by_their_total_size() -> None:
    inner = FakeBlobStore()
    for name in ("a", "b", "big"):
        inner.put(name, name.encode() * (600 if name != "big" else 2000))
    bodies = CachingBlobStore(inner, ttl=60, max_bytes=1000, timer=Ticker())

    bodies.get("a")
    bodies.get("a")
    assert inner.gets == 1
    bodies.get("b")  # 1200 bytes would not fit: the older body goes
    bodies.get("a")
    assert inner.gets == 3
    assert bodies.get("big") == b"big" * 2000  # larger than the whole cache: served, not kept
    bodies.get("big")
    assert inner.gets == 5


class CountingMessageStore(FakeMessageStore):
    def __init__(self) -> None:
        super().__init__()
        self.single: list[EmailKey] = []
        self.together: list[list[EmailKey]] = []

    def get_email_record(self, key: EmailKey) -> EmailRecord | None:
        self.single.append(key)
        return super().get_email_record(key)

    def get_email_records(self, keys: Sequence[EmailKey]) -> dict[EmailKey, EmailRecord]:
        self.together.append(list(keys))
        return super().get_email_records(keys)


def test_email_records_read_together_are_kept_for_each_jobs_own_read() -> None:
    inner = CountingMessageStore()
    stored = [records.email("tn_1", ["bob@example.org"]) for _ in range(3)]
    for email, messages in stored:
        inner.create_email(email, messages, 0)
    store = CachingMessageStore(inner, ttl=60, timer=Ticker())
    keys = [EmailKey.of(email) for email, _ in stored]
    assert store.get_email_record(keys[0]) == stored[0][0]  # cached already: not read again
    missing = EmailKey("tn_1", "em_01KAAAAAAAAAAAAAAAAAAAAAAA")

    found = store.get_email_records([*keys, missing, keys[1]])

    assert found == {key: email for key, (email, _) in zip(keys, stored, strict=True)}
    assert inner.together == [[keys[1], keys[2], missing]]
    assert [store.get_email_record(key) for key in keys] == [email for email, _ in stored]
    assert inner.single == [keys[0]]  # each job's own read found its record kept
    assert store.get_email_record(missing) is None
    assert inner.single == [keys[0], missing]  # a record the read missed is not kept as missing: read alone
    store.get_email_records(keys)
    assert len(inner.together) == 1  # all kept: no read at all


def test_email_records_are_cached_but_messages_never() -> None:
    inner = FakeMessageStore()
    email, (message,) = records.email("tn_1", ["bob@example.org"])
    inner.create_email(email, [message], 0)
    store = CachingMessageStore(inner, ttl=60, timer=Ticker())
    key = MessageKey.of(message)

    assert store.get_email_record(EmailKey.of(email)) == email
    now = 1_000
    store.lease(key, after_attempt=0, now=now, lease_until=now + 60)  # straight to the store
    current = store.get_message(key)
    assert current is not None and current.status is MessageStatus.SENDING


def test_cache_ports_wraps_each_port_with_its_ttl() -> None:
    tick = Ticker()
    tenants, secrets, blobs, messages = FakeTenantStore(), FakeSecretStore(), FakeBlobStore(), FakeMessageStore()
    secrets.put_secret("s", "v")
    blobs.put("body", b"x")
    mailboxes = FakeMailboxStore()
    cached = cache_ports(
        tenants=tenants,
        secrets=secrets,
        blobs=blobs,
        messages=messages,
        mailboxes=mailboxes,
        config_ttl=5,
        content_ttl=60,
        timer=tick,
    )

    cached.secrets.get_secret("s")
    cached.blobs.get("body")
    tick.now = 6  # past the configuration's TTL, within the content's
    cached.secrets.get_secret("s")
    cached.blobs.get("body")
    assert (secrets.reads, blobs.gets) == (2, 1)


def test_threads_share_one_cache() -> None:
    inner = FakeSecretStore()
    inner.put_secret("s", "v")
    secrets = CachingSecretStore(inner, ttl=3600)
    seen: list[str] = []

    def read() -> None:
        for _ in range(200):
            seen.append(secrets.get_secret("s"))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == ["v"] * 1600
    assert inner.reads <= 8  # at most one load per thread that missed before the first store
