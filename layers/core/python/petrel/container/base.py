"""What every function's container shares: its boto3 clients and the stores built on them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from petrel.settings import StoreSettings

if TYPE_CHECKING:
    from petrel.adapters.dynamodb import (
        DynamoMessageStore,
        DynamoSuppressionStore,
        DynamoTenantStore,
    )
    from petrel.adapters.scheduler import EventBridgeRetryScheduler


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
