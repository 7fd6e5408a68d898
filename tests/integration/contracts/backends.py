"""The two implementations every contract test runs against: the fakes, and the adapters under moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.provision import provision
from petrel import resources
from petrel.adapters.blobs import S3BlobStore
from petrel.adapters.dynamodb import (
    DynamoIdempotencyStore,
    DynamoMessageStore,
    DynamoSuppressionStore,
    DynamoTenantStore,
)
from petrel.adapters.queues import SqsJobQueue
from petrel.adapters.scheduler import EventBridgeRetryScheduler
from petrel.adapters.secrets import SecretsManagerStore
from petrel.models.jobs import SendJob
from petrel.models.records import Pool
from petrel.ports import (
    BlobStore,
    IdempotencyStore,
    JobQueue,
    MessageStore,
    RetryScheduler,
    SecretStore,
    SuppressionStore,
    TenantStore,
)
from tests.fakes import FakeWorld


@dataclass
class Backend:
    kind: str
    tenants: TenantStore
    messages: MessageStore
    idempotency: IdempotencyStore
    blobs: BlobStore
    queue: JobQueue
    secrets: SecretStore
    arrived: Callable[[Pool], list[SendJob]]  # the jobs waiting on a pool's send queue (taken off it)
    suppressions: SuppressionStore
    scheduler: RetryScheduler
    scheduled: Callable[[str], tuple[datetime, SendJob] | None]  # a pending schedule's time and job


def fake_backend() -> Backend:
    world = FakeWorld()
    return Backend(
        "fake",
        world.tenants,
        world.messages,
        world.idempotency,
        world.blobs,
        world.queue,
        world.secrets,
        world.queue.drain,
        world.suppressions,
        world.scheduler,
        lambda name: (s.at, s.job) if (s := world.scheduler.schedules.get(name)) else None,
    )


def moto_backend(clients: dict[str, Any]) -> Backend:
    made = provision(
        clients["dynamodb"],
        clients["sqs"],
        clients["s3"],
        prefix="petrel-test",
        visibility_timeout=30,
        max_receive_count=3,
        scheduler=clients["scheduler"],
    )
    urls = {spec.pool: made.queue_urls[spec.name] for spec in resources.SEND_QUEUES if spec.pool}
    arns = {spec.pool: made.queue_arns[spec.name] for spec in resources.SEND_QUEUES if spec.pool}
    sqs = clients["sqs"]

    def arrived(pool: Pool) -> list[SendJob]:
        jobs: list[SendJob] = []
        while True:
            out = sqs.receive_message(QueueUrl=urls[pool], MaxNumberOfMessages=10, WaitTimeSeconds=0)
            batch = out.get("Messages", [])
            if not batch:
                return jobs
            jobs += [SendJob.model_validate_json(m["Body"]) for m in batch]
            sqs.delete_message_batch(
                QueueUrl=urls[pool],
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )

    scheduler = clients["scheduler"]

    def scheduled(name: str) -> tuple[datetime, SendJob] | None:
        try:
            found = scheduler.get_schedule(Name=name, GroupName=made.schedule_group)
        except scheduler.exceptions.ResourceNotFoundException:
            return None
        at = datetime.strptime(found["ScheduleExpression"], "at(%Y-%m-%dT%H:%M:%S)").replace(tzinfo=UTC)
        target = found["Target"]
        assert found["ActionAfterCompletion"] == "DELETE" and found["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert target["Arn"] == arns[json.loads(target["Input"])["pool"]]
        assert target["DeadLetterConfig"]["Arn"] == made.schedules_dlq_arn
        return at, SendJob.model_validate_json(target["Input"])

    db = clients["dynamodb"]
    return Backend(
        "moto",
        DynamoTenantStore(db, made.tables[resources.TENANTS.name]),
        DynamoMessageStore(db, made.tables[resources.MESSAGES.name]),
        DynamoIdempotencyStore(db, made.tables[resources.IDEMPOTENCY.name]),
        S3BlobStore(clients["s3"], made.bucket),
        SqsJobQueue(sqs, urls),
        SecretsManagerStore(clients["secretsmanager"]),
        arrived,
        DynamoSuppressionStore(db, made.tables[resources.SUPPRESSIONS.name]),
        EventBridgeRetryScheduler(
            scheduler,
            group=made.schedule_group,
            role_arn=made.scheduler_role_arn,
            dead_letter_arn=made.schedules_dlq_arn,
            queue_arns=arns,
        ),
        scheduled,
    )
