"""Send worker: one SQS batch of SendJobs, partial failures reported back to SQS."""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from petrel import container
from petrel.models.jobs import SendJob
from petrel.observability import logger, metrics
from petrel.services.deliver import JobResult, deliver_message


class RetryLater(Exception):
    """Reported as a batch item failure: SQS brings the job back after its visibility timeout.

    Only for a job whose message another worker is sending right now. A deferred message is not
    retried this way: its next attempt is a schedule (petrel.services.retry), a new queue message.
    """


def handle_record(record: SQSRecord) -> None:
    job = SendJob.model_validate_json(record.body)
    logger().append_keys(tenant_id=job.tenant_id, message_id=job.message_id)
    delivery = deliver_message(container.worker().deliver, job)
    attempt = delivery.message.attempt if delivery.message else None
    outcome = type(delivery.outcome).__name__ if delivery.outcome else "none"
    logger().info("delivery", extra={"attempt": attempt, "outcome": outcome, "note": delivery.note})
    metrics().add_metric(name=f"Delivery{outcome}", unit=MetricUnit.Count, value=1)
    if delivery.result is JobResult.RETRY:
        raise RetryLater(delivery.note or outcome)


@metrics().log_metrics
@logger().inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    processor = BatchProcessor(event_type=EventType.SQS)
    try:
        return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
    finally:
        container.worker().deliver.end_batch()
