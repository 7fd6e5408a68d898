"""Send worker: one SQS batch of jobs (SendJobs, and ReleaseJobs of scheduled emails), partial failures
reported back to SQS.

The invocation's time is a budget (petrel.services.deliver.InvocationBudget): a job starts only while
one SMTP transaction still fits, and the relay gets the invocation's deadline; a job there is no time
for goes back to its queue with a short delay (a new message: its receive count is not charged) and is
acknowledged. On a job's last receive (SQS's ApproximateReceiveCount reaching the queues'
maxReceiveCount) an unexpected error first ends its message `failed`/`worker-error`, then goes on to
SQS, which moves the job to the DLQ.
"""

import functools
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from petrel import container
from petrel.models.jobs import ReleaseJob, SendJob, parse_job
from petrel.observability import logger, metrics
from petrel.services.deliver import InvocationBudget, JobResult, deliver_message, hand_back
from petrel.services.release import release_email


class RetryLater(Exception):
    """Reported as a batch item failure: SQS brings the job back after its visibility timeout.

    Only for a job whose message another worker is sending right now. A deferred message is not
    retried this way: its next attempt is a schedule (petrel.services.retry), a new queue message.
    """


class HandBackFailed(Exception):
    """The queue refused a job handed back: reported as a batch item failure, so SQS keeps the original."""


def receive_count(record: SQSRecord) -> int:
    """SQS's ApproximateReceiveCount of the record (1 when the event does not say)."""
    count = record.attributes.get("ApproximateReceiveCount")
    return int(count) if isinstance(count, str) and count.isdigit() else 1


def handle_release(job: ReleaseJob) -> None:
    """Queue the scheduled email's recipients; a refused job raises, so SQS brings the release back."""
    logger().append_keys(tenant_id=job.tenant_id, email_id=job.email_id)
    released = release_email(container.worker().release, job)
    logger().info("release", extra={"queued": released.queued, "note": released.note})
    metrics().add_metric(name="ReleasedMessages", unit=MetricUnit.Count, value=released.queued)


def hand_back_job(job: SendJob) -> None:
    """No time left in this invocation for the job: back on its queue, acknowledged here."""
    worker = container.worker()
    if not hand_back(worker.queue, job, worker.settings.handback_delay_seconds):
        raise HandBackFailed(f"the {job.pool} send queue refused the job handed back")
    logger().info("handed back", extra={"attempt": job.attempt, "note": "no time left in this invocation"})
    metrics().add_metric(name="JobsHandedBack", unit=MetricUnit.Count, value=1)


def handle_record(record: SQSRecord, budget: InvocationBudget) -> None:
    job = parse_job(record.body)
    if isinstance(job, ReleaseJob):
        handle_release(job)
        return
    logger().append_keys(tenant_id=job.tenant_id, message_id=job.message_id)
    if not budget.admit():
        hand_back_job(job)
        return
    worker = container.worker()
    last_receive = receive_count(record) >= worker.settings.max_receive_count
    delivery = deliver_message(worker.deliver, job, deadline=budget.relay_deadline, last_receive=last_receive)
    attempt = delivery.message.attempt if delivery.message else None
    outcome = type(delivery.outcome).__name__ if delivery.outcome else "none"
    logger().info("delivery", extra={"attempt": attempt, "outcome": outcome, "note": delivery.note})
    metrics().add_metric(name=f"Delivery{outcome}", unit=MetricUnit.Count, value=1)
    if delivery.result is JobResult.RETRY:
        raise RetryLater(delivery.note or outcome)


@metrics().log_metrics
@logger().inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    settings = container.worker().settings
    budget = InvocationBudget.from_remaining(
        context.get_remaining_time_in_millis(),
        record_seconds=settings.smtp_transaction_seconds,
        margin_seconds=settings.invocation_margin_seconds,
    )
    processor = BatchProcessor(event_type=EventType.SQS)
    try:
        return process_partial_response(
            event=event,
            record_handler=functools.partial(handle_record, budget=budget),
            processor=processor,
            context=context,
        )
    finally:
        container.worker().deliver.end_batch()
