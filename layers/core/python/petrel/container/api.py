"""The API function's container: its settings, one boto3 session for all its clients, its telemetry,
and the ports the routes are built on (petrel.api.deps.ApiPorts), each built on first use."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import (
    TenantStoresContainer,
    dns_resolver,
    inbound_store,
    ingest_queue,
    message_store,
    retry_scheduler,
    suppression_store,
)
from petrel.settings import ApiSettings

if TYPE_CHECKING:
    from petrel.adapters.blobs import S3BlobStore
    from petrel.adapters.caching import CachingTenantStore
    from petrel.adapters.dns import DnsPythonResolver
    from petrel.adapters.dynamodb import DynamoIdempotencyStore, DynamoMessageStore, DynamoSuppressionStore
    from petrel.adapters.queues import SqsJobQueue
    from petrel.adapters.scheduler import EventBridgeRetryScheduler
    from petrel.ports import InboundStore, IngestQueue


class ApiContainer(TenantStoresContainer[ApiSettings]):
    """The tenants' stores (TenantStoresContainer: tenants, keys and domains; the DKIM keys' secrets,
    written at a domain's creation and rotation; the mailboxes a domain's `receives` defaults from) and
    the send and receive paths' stores, queues and scheduler."""

    function = "api"

    @classmethod
    def from_env(cls) -> ApiContainer:
        return cls(ApiSettings.from_env())

    @property
    def retention_days(self) -> int:
        return self.settings.message_retention_days

    @property
    def inline_body_limit(self) -> int:
        return self.settings.inline_body_limit

    @property
    def link_seconds(self) -> int:
        return self.settings.link_seconds

    @property
    def access_log(self) -> bool:
        return self.settings.access_log

    @cached_property
    def sender_config(self) -> CachingTenantStore:
        """The tenant store of the send routes: a sending domain and server list that let an email
        through kept for `sender_cache_seconds` (ApiSettings); the tenant, and what refuses one, read
        afresh."""
        from petrel.adapters.caching import CachingTenantStore

        return CachingTenantStore(self.tenants, ttl=self.settings.sender_cache_seconds, usable_only=True)

    @cached_property
    def messages(self) -> DynamoMessageStore:
        return message_store(self.clients, self.settings.messages_table)

    @cached_property
    def suppressions(self) -> DynamoSuppressionStore:
        return suppression_store(self.clients, self.settings.suppressions_table)

    @cached_property
    def scheduler(self) -> EventBridgeRetryScheduler:
        return retry_scheduler(self.clients, self.settings)

    @cached_property
    def idempotency(self) -> DynamoIdempotencyStore:
        from petrel.adapters.dynamodb import DynamoIdempotencyStore

        return DynamoIdempotencyStore(self.clients.dynamodb(), self.settings.idempotency_table)

    @cached_property
    def blobs(self) -> S3BlobStore:
        from petrel.adapters.blobs import S3BlobStore

        return S3BlobStore(self.clients.s3(), self.settings.bodies_bucket)

    @cached_property
    def queue(self) -> SqsJobQueue:
        from petrel.adapters.queues import SqsJobQueue

        return SqsJobQueue(self.clients.sqs(), self.settings.queue_urls())

    @cached_property
    def inbound(self) -> InboundStore:
        return inbound_store(self.clients, self.settings.inbound_table, self.settings.bodies_bucket)

    @cached_property
    def ingest(self) -> IngestQueue:
        return ingest_queue(self.clients, self.settings.ingest_queue_url)

    @cached_property
    def resolver(self) -> DnsPythonResolver:
        return dns_resolver(self.settings)
