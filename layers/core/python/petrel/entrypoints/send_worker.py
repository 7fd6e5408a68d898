"""The send worker's handler: one SQS batch of jobs (SendJobs, and ReleaseJobs of scheduled emails),
partial failures reported back to SQS (a batch none of whose records succeeded fails the invocation, as
Powertools' batch processor does).

Each record is parsed into `SendQueueRecord`, whose body is the job union of petrel.models.jobs: a body
that is no job is a batch item failure (SQS retries it, then dead-letters it). Releases run first. The
send jobs are then dispatched (petrel.services.dispatch: a server and the recipient's provider for each,
the token buckets taken in bulk; a job without a token goes back to its queue with the buckets' delay,
not an attempt and not a failed receive), and the admitted ones run on `relay_concurrency` threads at
once (the relay keeps several SMTP sessions per server). The batch's outcomes then go to
petrel.services.server_health (bounce rate and connection failures per server: a pause; a "slow down":
the provider's bucket halved).

The invocation's time is a budget (petrel.services.deliver.InvocationBudget): a job starts only while
one SMTP transaction still fits, and the relay gets the invocation's deadline; a job there is no time
for goes back to its queue with a short delay (a new message: its receive count is not charged) and is
acknowledged. On a job's last receive (SQS's ApproximateReceiveCount reaching the queues'
maxReceiveCount) an unexpected error first ends its message `failed`/`worker-error`, then goes on to
SQS, which moves the job to the DLQ.

Logs: one line per batch ("batch": the jobs, how many of each outcome, the handed back, the paused
servers, its duration), and one line per delivery attempt ("delivery attempt": email, message, attempt,
server, outcome, SMTP code and enhanced code, duration) for every attempt that did not relay, and for
relayed ones too when `log_each_attempt` is set (the local stack sets it: a person reads that console),
with the job's keys added per record through the logger's thread-safe keys.
"""

from __future__ import annotations

import contextvars
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import Json, ValidationError

from petrel import resources
from petrel.mail.smtp_reply import HardFail, PermanentFail, SoftFail
from petrel.models.jobs import JobBody, ReleaseJob, SendJob
from petrel.observability import redact_address
from petrel.services.deliver import (
    Batch,
    Delivery,
    InvocationBudget,
    JobResult,
    deliver_message,
    hand_back,
    prefetch_emails,
)
from petrel.services.dispatch import Route, dispatch
from petrel.services.release import release_email
from petrel.services.server_health import Observed, observe
from petrel.services.shaping import one_by_one
from petrel.services.suspension import HELD_REASON

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.ports import JobQueue
    from petrel.services.deliver import DeliverDeps
    from petrel.services.dispatch import DispatchDeps
    from petrel.services.release import ReleaseDeps
    from petrel.services.server_health import HealthDeps
    from petrel.settings import SendWorkerSettings


T = TypeVar("T")


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
    @property
    def dispatch(self) -> DispatchDeps: ...
    @property
    def health(self) -> HealthDeps: ...


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


