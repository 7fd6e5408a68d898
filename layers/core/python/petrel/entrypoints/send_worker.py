"""The send worker's handler: one SQS batch of jobs (SendJobs, and ReleaseJobs of scheduled emails),
partial failures reported back to SQS.

Each record is parsed by the batch processor into `SendQueueRecord`, whose body is the job union of
petrel.models.jobs: a body that is no job is a batch item failure (SQS retries it, then dead-letters it).

The invocation's time is a budget (petrel.services.deliver.InvocationBudget): a job starts only while
one SMTP transaction still fits, and the relay gets the invocation's deadline; a job there is no time
for goes back to its queue with a short delay (a new message: its receive count is not charged) and is
acknowledged. On a job's last receive (SQS's ApproximateReceiveCount reaching the queues'
maxReceiveCount) an unexpected error first ends its message `failed`/`worker-error`, then goes on to
SQS, which moves the job to the DLQ.

Logs: one line per delivery attempt ("delivery attempt": email, message, attempt, server, outcome,
SMTP code and enhanced code, duration), with the job's keys added per record through the logger's
thread-safe keys (the local stack runs several invocations of one function on threads).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import Json

from petrel.mail.smtp_reply import HardFail, PermanentFail, SoftFail
from petrel.models.jobs import JobBody, ReleaseJob, SendJob
from petrel.observability import redact_address
from petrel.services.deliver import Batch, Delivery, InvocationBudget, JobResult, deliver_message, hand_back
from petrel.services.release import release_email
from petrel.services.suspension import HELD_REASON

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.ports import JobQueue
    from petrel.services.deliver import DeliverDeps
    from petrel.services.release import ReleaseDeps
    from petrel.settings import SendWorkerSettings


class WorkerParts(Protocol):
    """What the handler takes from its container (petrel.container.worker.WorkerContainer; in unit
    tests, the same parts built on the in-memory fakes)."""

    @property
    def settings(self) -> SendWorkerSettings: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def deliver(self) -> DeliverDeps: ...
    @property
    def release(self) -> ReleaseDeps: ...
    @property
    def queue(self) -> JobQueue: ...


class SendQueueRecord(SqsRecordModel):
    """An SQS record of a send queue: its body parsed (JSON, then the job union) by the batch processor."""

    body: Json[JobBody]


class RetryLater(Exception):
    """Reported as a batch item failure: SQS brings the job back after its visibility timeout.

    Only for a job whose message another worker is sending right now. A deferred message is not
    retried this way: its next attempt is a schedule (petrel.models.retry), a new queue message.
    """


class HandBackFailed(Exception):
    """The queue refused a job handed back: reported as a batch item failure, so SQS keeps the original."""


def receive_count(record: SendQueueRecord) -> int:
    """SQS's ApproximateReceiveCount of the record."""
    return int(record.attributes.ApproximateReceiveCount)


def outcome_label(delivery: Delivery) -> str:
    """A delivery attempt's outcome as logs and metrics name it: the status it recorded (relayed,
    deferred, bounced, failed, suppressed), or `lease-lost` when another worker took it over first."""
    return delivery.status.value if delivery.status is not None else "lease-lost"


def outcome_detail(delivery: Delivery) -> str | None:
    """Why: a failure's or deferral's reason, a bounce's class, or the step's note."""
    outcome = delivery.outcome
    if isinstance(outcome, SoftFail | PermanentFail):
        return outcome.reason
    if isinstance(outcome, HardFail):
        return outcome.bounce_class
    return delivery.note or None


def _metric_name(label: str) -> str:
    """`Delivery<Outcome>`: DeliveryRelayed, DeliveryLeaseLost ..."""
    return "Delivery" + "".join(part.capitalize() for part in label.split("-"))


