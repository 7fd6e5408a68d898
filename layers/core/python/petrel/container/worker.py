"""The send worker's container."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import _client, _message_store, _retry_scheduler, _suppression_store, _tenant_store
from petrel.settings import SendWorkerSettings

if TYPE_CHECKING:
    from petrel.adapters.queues import SqsJobQueue
    from petrel.services.deliver import DeliverDeps
    from petrel.services.release import ReleaseDeps


class WorkerContainer:
    def __init__(self, settings: SendWorkerSettings) -> None:
        self.settings = settings

    @cached_property
    def queue(self) -> SqsJobQueue:
        """The send queues: releasing scheduled emails, handing back jobs the invocation has no time for."""
        from petrel.adapters.queues import SqsJobQueue

        return SqsJobQueue(_client("sqs"), self.settings.queue_urls())

    @cached_property
    def release(self) -> ReleaseDeps:
        from petrel.services.release import ReleaseDeps

        return ReleaseDeps(messages=_message_store(self.settings.messages_table), queue=self.queue)

    @cached_property
    def deliver(self) -> DeliverDeps:
        from petrel.adapters.blobs import S3BlobStore
        from petrel.adapters.clock import SystemClock
        from petrel.adapters.secrets import SecretsManagerStore
        from petrel.adapters.smtp import SmtplibRelay
        from petrel.services.deliver import DeliverDeps

        return DeliverDeps(
            tenants=_tenant_store(self.settings.tenants_table),
            messages=_message_store(self.settings.messages_table),
            blobs=S3BlobStore(_client("s3"), self.settings.bodies_bucket),
            secrets=SecretsManagerStore(_client("secretsmanager")),
            relay=SmtplibRelay(
                timeout=self.settings.smtp_timeout_seconds,
                transaction_seconds=self.settings.smtp_transaction_seconds,
            ),
            clock=SystemClock(),
            suppressions=_suppression_store(self.settings.suppressions_table),
            scheduler=_retry_scheduler(self.settings),
            lease_seconds=self.settings.lease_seconds,
            cache_seconds=self.settings.config_cache_seconds,
            ladder=self.settings.ladder(),
            max_receive_count=self.settings.max_receive_count,
        )
