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
from petrel.adapters.inbound import DynamoInboundStore
from petrel.adapters.mailboxes import DynamoMailboxStore
from petrel.adapters.queues import SqsIngestQueue, SqsJobQueue
from petrel.adapters.scheduler import EventBridgeRetryScheduler
from petrel.adapters.secrets import SecretsManagerStore
from petrel.models.inbound import IngestJob
from petrel.models.jobs import Job, parse_job
from petrel.models.records import Pool
from petrel.ports import (
    BlobStore,
    IdempotencyStore,
    InboundStore,
    IngestQueue,
    JobQueue,
    MailboxStore,
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
    arrived: Callable[[Pool], list[Job]]  # the jobs waiting on a pool's send queue (taken off it)
    suppressions: SuppressionStore
    scheduler: RetryScheduler
    scheduled: Callable[[str], tuple[datetime, Job] | None]  # a pending schedule's time and job
    # PUT (bytes, content type) to a pre-signed URL of `blobs`, as a client would.
    upload: Callable[[str, bytes, str], None]
    mailboxes: MailboxStore
    inbound: InboundStore
    ingest: IngestQueue
    ingested: Callable[[], list[IngestJob]]  # the jobs waiting on the ingest queue (taken off it)
    download: Callable[[str], bytes]  # GET a pre-signed URL of `blobs`, as a client would


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
        world.queue.drain_all,
        world.suppressions,
        world.scheduler,
        lambda name: (s.at, s.job) if (s := world.scheduler.schedules.get(name)) else None,
        world.blobs.upload,
        mailboxes=world.mailboxes,
        inbound=world.inbound,
        ingest=world.ingest_queue,
        ingested=world.ingest_queue.drain,
        download=world.blobs.download,
    )


def moto_backend(clients: dict[str, Any], *, kind: str = "moto", prefix: str = "petrel-test") -> Backend:
    """The real adapters on `clients` (moto's mock; or LocalStack with DynamoDB on moto's server, see
    tests/integration/contracts/localstack.py)."""
    made = provision(
        clients["dynamodb"],
        clients["sqs"],
        clients["s3"],
        prefix=prefix,
        visibility_timeout=30,
        max_receive_count=3,
        scheduler=clients["scheduler"],
        iam=clients.get("iam"),
    )
    urls = {spec.pool: made.queue_urls[spec.name] for spec in resources.SEND_QUEUES if spec.pool}
    arns = {spec.pool: made.queue_arns[spec.name] for spec in resources.SEND_QUEUES if spec.pool}
    sqs = clients["sqs"]

    def arrived(pool: Pool) -> list[Job]:
        jobs: list[Job] = []
        while True:
            out = sqs.receive_message(QueueUrl=urls[pool], MaxNumberOfMessages=10, WaitTimeSeconds=0)
            batch = out.get("Messages", [])
            if not batch:
                return jobs
            jobs += [parse_job(m["Body"]) for m in batch]
            sqs.delete_message_batch(
                QueueUrl=urls[pool],
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )

    scheduler = clients["scheduler"]

    def scheduled(name: str) -> tuple[datetime, Job] | None:
        try:
            found = scheduler.get_schedule(Name=name, GroupName=made.schedule_group)
        except scheduler.exceptions.ResourceNotFoundException:
            return None
        at = datetime.strptime(found["ScheduleExpression"], "at(%Y-%m-%dT%H:%M:%S)").replace(tzinfo=UTC)
        target = found["Target"]
        assert found["ActionAfterCompletion"] == "DELETE" and found["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert target["Arn"] == arns[json.loads(target["Input"])["pool"]]
        assert target["DeadLetterConfig"]["Arn"] == made.schedules_dlq_arn
        return at, parse_job(target["Input"])

    ingest_url = made.queue_urls[resources.INGEST.name]

    def ingested() -> list[IngestJob]:
        bodies: list[str] = []
        while True:
            out = sqs.receive_message(QueueUrl=ingest_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            batch = out.get("Messages", [])
            if not batch:
                return [IngestJob.model_validate_json(body) for body in bodies]
            bodies += [m["Body"] for m in batch]
            sqs.delete_message_batch(
                QueueUrl=ingest_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )

    db = clients["dynamodb"]
    blobs = S3BlobStore(clients["s3"], made.bucket)
    return Backend(
        kind,
        DynamoTenantStore(db, made.tables[resources.TENANTS.name]),
        DynamoMessageStore(db, made.tables[resources.MESSAGES.name]),
        DynamoIdempotencyStore(db, made.tables[resources.IDEMPOTENCY.name]),
        blobs,
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
        _http_put,
        mailboxes=DynamoMailboxStore(db, made.tables[resources.TENANTS.name]),
        inbound=DynamoInboundStore(db, made.tables[resources.INBOUND.name], blobs),
        ingest=SqsIngestQueue(sqs, ingest_url),
        ingested=ingested,
        download=_http_get,
    )


def _http_get(url: str) -> bytes:
    """An HTTP GET of a pre-signed URL, with no credentials but the URL's own."""
    import requests

    response = requests.get(url, timeout=30)
    if response.status_code != 200:
        raise PermissionError(f"download refused: {response.status_code} {response.text[:200]}")
    return response.content


def _http_put(url: str, data: bytes, content_type: str) -> None:
    """An HTTP PUT (requests: moto's in-process mock answers it as S3 would)."""
    import requests

    response = requests.put(url, data=data, headers={"Content-Type": content_type}, timeout=30)
    if response.status_code != 200:
        raise PermissionError(f"upload refused: {response.status_code} {response.text[:200]}")