class SendWorker:
    """The handler's steps over one container: what a record is, and what each kind of job does."""

    def __init__(self, container: WorkerParts) -> None:
        self.container = container
        self.settings = container.settings
        self.telemetry = container.telemetry
        self.logger = container.telemetry.logger
        self.metrics = container.telemetry.metrics

    def handle_batch(self, event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        budget = InvocationBudget.from_remaining(
            context.get_remaining_time_in_millis(),
            record_seconds=self.settings.smtp_transaction_seconds,
            margin_seconds=self.settings.invocation_margin_seconds,
        )
        processor = BatchProcessor(event_type=EventType.SQS, model=SendQueueRecord)
        handle = functools.partial(self.handle_record, budget=budget, batch=Batch())
        try:
            return process_partial_response(event=event, record_handler=handle, processor=processor, context=context)
        finally:
            self.container.deliver.relay.close()  # the invocation's SMTP sessions end with it

    def handle_record(self, record: SendQueueRecord, *, budget: InvocationBudget, batch: Batch) -> None:
        job = record.body
        if isinstance(job, ReleaseJob):
            with self.telemetry.record(tenant_id=job.tenant_id, email_id=job.email_id):
                self.handle_release(job)
            return
        with self.telemetry.record(tenant_id=job.tenant_id, email_id=job.email_id, message_id=job.message_id):
            if not budget.admit():
                self.hand_back_job(job)
                return
            last_receive = receive_count(record) >= self.settings.max_receive_count
            self.handle_send(job, last_receive=last_receive, budget=budget, batch=batch)

    def handle_release(self, job: ReleaseJob) -> None:
        """Queue the scheduled email's recipients; a refused job raises, so SQS brings the release back."""
        released = release_email(self.container.release, job)
        self.logger.info("release", extra={"queued": released.queued, "note": released.note})
        self.metrics.add_metric(name="ReleasedMessages", unit=MetricUnit.Count, value=released.queued)

    def hand_back_job(self, job: SendJob) -> None:
        """No time left in this invocation for the job: back on its queue, acknowledged here."""
        if not hand_back(self.container.queue, job, self.settings.handback_delay_seconds):
            raise HandBackFailed(f"the {job.pool} send queue refused the job handed back")
        self.logger.info("handed back", extra={"attempt": job.attempt, "note": "no time left in this invocation"})
        self.metrics.add_metric(name="JobsHandedBack", unit=MetricUnit.Count, value=1)

    def handle_send(self, job: SendJob, *, last_receive: bool, budget: InvocationBudget, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            delivery = deliver_message(
                self.container.deliver, job, batch=batch, deadline=budget.relay_deadline, last_receive=last_receive
            )
        except Exception as error:
            self.log_error(job, error, started)
            raise
        if delivery.attempted:
            self.log_attempt(delivery, started)
        else:
            self.log_skipped(job, delivery)
        if delivery.result is JobResult.RETRY:
            raise RetryLater(delivery.note)

    def log_attempt(self, delivery: Delivery, started: float) -> None:
        """The one line of a delivery attempt, and its metric."""
        label = outcome_label(delivery)
        message, server, reply = delivery.message, delivery.server, delivery.outcome
        fields: dict[str, Any] = {
            "attempt": message.attempt if message else None,
            "recipient": redact_address(message.recipient) if message else None,
            "outcome": label,
            "detail": outcome_detail(delivery),
            "server_id": server.server_id if server else None,
            "server_host": server.host if server else None,
            "smtp_code": reply.reply.code if reply else None,
            "smtp_enhanced_code": reply.reply.enhanced if reply else None,
            "duration_ms": round((time.perf_counter() - started) * 1000),
        }
        level = self.logger.info if label in ("relayed", "suppressed") else self.logger.warning
        level("delivery attempt", extra=fields)
        self.metrics.add_metric(name=_metric_name(label), unit=MetricUnit.Count, value=1)

    def log_skipped(self, job: SendJob, delivery: Delivery) -> None:
        """A job that took no attempt: its attempt is done, another worker holds it, or its tenant is
        suspended (the message is held: `JobsHeld`)."""
        held = delivery.note == HELD_REASON and delivery.status is not None
        self.logger.info("job held" if held else "job skipped", extra={"attempt": job.attempt, "note": delivery.note})
        self.metrics.add_metric(name="JobsHeld" if held else "JobsSkipped", unit=MetricUnit.Count, value=1)

    def log_error(self, job: SendJob, error: Exception, started: float) -> None:
        """An attempt that raised: SQS will redeliver the job (or, on its last receive, dead-letter it)."""
        fields = {
            "attempt": job.attempt + 1,
            "outcome": "error",
            "detail": type(error).__name__,
            "duration_ms": round((time.perf_counter() - started) * 1000),
        }
        self.logger.exception("delivery attempt", extra=fields)
        self.metrics.add_metric(name="DeliveryErrors", unit=MetricUnit.Count, value=1)


def create_worker(container: WorkerParts) -> Handler:
    """The send worker's Lambda handler, every dependency from `container`."""
    worker = SendWorker(container)

    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        return worker.handle_batch(event, context)

    # The invocation's context keys on this thread's lines, and its metrics flushed at its end.
    return container.telemetry.handler(lambda_handler)
