"""Wires adapters into services, lazily: nothing is built until a handler first asks for it."""

from __future__ import annotations

from functools import cache, cached_property

from petrel.adapters.aws import client
from petrel.adapters.blobs import S3BlobStore
from petrel.adapters.clock import SystemClock
from petrel.adapters.dynamodb import DynamoIdempotencyStore, DynamoMessageStore, DynamoTenantStore
from petrel.adapters.queues import SqsJobQueue
from petrel.adapters.secrets import SecretsManagerStore
from petrel.adapters.smtp import SmtplibRelay
from petrel.services.deliver import DeliverDeps
from petrel.services.submit import SubmitDeps
from petrel.services.tenants import AdminDeps
from petrel.settings import ApiSettings, AuthorizerSettings, SendWorkerSettings


class AuthorizerContainer:
    def __init__(self, settings: AuthorizerSettings) -> None:
        self.settings = settings

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return DynamoTenantStore(client("dynamodb"), self.settings.tenants_table)


class ApiContainer:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.clock = SystemClock()

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return DynamoTenantStore(client("dynamodb"), self.settings.tenants_table)

    @cached_property
    def messages(self) -> DynamoMessageStore:
        return DynamoMessageStore(client("dynamodb"), self.settings.messages_table)

    @cached_property
    def idempotency(self) -> DynamoIdempotencyStore:
        return DynamoIdempotencyStore(client("dynamodb"), self.settings.idempotency_table)

    @cached_property
    def submit(self) -> SubmitDeps:
        return SubmitDeps(
            tenants=self.tenants,
            messages=self.messages,
            blobs=S3BlobStore(client("s3"), self.settings.bodies_bucket),
            queue=SqsJobQueue(client("sqs"), self.settings.queue_urls()),
            clock=self.clock,
            retention_days=self.settings.message_retention_days,
            inline_body_limit=self.settings.inline_body_limit,
        )


class WorkerContainer:
    def __init__(self, settings: SendWorkerSettings) -> None:
        self.settings = settings

    @cached_property
    def deliver(self) -> DeliverDeps:
        return DeliverDeps(
            tenants=DynamoTenantStore(client("dynamodb"), self.settings.tenants_table),
            messages=DynamoMessageStore(client("dynamodb"), self.settings.messages_table),
            blobs=S3BlobStore(client("s3"), self.settings.bodies_bucket),
            secrets=SecretsManagerStore(client("secretsmanager")),
            relay=SmtplibRelay(timeout=self.settings.smtp_timeout_seconds),
            clock=SystemClock(),
            lease_seconds=self.settings.lease_seconds,
            cache_seconds=self.settings.config_cache_seconds,
        )


def admin_deps(tenants_table: str, secrets_prefix: str) -> AdminDeps:
    return AdminDeps(
        tenants=DynamoTenantStore(client("dynamodb"), tenants_table),
        secrets=SecretsManagerStore(client("secretsmanager")),
        clock=SystemClock(),
        secrets_prefix=secrets_prefix,
    )


@cache
def authorizer() -> AuthorizerContainer:
    return AuthorizerContainer(AuthorizerSettings())


@cache
def api() -> ApiContainer:
    return ApiContainer(ApiSettings())


@cache
def worker() -> WorkerContainer:
    return WorkerContainer(SendWorkerSettings())


def reset() -> None:
    """Forget built containers (tests and the local stack change the environment)."""
    for factory in (authorizer, api, worker):
        factory.cache_clear()
    client.cache_clear()
