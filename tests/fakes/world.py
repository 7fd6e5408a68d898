"""All the fakes together, wired into the services' dependency bundles."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from petrel import resources
from petrel.adapters.caching import cache_ports
from petrel.models.records import SendingDomain, SmtpServer, Tenant
from petrel.models.retry import RetryLadder
from petrel.services.cancel import CancelDeps
from petrel.services.deliver import DeliverDeps
from petrel.services.dispatch import DispatchDeps
from petrel.services.ingest import IngestDeps
from petrel.services.release import ReleaseDeps
from petrel.services.server_health import HealthDeps
from petrel.services.signing import MessageSigner
from petrel.services.submit import SubmitDeps
from petrel.services.sweep import SweepDeps
from petrel.services.tenants import AdminDeps
from tests.fakes import records
from tests.fakes.buckets import FakeTokenBuckets
from tests.fakes.clock import FixedClock
from tests.fakes.idempotency import FakeIdempotencyStore
from tests.fakes.inbound import FakeInboundStore, FakeIngestQueue
from tests.fakes.infra import FakeBlobStore, FakeJobQueue, FakeRetryScheduler, FakeSecretStore
from tests.fakes.mailboxes import FakeMailboxStore
from tests.fakes.messages import FakeMessageStore
from tests.fakes.smtp import FakeSmtpRelay
from tests.fakes.suppressions import FakeSuppressionStore
from tests.fakes.tenants import FakeTenantStore


@dataclass
class Seeded:
    tenant: Tenant
    domain: SendingDomain
    server: SmtpServer


@dataclass
class FakeWorld:
    tenants: FakeTenantStore = field(default_factory=FakeTenantStore)
    messages: FakeMessageStore = field(default_factory=FakeMessageStore)
    idempotency: FakeIdempotencyStore = field(default_factory=FakeIdempotencyStore)
    blobs: FakeBlobStore = field(default_factory=FakeBlobStore)
    queue: FakeJobQueue = field(default_factory=FakeJobQueue)
    secrets: FakeSecretStore = field(default_factory=FakeSecretStore)
    relay: FakeSmtpRelay = field(default_factory=FakeSmtpRelay)
    clock: FixedClock = field(default_factory=FixedClock)
    suppressions: FakeSuppressionStore = field(default_factory=FakeSuppressionStore)
    scheduler: FakeRetryScheduler = field(default_factory=FakeRetryScheduler)
    mailboxes: FakeMailboxStore = field(default_factory=FakeMailboxStore)
    inbound: FakeInboundStore = field(default_factory=FakeInboundStore)
    ingest_queue: FakeIngestQueue = field(default_factory=FakeIngestQueue)
    buckets: FakeTokenBuckets = field(default_factory=FakeTokenBuckets)
    # A recipient domain's provider group (the worker looks its MX up): the domain itself here.
    providers: dict[str, str] = field(default_factory=dict)

    def submit_deps(self, *, inline_body_limit: int = 96 * 1024, retention_days: int = 30) -> SubmitDeps:
        return SubmitDeps(
            tenants=self.tenants,
            messages=self.messages,
            blobs=self.blobs,
            queue=self.queue,
            scheduler=self.scheduler,
            clock=self.clock,
            retention_days=retention_days,
            inline_body_limit=inline_body_limit,
        )

    def deliver_deps(
        self,
        *,
        lease_seconds: int = 120,
        cache_seconds: float = 0,
        seed: int = 7,
        ladder: RetryLadder | None = None,
        max_receive_count: int = 3,
    ) -> DeliverDeps:
        """The worker's deps on the fakes, behind the same caching adapters as the container's
        (configuration cached `cache_seconds`, email records and bodies a minute)."""
        cached = cache_ports(
            tenants=self.tenants,
            secrets=self.secrets,
            blobs=self.blobs,
            messages=self.messages,
            mailboxes=self.mailboxes,
            config_ttl=cache_seconds,
        )
        return DeliverDeps(
            tenants=cached.tenants,
            messages=cached.messages,
            blobs=cached.blobs,
            secrets=cached.secrets,
            relay=self.relay,
            clock=self.clock,
            suppressions=self.suppressions,
            scheduler=self.scheduler,
            lease_seconds=lease_seconds,
            ladder=ladder or RetryLadder(),
            rng=random.Random(seed),
            max_receive_count=max_receive_count,
            mailboxes=cached.mailboxes,
            ingest=self.ingest_queue,
            signer=MessageSigner(cached.secrets, self.clock),
        )

    def dispatch_deps(self, *, seed: int = 7) -> DispatchDeps:
        """The worker's batch dispatch on the fakes (configuration read uncached)."""
        return DispatchDeps(
            tenants=cache_ports(
                tenants=self.tenants,
                secrets=self.secrets,
                blobs=self.blobs,
                messages=self.messages,
                mailboxes=self.mailboxes,
                config_ttl=0,
            ).tenants,
            mailboxes=self.mailboxes,
            buckets=self.buckets,
            provider_of=lambda domain: self.providers.get(domain, domain),
            clock=self.clock,
            rng=random.Random(seed),
        )

    def health_deps(self) -> HealthDeps:
        return HealthDeps(tenants=self.tenants, buckets=self.buckets)

    def ingest_deps(self, *, retention_days: int = 30) -> IngestDeps:
        return IngestDeps(
            inbound=self.inbound,
            messages=self.messages,
            suppressions=self.suppressions,
            mailboxes=self.mailboxes,
            blobs=self.blobs,
            clock=self.clock,
            retention_days=retention_days,
        )

    def release_deps(self) -> ReleaseDeps:
        return ReleaseDeps(messages=self.messages, queue=self.queue)

    def sweep_deps(self, *, grace_seconds: int = 900, max_messages: int = 1000, backlog_limit: int = 1000) -> SweepDeps:
        return SweepDeps(
            messages=self.messages,
            queue=self.queue,
            clock=self.clock,
            shards=resources.due_shards(),
            tenant_ids=lambda: [t.tenant_id for t in self.tenants.list_tenants()],
            grace_seconds=grace_seconds,
            max_messages=max_messages,
            backlog_limit=backlog_limit,
        )

    def cancel_deps(self) -> CancelDeps:
        return CancelDeps(messages=self.messages, scheduler=self.scheduler, clock=self.clock)

    def admin_deps(self, secrets_prefix: str = "petrel-test/tenants/") -> AdminDeps:
        return AdminDeps(tenants=self.tenants, secrets=self.secrets, clock=self.clock, secrets_prefix=secrets_prefix)

    def seed(self, *, domain: str = "example.com", return_path: str | None = None, password: str = "s3cret") -> Seeded:
        """A tenant with one sending domain and one enabled transactional server (its password stored)."""
        tenant = records.tenant()
        sending = records.domain(tenant.tenant_id, domain, return_path=return_path)
        server = records.server(tenant.tenant_id)
        self.tenants.put_tenant(tenant)
        self.tenants.put_domain(sending)
        self.tenants.put_server(server)
        self.secrets.put_secret(server.secret_name, password)
        return Seeded(tenant, sending, server)
