"""The ingest worker's handler: one SQS batch of ingest jobs (raw incoming mail already in the bucket,
from the poller, POST /v1/inbound/raw or a local delivery), partial failures reported back to SQS.

Each record's body is parsed by the batch processor into `IngestQueueRecord` (an IngestJob); a body
that is no job is a batch item failure (SQS retries it, then dead-letters it). One log line per
message ingested: its id, kind, the related message and what applying it did (petrel.services.ingest).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import Json

from petrel.models.inbound import IngestJob
from petrel.services.ingest import RetryLater, ingest

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.services.ingest import IngestDeps
    from petrel.settings import IngestWorkerSettings


class IngestParts(Protocol):
    """What the handler takes from its container (petrel.container.ingest.IngestContainer, or the same
    parts on the in-memory fakes)."""

    @property
    def settings(self) -> IngestWorkerSettings: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def ingest(self) -> IngestDeps: ...


class IngestQueueRecord(SqsRecordModel):
    """An SQS record of the ingest queue, its body parsed (JSON, then IngestJob) by the batch processor."""

    body: Json[IngestJob]


def _metric_name(kind: str) -> str:
    """`Inbound<Kind>`: InboundDeliveryReport, InboundReply ..."""
    return "Inbound" + "".join(part.capitalize() for part in kind.split("_"))


def create_ingest_worker(container: IngestParts) -> Handler:
    """The ingest worker's Lambda handler, every dependency from `container`."""
    logger = container.telemetry.logger
    metrics = container.telemetry.metrics

    def handle_record(record: IngestQueueRecord) -> None:
        job = record.body
        last_receive = int(record.attributes.ApproximateReceiveCount) >= container.settings.max_receive_count
        started = time.perf_counter()
        with container.telemetry.record(tenant_id=job.tenant_id, inbound_id=job.inbound_id):
            try:
                done = ingest(container.ingest, job, last_receive=last_receive)
            except RetryLater as later:
                logger.info("ingest later", extra={"note": str(later)})
                metrics.add_metric(name="IngestRetried", unit=MetricUnit.Count, value=1)
                raise
            except Exception as error:
                fields = {"source": job.source, "detail": type(error).__name__, "last_receive": last_receive}
                logger.exception("ingest failed", extra=fields)
                metrics.add_metric(name="IngestErrors", unit=MetricUnit.Count, value=1)
                raise
            stored = done.record
            fields = {
                "source": job.source,
                "kind": str(stored.kind),
                "outcome": done.outcome,
                "new": done.created,
                "email_id": stored.related.email_id if stored.related else None,
                "message_id": stored.related.message_id if stored.related else None,
                "parse_error": stored.parse_error is not None,
                "size": stored.size,
                "duration_ms": round((time.perf_counter() - started) * 1000),
            }
            logger.info("inbound", extra=fields)
            if done.created:
                metrics.add_metric(name=_metric_name(str(stored.kind)), unit=MetricUnit.Count, value=1)

    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        processor = BatchProcessor(event_type=EventType.SQS, model=IngestQueueRecord)
        return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)

    return container.telemetry.handler(lambda_handler)
