"""Wires adapters into services, lazily: nothing is built, or even imported, until a handler first
asks for it, so each function pays at cold start only for what it uses."""

from __future__ import annotations

from functools import cache, cached_property
from typing import TYPE_CHECKING

from petrel.settings import ApiSettings, AuthorizerSettings, SendWorkerSettings, StoreSettings, SweeperSettings

if TYPE_CHECKING:
    from petrel.adapters.blobs import S3BlobStore
    from petrel.adapters.clock import SystemClock
    from petrel.adapters.dynamodb import (
        DynamoIdempotencyStore,
        DynamoMessageStore,
        DynamoSuppressionStore,
        DynamoTenantStore,
    )
    from petrel.adapters.queues import SqsJobQueue
    from petrel.adapters.scheduler import EventBridgeRetryScheduler
    from petrel.services.attachments import AttachmentDeps
    from petrel.services.cancel import CancelDeps
    from petrel.services.deliver import DeliverDeps
    from petrel.services.redrive import RedriveDeps
    from petrel.services.release import ReleaseDeps
    from petrel.services.submit import SubmitDeps
    from petrel.services.sweep import SweepDeps
    from petrel.services.tenants import AdminDeps


def _client(service: str) -> object:
    from petrel.adapters.aws import client

    return client(service)


def _tenant_store(table: str) -> DynamoTenantStore:
    from petrel.adapters.dynamodb import DynamoTenantStore

    return DynamoTenantStore(_client("dynamodb"), table)


def _message_store(table: str) -> DynamoMessageStore:
    from petrel.adapters.dynamodb import DynamoMessageStore

    return DynamoMessageStore(_client("dynamodb"), table)


def _suppression_store(table: str) -> DynamoSuppressionStore:
    from petrel.adapters.dynamodb import DynamoSuppressionStore

    return DynamoSuppressionStore(_client("dynamodb"), table)


def _retry_scheduler(settings: StoreSettings) -> EventBridgeRetryScheduler:
    from petrel.adapters.scheduler import EventBridgeRetryScheduler

    return EventBridgeRetryScheduler(
        _client("scheduler"),
        group=settings.schedule_group,
        role_arn=settings.scheduler_role_arn,
        dead_letter_arn=settings.scheduler_dlq_arn,
        queue_arns=settings.queue_arns(),
    )


class AuthorizerContainer:
    def __init__(self, settings: AuthorizerSettings) -> None:
        self.settings = settings

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return _tenant_store(self.settings.tenants_table)


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


class SweeperContainer:
    def __init__(self, settings: SweeperSettings) -> None:
        self.settings = settings

    @cached_property
    def sweep(self) -> SweepDeps:
        from petrel import resources
        from petrel.adapters.clock import SystemClock
        from petrel.adapters.queues import SqsJobQueue
        from petrel.services.sweep import SweepDeps

        return SweepDeps(
            messages=_message_store(self.settings.messages_table),
            queue=SqsJobQueue(_client("sqs"), self.settings.queue_urls()),
            clock=SystemClock(),
            shards=resources.due_shards(),
            grace_seconds=self.settings.grace_seconds,
            max_messages=self.settings.max_messages,
            backlog_limit=self.settings.backlog_limit,
        )


def admin_deps(tenants_table: str, secrets_prefix: str) -> AdminDeps:
    from petrel.adapters.clock import SystemClock
    from petrel.adapters.secrets import SecretsManagerStore
    from petrel.services.tenants import AdminDeps

    return AdminDeps(
        tenants=_tenant_store(tenants_table),
        secrets=SecretsManagerStore(_client("secretsmanager")),
        clock=SystemClock(),
        secrets_prefix=secrets_prefix,
    )


def redrive_deps(messages_table: str) -> RedriveDeps:
    """What `petrel dlq redrive` needs to reopen the messages of the jobs it puts back."""
    from petrel.adapters.clock import SystemClock
    from petrel.services.redrive import RedriveDeps

    return RedriveDeps(messages=_message_store(messages_table), clock=SystemClock())


@cache
def authorizer() -> AuthorizerContainer:
    return AuthorizerContainer(AuthorizerSettings.from_env())


@cache
def api() -> ApiContainer:
    return ApiContainer(ApiSettings.from_env())


@cache
def worker() -> WorkerContainer:
    return WorkerContainer(SendWorkerSettings.from_env())


@cache
def sweeper() -> SweeperContainer:
    return SweeperContainer(SweeperSettings.from_env())


def reset() -> None:
    """Forget built containers and clients (tests and the local stack change the environment)."""
    from petrel.adapters.aws import client

    for factory in (authorizer, api, worker, sweeper):
        factory.cache_clear()
    client.cache_clear()
