"""The send worker's container: its settings, one boto3 session for all its clients, its telemetry,
and the services' dependencies wired from them, each built on first use."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import (
    FunctionContainer,
    dns_resolver,
    ingest_queue,
    mailbox_store,
    message_store,
    retry_scheduler,
    secret_store,
    suppression_store,
    tenant_store,
)
from petrel.settings import SendWorkerSettings

if TYPE_CHECKING:
    from petrel.adapters.buckets import DynamoTokenBuckets
    from petrel.adapters.caching import CachedPorts
    from petrel.adapters.queues import SqsJobQueue
    from petrel.mail.providers import ProviderLookup
    from petrel.services.deliver import DeliverDeps
    from petrel.services.dispatch import DispatchDeps
    from petrel.services.release import ReleaseDeps
    from petrel.services.server_health import HealthDeps


class WorkerContainer(FunctionContainer[SendWorkerSettings]):
    function = "send-worker"

    @classmethod
    def from_env(cls) -> WorkerContainer:
        return cls(SendWorkerSettings.from_env())

    @cached_property
    def queue(self) -> SqsJobQueue:
        """The send queues: releasing scheduled emails, handing back jobs the invocation has no time for."""
        from petrel.adapters.queues import SqsJobQueue

        return SqsJobQueue(self.clients.sqs(), self.settings.queue_urls())

    @cached_property
    def cached(self) -> CachedPorts:
        """The stores the worker reads for every message, behind their caches (petrel.adapters.caching):
        configuration and passwords for `config_cache_seconds`, email records and bodies for a minute."""
        from petrel.adapters.blobs import S3BlobStore
        from petrel.adapters.caching import cache_ports

        return cache_ports(
            tenants=tenant_store(self.clients, self.settings.tenants_table),
            secrets=secret_store(self.clients),
            blobs=S3BlobStore(self.clients.s3(), self.settings.bodies_bucket),
            messages=message_store(self.clients, self.settings.messages_table),
            mailboxes=mailbox_store(self.clients, self.settings.tenants_table),
            config_ttl=self.settings.config_cache_seconds,
        )

    @cached_property
    def release(self) -> ReleaseDeps:
        from petrel.services.release import ReleaseDeps

        return ReleaseDeps(messages=self.cached.messages, queue=self.queue)

    @cached_property
    def deliver(self) -> DeliverDeps:
        from petrel.adapters.smtp import SmtplibRelay
        from petrel.services.deliver import DeliverDeps
        from petrel.services.signing import MessageSigner

        return DeliverDeps(
            tenants=self.cached.tenants,
            messages=self.cached.messages,
            blobs=self.cached.blobs,
            secrets=self.cached.secrets,
            relay=SmtplibRelay(
                timeout=self.settings.smtp_timeout_seconds,
                transaction_seconds=self.settings.smtp_transaction_seconds,
            ),
            clock=self.clock,
            suppressions=suppression_store(self.clients, self.settings.suppressions_table),
            scheduler=retry_scheduler(self.clients, self.settings),
            lease_seconds=self.settings.lease_seconds,
            ladder=self.settings.ladder(),
            max_receive_count=self.settings.max_receive_count,
            mailboxes=self.cached.mailboxes,
            ingest=ingest_queue(self.clients, self.settings.ingest_queue_url),
            # DKIM private keys come through the same cached secret store as the SMTP passwords.
            signer=MessageSigner(self.cached.secrets, self.clock),
        )

    @cached_property
    def dispatch(self) -> DispatchDeps:
        """Routing and the token buckets of each batch, on the same cached configuration as delivery."""
        from petrel.services.dispatch import DispatchDeps

        return DispatchDeps(
            tenants=self.cached.tenants,
            mailboxes=self.cached.mailboxes,
            buckets=self.buckets,
            provider_of=self.providers,
            clock=self.clock,
        )

    @cached_property
    def health(self) -> HealthDeps:
        from petrel.services.server_health import HealthDeps

        return HealthDeps(tenants=self.cached.tenants, buckets=self.buckets)

    @cached_property
    def buckets(self) -> DynamoTokenBuckets:
        from petrel.adapters.buckets import DynamoTokenBuckets

        return DynamoTokenBuckets(self.clients.dynamodb(), self.settings.buckets_table)

    @cached_property
    def providers(self) -> ProviderLookup:
        """Recipient domains' provider groups, from their MX hosts (remembered while the container lives)."""
        from petrel.mail.providers import ProviderLookup

        return ProviderLookup(dns_resolver(self.settings).mx)