@dataclass
class Item:
    """One record of the batch: its SQS message id (what a batch item failure names) and its job."""

    message_id: str
    job: SendJob
    last_receive: bool


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
        self._executor: ThreadPoolExecutor | None = None
        self.container = container
        self.settings = container.settings
        self.telemetry = container.telemetry
        self.logger = container.telemetry.logger
        self.metrics = container.telemetry.metrics

    def handle_batch(self, event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        started = time.perf_counter()
        budget = InvocationBudget.from_remaining(
            context.get_remaining_time_in_millis(),
            record_seconds=self.settings.smtp_transaction_seconds,
            margin_seconds=self.settings.invocation_margin_seconds,
        )
        failures: list[str] = []
        items: list[Item] = []
        for raw in event.get("Records", []):
            failed = self.parse(raw, items)
            if failed is not None:
                failures.append(failed)
        counts: Counter[str] = Counter()
        try:
            failures += self.run_sends(items, budget, counts)
        finally:
            if self.settings.keep_smtp_sessions:
                self.container.deliver.relay.close_idle()  # the others are kept for the next invocation
            else:
                self.container.deliver.relay.close()
        self.logger.info(
            "batch",
            extra={
                "records": len(event.get("Records", [])),
                **dict(counts),
                "failed_records": len(failures),
                "duration_ms": round((time.perf_counter() - started) * 1000),
            },
        )
        if failures and len(failures) == len(event.get("Records", [])):
            # As Powertools' batch processor does: a batch none of whose records succeeded fails the
            # invocation (Lambda reports an error; SQS brings every record back).
            raise BatchProcessingError(f"all {len(failures)} records of the batch failed")
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}

    def parse(self, raw: dict[str, Any], items: list[Item]) -> str | None:
        """Add the record's send job to `items`, or run its release now; the record's id when it failed."""
        message_id = str(raw.get("messageId", ""))
        try:
            record = SendQueueRecord.model_validate(raw)
        except ValidationError:
            note = "not a job: SQS retries it, then dead-letters it"
            self.logger.exception("unreadable record", extra={"note": note})
            return message_id
        job = record.body
        if isinstance(job, ReleaseJob):
            with self.telemetry.record(tenant_id=job.tenant_id, email_id=job.email_id):
                try:
                    self.handle_release(job)
                except Exception:
                    self.logger.exception("release failed", extra={"note": "SQS brings the release back"})
                    return message_id
            return None
        last_receive = receive_count(record) >= self.settings.max_receive_count
        items.append(Item(record.messageId, job, last_receive))
        return None

    def run_sends(self, items: list[Item], budget: InvocationBudget, counts: Counter[str]) -> list[str]:
        """Dispatch the send jobs, hand back what may not go now, run the rest at once; the failed ids."""
        failures: list[str] = []
        admitted: list[Item] = []
        for item in items:
            if budget.admit():
                admitted.append(item)
            elif not self.hand_back_job(item.job, self.settings.handback_delay_seconds, counts):
                failures.append(item.message_id)
        batch = Batch()
        by_job = {id(item.job): item for item in admitted}
        plan = dispatch(self.container.dispatch, batch, [item.job for item in admitted], fan_out=self.fan_out)
        for job, delay in plan.later:
            if not self.hand_back_job(job, delay, counts, note="waiting for tokens"):
                failures.append(by_job[id(job)].message_id)
        runs = [(by_job[id(r.job)], r) for r in plan.now]
        self.prefetch([routed.job for _, routed in runs])
        results = self.run_concurrently(runs, budget, batch)
        observed: list[Observed] = []
        crash: BaseException | None = None
        for (item, routed), result in zip(runs, results, strict=True):
            error = result.exception()
            if error is None:
                delivery = result.result()
                label = self.count(delivery)
                counts[label] += 1
                if delivery.server is not None and delivery.outcome is not None:
                    observed.append(Observed(delivery.server, routed.provider, delivery.outcome))
                continue
            if not isinstance(error, Exception):  # the invocation died: nothing of the batch is acknowledged
                crash = crash or error
            elif isinstance(error, RetryLater):
                counts["retry"] += 1
                self.metrics.add_metric(name="JobsSkipped", unit=MetricUnit.Count, value=1)
            else:
                counts["errors"] += 1
                self.metrics.add_metric(name="DeliveryErrors", unit=MetricUnit.Count, value=1)
            failures.append(item.message_id)
        if crash is not None:
            raise crash
        self.observe(observed)
        return failures

    def prefetch(self, jobs: list[SendJob]) -> None:
        """The jobs' email records in one read; if it fails, each job reads its own (and meets the
        failure there, where its own error handling applies)."""
        try:
            prefetch_emails(self.container.deliver, jobs)
        except Exception:
            self.logger.warning("email records not read together; each job reads its own", exc_info=True)

    def run_concurrently(
        self, runs: list[tuple[Item, Route]], budget: InvocationBudget, batch: Batch
    ) -> list[Future[Delivery]]:
        """Each admitted job on the worker's threads; every one has ended when this returns."""
        # Each job in a copy of this thread's context: its lines carry the invocation's keys too.
        futures = [
            self.executor.submit(
                contextvars.copy_context().run, self.handle_send, item, route=routed, budget=budget, batch=batch
            )
            for item, routed in runs
        ]
        wait(futures)
        return futures

    @property
    def executor(self) -> ThreadPoolExecutor:
        """Kept across invocations (a warm container's threads are reused)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.relay_concurrency, thread_name_prefix="relay")
        return self._executor

    def fan_out(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The shaping's independent calls to the store (one per bucket, one per server) on the relay
        threads, which are idle then: a stage costs one round trip, not one per bucket."""
        if len(calls) <= 1:
            return one_by_one(calls)
        futures = [self.executor.submit(contextvars.copy_context().run, call) for call in calls]
        wait(futures)
        return [future.result() for future in futures]

    def observe(self, observed: list[Observed]) -> None:
        """The batch's outcomes to the servers' health; a server paused now is logged and counted."""
        if not observed:
            return
        now = self.container.deliver.clock.now()
        for server in observe(self.container.health, observed, now, fan_out=self.fan_out):
            self.logger.warning(
                "server paused",
                extra={"server_id": server.server_id, "server_host": server.host, "tenant_id": server.tenant_id},
            )
            self.metrics.add_metric(name=resources.SERVERS_PAUSED_METRIC, unit=MetricUnit.Count, value=1)

    def count(self, delivery: Delivery) -> str:
        """A finished job's label in the batch line, and its metric (added here, on the invocation's own
        thread: the metrics are not shared with the relay threads)."""
        if delivery.attempted:
            label = outcome_label(delivery)
            self.metrics.add_metric(name=_metric_name(label), unit=MetricUnit.Count, value=1)
            return label
        held = delivery.note == HELD_REASON and delivery.status is not None
        self.metrics.add_metric(name="JobsHeld" if held else "JobsSkipped", unit=MetricUnit.Count, value=1)
        return "held" if held else "skipped"

    def handle_release(self, job: ReleaseJob) -> None:
        """Queue the scheduled email's recipients; a refused job raises, so SQS brings the release back."""
        released = release_email(self.container.release, job)
        self.logger.info("release", extra={"queued": released.queued, "note": released.note})
        self.metrics.add_metric(name="ReleasedMessages", unit=MetricUnit.Count, value=released.queued)

    def hand_back_job(self, job: SendJob, delay: int, counts: Counter[str], note: str = "no time left") -> bool:
        """Back on its queue after `delay` seconds, acknowledged here; False when the queue refused it (SQS
        then keeps the original)."""
        if not hand_back(self.container.queue, job, delay):
            self.logger.warning("hand back refused", extra={"message_id": job.message_id, "note": note})
            return False
        counts["handed_back"] += 1
        self.metrics.add_metric(name="JobsHandedBack", unit=MetricUnit.Count, value=1)
        return True

    def handle_send(self, item: Item, *, route: Route, budget: InvocationBudget, batch: Batch) -> Delivery:
        job = item.job
        with self.telemetry.record(tenant_id=job.tenant_id, email_id=job.email_id, message_id=job.message_id):
            started = time.perf_counter()
            try:
                delivery = deliver_message(
                    self.container.deliver,
                    job,
                    batch=batch,
                    deadline=budget.relay_deadline,
                    last_receive=item.last_receive,
                    server=route.server,
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
            return delivery

    def log_attempt(self, delivery: Delivery, started: float) -> None:
        """The one line of a delivery attempt: every one that did not relay, relayed ones when
        `log_each_attempt` is set."""
        label = outcome_label(delivery)
        if label == "relayed" and not self.settings.log_each_attempt:
            return
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

    def log_skipped(self, job: SendJob, delivery: Delivery) -> None:
        """A job that took no attempt: its attempt is done, another worker holds it, or its tenant is
        suspended (the message is held: `JobsHeld`)."""
        held = delivery.note == HELD_REASON and delivery.status is not None
        self.logger.info("job held" if held else "job skipped", extra={"attempt": job.attempt, "note": delivery.note})

    def log_error(self, job: SendJob, error: Exception, started: float) -> None:
        """An attempt that raised: SQS will redeliver the job (or, on its last receive, dead-letter it)."""
        fields = {
            "attempt": job.attempt + 1,
            "outcome": "error",
            "detail": type(error).__name__,
            "duration_ms": round((time.perf_counter() - started) * 1000),
        }
        self.logger.exception("delivery attempt", extra=fields)


def create_worker(container: WorkerParts) -> Handler:
    """The send worker's Lambda handler, every dependency from `container`."""
    worker = SendWorker(container)

    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        return worker.handle_batch(event, context)

    # The invocation's context keys on this thread's lines, and its metrics flushed at its end.
    return container.telemetry.handler(lambda_handler)
