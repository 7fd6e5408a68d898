"""Caching adapters: each wraps a port and serves repeated reads from a bounded TTL cache.

The send worker reads the same tenant configuration (tenant, servers, SMTP passwords, sending domains)
for every message, and every recipient of an email reads the same email record and body. These
wrappers keep those reads for a few seconds (the configuration) or a minute (what never changes once
stored), so the services stay pure steps over ports and the cache is a matter of composition
(petrel.container.worker), not of the service.

Every cache is a `cachetools.TTLCache`: bounded (`maxsize` entries, or bytes for bodies), least
recently used evicted first, and expired entries dropped from the oldest end without scanning the
rest. Access is under a lock (the worker relays on several threads, and the local stack runs several
invocations of one function on threads); a load runs outside it, so a slow read never blocks the other
threads' hits, and threads that miss the same key at once wait for one load. Only the wrapped methods
are cached; every other method of the port goes straight to the wrapped adapter, and writes through
the wrapper forget what they change.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cachetools import TTLCache

from petrel.models.records import EmailRecord, Mailbox, SendingDomain, SmtpServer, Tenant
from petrel.ports import BlobStore, EmailKey, MailboxStore, MessageStore, SecretStore, TenantStore

if TYPE_CHECKING:
    from datetime import datetime

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Timer = Callable[[], float]

# Entries per cache: far more tenants, servers and emails than one warm worker serves in a minute.
DEFAULT_MAXSIZE = 1024
# Bodies are bounded by their total size, not their number.
DEFAULT_BODY_BYTES = 32 * 1024 * 1024
# What never changes once stored (an email's record, its body) is kept this long.
CONTENT_TTL_SECONDS = 60.0


class TtlMemo(Generic[K, V]):
    """A thread-safe memo over a `TTLCache`: `get(key, load)` returns the cached value or loads it.

    A ttl of 0 caches nothing (every get loads). A value larger than the whole cache is returned
    without being kept.
    """

    def __init__(
        self,
        *,
        ttl: float,
        maxsize: int = DEFAULT_MAXSIZE,
        getsizeof: Callable[[V], float] | None = None,
        timer: Timer = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._cache: TTLCache[K, V] = TTLCache(maxsize=maxsize, ttl=ttl or 1, timer=timer, getsizeof=getsizeof)
        self._lock = threading.Lock()
        # One gate per key being loaded: the worker's threads that miss the same key at once (a cold
        # container's first batch) wait for one load instead of each making the same AWS call.
        self._gates: dict[K, threading.Lock] = {}

    def get(self, key: K, load: Callable[[], V], keep: Callable[[V], bool] | None = None) -> V:
        """The cached value of `key`, or `load()`'s, kept unless `keep` says no (then the next get
        loads again)."""
        if self._ttl <= 0:
            return load()
        with self._lock:
            try:
                return self._cache[key]
            except KeyError:
                gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                try:
                    return self._cache[key]  # loaded by the thread this one waited for
                except KeyError:
                    pass
            try:
                value = load()
                if keep is None or keep(value):
                    with self._lock, contextlib.suppress(ValueError):  # larger than the whole cache: not kept
                        self._cache[key] = value
            finally:  # the gate goes once the value is in: a thread arriving now finds one or the other
                with self._lock:
                    if self._gates.get(key) is gate:
                        del self._gates[key]
            return value

    def forget(self, key: K) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def put(self, key: K, value: V) -> None:
        """Keep `value` for `key`, as a load would have (nothing with a ttl of 0)."""
        if self._ttl <= 0:
            return
        with self._lock, contextlib.suppress(ValueError):  # larger than the whole cache: not kept
            self._cache[key] = value

    def known(self, keys: Iterable[K]) -> dict[K, V]:
        """The values cached for those of `keys` that are (no load)."""
        with self._lock:
            return {key: self._cache[key] for key in keys if key in self._cache}

    def __len__(self) -> int:
        with self._lock:
            self._cache.expire()
            return len(self._cache)


class _Delegating:
    """Every method the wrapper does not define is the wrapped adapter's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _usable_domain(domain: SendingDomain | None) -> bool:
    return domain is not None and domain.sendable


def _usable_servers(servers: list[SmtpServer]) -> bool:
    return any(server.enabled for server in servers)


