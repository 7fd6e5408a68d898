"""The API function's container."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import _client, _message_store, _retry_scheduler, _suppression_store, _tenant_store
from petrel.settings import ApiSettings

if TYPE_CHECKING:
    from petrel.adapters.blobs import S3BlobStore
    from petrel.adapters.clock import SystemClock
    from petrel.adapters.dynamodb import (
        DynamoIdempotencyStore,
        DynamoMessageStore,
        DynamoSuppressionStore,
        DynamoTenantStore,
    )
    from petrel.adapters.scheduler import EventBridgeRetryScheduler
    from petrel.services.attachments import AttachmentDeps
    from petrel.services.cancel import CancelDeps
    from petrel.services.submit import SubmitDeps


class ApiContainer:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings

    @cached_property
    def clock(self) -> SystemClock:
        from petrel.adapters.clock import SystemClock

        return SystemClock()

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return _tenant_store(self.settings.tenants_table)

    @cached_property
    def messages(self) -> DynamoMessageStore:
        return _message_store(self.settings.messages_table)

    @cached_property
    def suppressions(self) -> DynamoSuppressionStore:
        return _suppression_store(self.settings.suppressions_table)

    @cached_property
    def scheduler(self) -> EventBridgeRetryScheduler:
        return _retry_scheduler(self.settings)

    @cached_property
    def idempotency(self) -> DynamoIdempotencyStore:
        from petrel.adapters.dynamodb import DynamoIdempotencyStore

        return DynamoIdempotencyStore(_client("dynamodb"), self.settings.idempotency_table)

    @cached_property
    def cancel(self) -> CancelDeps:
        from petrel.services.cancel import CancelDeps

        return CancelDeps(messages=self.messages, scheduler=self.scheduler, clock=self.clock)

    @cached_property
    def blobs(self) -> S3BlobStore:
        from petrel.adapters.blobs import S3BlobStore

        return S3BlobStore(_client("s3"), self.settings.bodies_bucket)

    @cached_property
    def attachments(self) -> AttachmentDeps:
        from petrel.services.attachments import AttachmentDeps

        return AttachmentDeps(blobs=self.blobs, clock=self.clock)

    @cached_property
    def submit(self) -> SubmitDeps:
        from petrel.adapters.queues import SqsJobQueue
        from petrel.services.submit import SubmitDeps

        return SubmitDeps(
            tenants=self.tenants,
            messages=self.messages,
            blobs=self.blobs,
            queue=SqsJobQueue(_client("sqs"), self.settings.queue_urls()),
            scheduler=self.scheduler,
            clock=self.clock,
            retention_days=self.settings.message_retention_days,
            inline_body_limit=self.settings.inline_body_limit,
        )