class CachingTenantStore(_Delegating):
    """A TenantStore whose tenant, server list and sending domain reads are cached for `ttl` seconds
    (how long a worker may use a configuration the operator has just changed).

    With `usable_only` (the API's send routes) only what lets an email through is kept: a sendable
    domain, a server list with an enabled server. Whatever would refuse an email is read afresh each time,
    so a fix (a domain verified, a server added) is seen at once and only a change for the worse waits out
    the ttl. The tenant is read every time: a suspension refuses its sends at once."""

    def __init__(
        self,
        inner: TenantStore,
        *,
        ttl: float,
        maxsize: int = DEFAULT_MAXSIZE,
        timer: Timer = time.monotonic,
        usable_only: bool = False,
    ) -> None:
        super().__init__(inner)
        self.inner = inner
        self._tenant_cached = not usable_only
        self._keep_domain = _usable_domain if usable_only else None
        self._keep_servers = _usable_servers if usable_only else None
        self._tenants: TtlMemo[str, Tenant | None] = TtlMemo(ttl=ttl, maxsize=maxsize, timer=timer)
        self._servers: TtlMemo[str, list[SmtpServer]] = TtlMemo(ttl=ttl, maxsize=maxsize, timer=timer)
        self._domains: TtlMemo[tuple[str, str], SendingDomain | None] = TtlMemo(ttl=ttl, maxsize=maxsize, timer=timer)

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        if not self._tenant_cached:
            return self.inner.get_tenant(tenant_id)
        return self._tenants.get(tenant_id, lambda: self.inner.get_tenant(tenant_id))

    def list_servers(self, tenant_id: str) -> list[SmtpServer]:
        return list(self._servers.get(tenant_id, lambda: self.inner.list_servers(tenant_id), self._keep_servers))

    def get_domain(self, tenant_id: str, domain: str) -> SendingDomain | None:
        key = (tenant_id, domain)
        return self._domains.get(key, lambda: self.inner.get_domain(*key), self._keep_domain)

    def put_tenant(self, tenant: Tenant) -> None:
        self.inner.put_tenant(tenant)
        self._tenants.forget(tenant.tenant_id)

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the cached tenant: the next read is fresh (the worker confirms a suspension so)."""
        self._tenants.forget(tenant_id)

    def put_server(self, server: SmtpServer) -> None:
        self.inner.put_server(server)
        self._servers.forget(server.tenant_id)

    def delete_server(self, tenant_id: str, server_id: str) -> None:
        try:
            self.inner.delete_server(tenant_id, server_id)
        finally:
            self._servers.forget(tenant_id)

    def pause_server(
        self, tenant_id: str, server_id: str, *, at: datetime, reason: str, resume_at: datetime | None
    ) -> bool:
        try:
            return self.inner.pause_server(tenant_id, server_id, at=at, reason=reason, resume_at=resume_at)
        finally:  # paused by this call or by another worker: the next read is fresh either way
            self._servers.forget(tenant_id)

    def resume_server(self, tenant_id: str, server_id: str, *, paused_at: datetime, at: datetime, detail: str) -> bool:
        try:
            return self.inner.resume_server(tenant_id, server_id, paused_at=paused_at, at=at, detail=detail)
        finally:
            self._servers.forget(tenant_id)

    def put_domain(self, domain: SendingDomain) -> None:
        self.inner.put_domain(domain)
        self._domains.forget((domain.tenant_id, domain.domain))

    def update_domain(self, domain: SendingDomain, expected_revision: int, *, claim: bool = False) -> None:
        try:
            self.inner.update_domain(domain, expected_revision, claim=claim)
        finally:  # refused or not, the next read is fresh (a refusal means the cached one is stale)
            self._domains.forget((domain.tenant_id, domain.domain))


class CachingSecretStore(_Delegating):
    """A SecretStore whose reads are cached for `ttl` seconds. `forget_secret` drops one value, so a
    password the server refused is read again on the next try (it may have been rotated)."""

    def __init__(
        self, inner: SecretStore, *, ttl: float, maxsize: int = DEFAULT_MAXSIZE, timer: Timer = time.monotonic
    ) -> None:
        super().__init__(inner)
        self.inner = inner
        self._values: TtlMemo[str, str] = TtlMemo(ttl=ttl, maxsize=maxsize, timer=timer)

    def get_secret(self, name: str) -> str:
        return self._values.get(name, lambda: self.inner.get_secret(name))

    def forget_secret(self, name: str) -> None:
        self._values.forget(name)

    def put_secret(self, name: str, value: str) -> None:
        self.inner.put_secret(name, value)
        self._values.forget(name)

    def create_secret(self, name: str, value: str) -> None:
        try:
            self.inner.create_secret(name, value)
        finally:  # refused: the name is someone else's; read it fresh
            self._values.forget(name)

    def delete_secret(self, name: str) -> None:
        try:
            self.inner.delete_secret(name)
        finally:
            self._values.forget(name)


class CachingBlobStore(_Delegating):
    """A BlobStore whose reads are cached for `ttl` seconds, bounded by their total size in bytes:
    every recipient of a large email relays the same body."""

    def __init__(
        self,
        inner: BlobStore,
        *,
        ttl: float = CONTENT_TTL_SECONDS,
        max_bytes: int = DEFAULT_BODY_BYTES,
        timer: Timer = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.inner = inner
        self._bodies: TtlMemo[str, bytes] = TtlMemo(ttl=ttl, maxsize=max_bytes, getsizeof=len, timer=timer)

    def get(self, key: str) -> bytes:
        return self._bodies.get(key, lambda: self.inner.get(key))

    def put(self, key: str, data: bytes, content_type: str = "message/rfc822") -> None:
        self.inner.put(key, data, content_type)
        self._bodies.forget(key)


class CachingMessageStore(_Delegating):
    """A MessageStore whose email records (never changed once stored) are cached for `ttl` seconds:
    an email's recipients share one read. Messages, whose status moves, are never cached."""

    def __init__(
        self,
        inner: MessageStore,
        *,
        ttl: float = CONTENT_TTL_SECONDS,
        maxsize: int = DEFAULT_MAXSIZE,
        timer: Timer = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.inner = inner
        self._emails: TtlMemo[EmailKey, EmailRecord | None] = TtlMemo(ttl=ttl, maxsize=maxsize, timer=timer)

    def get_email_record(self, key: EmailKey) -> EmailRecord | None:
        return self._emails.get(key, lambda: self.inner.get_email_record(key))

    def get_email_records(self, keys: Sequence[EmailKey]) -> dict[EmailKey, EmailRecord]:
        """Those not cached read together, and kept: the batch's jobs then find theirs here. One the
        read missed is not kept as missing (`get_email_record` reads it alone)."""
        wanted = list(dict.fromkeys(keys))
        known = self._emails.known(wanted)
        missing = [key for key in wanted if key not in known]
        found = self.inner.get_email_records(missing) if missing else {}
        for key, read in found.items():
            self._emails.put(key, read)
        both = {**known, **found}
        return {key: record for key in wanted if (record := both.get(key)) is not None}


class CachingMailboxStore(_Delegating):
    """A MailboxStore whose per-tenant mailbox list is cached for `ttl` seconds: the send worker asks
    for every message whether its recipient's domain is one the tenant receives (local delivery)."""

    def __init__(
        self, inner: MailboxStore, *, ttl: float, maxsize: int = DEFAULT_MAXSIZE, timer: Timer = time.monotonic
    ) -> None:
        super().__init__(inner)
        self.inner = inner
        self._lists: TtlMemo[str, list[Mailbox]] = TtlMemo(ttl=ttl, maxsize=maxsize, timer=timer)

    def list_mailboxes(self, tenant_id: str) -> list[Mailbox]:
        return list(self._lists.get(tenant_id, lambda: self.inner.list_mailboxes(tenant_id)))

    def put_mailbox(self, mailbox: Mailbox) -> None:
        self.inner.put_mailbox(mailbox)
        self._lists.forget(mailbox.tenant_id)

    def create_mailbox(self, mailbox: Mailbox) -> None:
        self.inner.create_mailbox(mailbox)
        self._lists.forget(mailbox.tenant_id)

    def delete_mailbox(self, tenant_id: str, mailbox_id: str) -> None:
        try:
            self.inner.delete_mailbox(tenant_id, mailbox_id)
        finally:
            self._lists.forget(tenant_id)


@dataclass(frozen=True)
class CachedPorts:
    """The send worker's ports with their caches (see `cache_ports`)."""

    tenants: CachingTenantStore
    secrets: CachingSecretStore
    blobs: CachingBlobStore
    messages: CachingMessageStore
    mailboxes: CachingMailboxStore


def cache_ports(
    *,
    tenants: TenantStore,
    secrets: SecretStore,
    blobs: BlobStore,
    messages: MessageStore,
    mailboxes: MailboxStore,
    config_ttl: float,
    content_ttl: float = CONTENT_TTL_SECONDS,
    timer: Timer = time.monotonic,
) -> CachedPorts:
    """Wrap the send worker's ports: configuration and secrets for `config_ttl` seconds (how long an
    operator's change may take to reach a warm worker), email records and bodies for `content_ttl`.
    The container wraps the real adapters with it, and the tests the fakes, the same way."""
    return CachedPorts(
        tenants=CachingTenantStore(tenants, ttl=config_ttl, timer=timer),
        secrets=CachingSecretStore(secrets, ttl=config_ttl, timer=timer),
        blobs=CachingBlobStore(blobs, ttl=content_ttl, timer=timer),
        messages=CachingMessageStore(messages, ttl=content_ttl, timer=timer),
        mailboxes=CachingMailboxStore(mailboxes, ttl=config_ttl, timer=timer),
    )
