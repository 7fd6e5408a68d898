"""SQS dead-letter queues: look at what failed, and put it back on the queue it came from.

Four queues hold dead letters (petrel.resources): the DLQ of each send queue (a job that failed
`maxReceiveCount` times), the schedules' DLQ (a retry that EventBridge Scheduler could not put on
its send queue), and the ingest queue's DLQ (an incoming message the ingest worker failed
`maxReceiveCount` times). The first two hold a `SendJob` (or a scheduled email's `ReleaseJob`); a
Scheduler dead letter also carries Scheduler's error attributes (`ERROR_CODE`, `ERROR_MESSAGE`, ...).
The ingest DLQ holds `IngestJob`s: references to raw mail already in the bucket, kept there longer
than the DLQ keeps its letters (infra.config checks it), so a redriven job still finds its bytes.

SQS's own redrive (`start_message_move_task`) is not used: it can only send a dead letter back to
the queue that dead-lettered it, which the schedules' DLQ does not have (the source is the job's
pool), and moto does not implement it. Messages are moved by hand, one receive at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import ValidationError

from petrel import resources
from petrel.models.inbound import IngestJob
from petrel.models.jobs import Job, SendJob, parse_job
from petrel.ports import RecordNotFound

if TYPE_CHECKING:
    from types_boto3_sqs.client import SQSClient
    from types_boto3_sqs.type_defs import (
        MessageAttributeValueOutputTypeDef,
        MessageAttributeValueTypeDef,
        MessageSystemAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

# What EventBridge Scheduler adds to a dead letter; dropped when the job goes back to a send queue.
SCHEDULER_ERROR_ATTRIBUTES = frozenset(
    {
        "ERROR_CODE",
        "ERROR_MESSAGE",
        "EXECUTION_ID",
        "EXHAUSTED_RETRY_CONDITION",
        "IS_PAYLOAD_TRUNCATED",
        "RETRY_ATTEMPTS",
        "SCHEDULED_TIME",
        "SCHEDULE_ARN",
        "TARGET_ARN",
    }
)

# What a DLQ's letters are: send-side jobs (SendJob/ReleaseJob) or the ingest queue's IngestJobs.
LetterKind = Literal["send", "ingest"]

_BATCH = 10  # SQS's limit for receive, send, delete and visibility batches
_NO_SUCH_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


@dataclass(frozen=True)
class DeadLetterQueue:
    """A dead-letter queue Petrel can redrive. `name` is what an operator types (`petrel dlq list NAME`).

    `source` is the queue its dead letters go back to; None for the schedules' DLQ, whose letters go
    to the send queue of their job's pool. `kind` says what its bodies should be, so that a body of
    another shape is flagged, and only send jobs are offered to a redrive's `prepare`.
    """

    name: str
    dlq: str
    source: str | None
    kind: LetterKind = "send"


def dead_letter_queues() -> dict[str, DeadLetterQueue]:
    """Every redrivable DLQ by operator-facing name: each send queue's, the ingest queue's, and the
    schedule group's."""
    queues = {
        spec.name: DeadLetterQueue(spec.name, resources.dlq_name(spec), spec.name) for spec in resources.SEND_QUEUES
    }
    ingest = resources.INGEST
    queues[ingest.name] = DeadLetterQueue(ingest.name, resources.dlq_name(ingest), ingest.name, "ingest")
    queues[resources.SCHEDULES.group] = DeadLetterQueue(resources.SCHEDULES.group, resources.SCHEDULES.dlq, None)
    return queues


def send_queue_of_pool(pool: str) -> str | None:
    return next((spec.name for spec in resources.SEND_QUEUES if spec.pool == pool), None)


def _timestamp(attributes: Mapping[Any, str], name: str) -> datetime | None:
    value = attributes.get(name)
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC) if value and value.isdigit() else None


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as received (the body exactly as SQS holds it).

    `receive_count` is SQS's: the receives on the source queue, plus one per listing of the DLQ.
    `kind` is what its queue holds (DeadLetterQueue.kind): it decides how the body is read.
    """

    message_id: str
    body: str
    receive_count: int
    sent_at: datetime | None
    first_received_at: datetime | None
    attributes: Mapping[str, MessageAttributeValueOutputTypeDef]
    trace_header: str | None = None
    receipt_handle: str = field(default="", repr=False, compare=False)
    kind: LetterKind = "send"
    group_id: str | None = None

    @classmethod
    def from_sqs(cls, message: MessageTypeDef, kind: LetterKind = "send") -> DeadLetter:
        system = message.get("Attributes", {})
        count = system.get("ApproximateReceiveCount", "0")
        return cls(
            message_id=message["MessageId"],
            body=message.get("Body", ""),
            receive_count=int(count) if count.isdigit() else 0,
            sent_at=_timestamp(system, "SentTimestamp"),
            first_received_at=_timestamp(system, "ApproximateFirstReceiveTimestamp"),
            attributes=message.get("MessageAttributes", {}),
            trace_header=system.get("AWSTraceHeader"),
            receipt_handle=message["ReceiptHandle"],
            kind=kind,
            group_id=system.get("MessageGroupId"),
        )

    @property
    def message_group(self) -> str | None:
        """The MessageGroupId to send it back with: its own, else its job's tenant (a job Scheduler
        dead-lettered had none), so a redriven job counts for its tenant on a fair queue."""
        if self.group_id:
            return self.group_id
        job = self.job
        return job.tenant_id if job is not None else None

    @property
    def job(self) -> Job | None:
        """The job in the body (a SendJob, or the ReleaseJob of a scheduled email), or None when it is
        neither, and always None for an ingest letter (whatever its body, it is no job to send)."""
        if self.kind != "send":
            return None
        try:
            return parse_job(self.body)
        except ValidationError:
            return None

    @property
    def ingest_job(self) -> IngestJob | None:
        """The IngestJob in an ingest letter's body, or None (a body of another shape, or a send letter)."""
        if self.kind != "ingest":
            return None
        try:
            return IngestJob.model_validate_json(self.body)
        except ValidationError:
            return None

    @property
    def parsed(self) -> Job | IngestJob | None:
        """What the body holds for its kind of queue: None when it is not what that queue carries."""
        return self.ingest_job if self.kind == "ingest" else self.job

    @property
    def scheduler_error(self) -> dict[str, str]:
        """Scheduler's error attributes (`ERROR_CODE`, `ERROR_MESSAGE`, ...), if it dead-lettered this."""
        return {
            name: value["StringValue"]
            for name, value in sorted(self.attributes.items())
            if name in SCHEDULER_ERROR_ATTRIBUTES and "StringValue" in value
        }

    @property
    def truncated(self) -> bool:
        """Scheduler cut the body to fit SQS: it is not the job any more."""
        return self.scheduler_error.get("IS_PAYLOAD_TRUNCATED", "").lower() == "true"

    def age(self, now: datetime) -> timedelta | None:
        return now - self.sent_at if self.sent_at else None

    def resent_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        """The message attributes to send again: all but Scheduler's error ones, in SendMessage's shape."""
        kept: dict[str, MessageAttributeValueTypeDef] = {}
        for name, value in self.attributes.items():
            if name in SCHEDULER_ERROR_ATTRIBUTES:
                continue
            out: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
            if "StringValue" in value:
                out["StringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                out["BinaryValue"] = value["BinaryValue"]
            kept[name] = out
        return kept

    def summary(self, now: datetime) -> dict[str, Any]:
        """A JSON-ready view: ids and times, the job's ids (never the body of a parsed job)."""
        age = self.age(now)
        row: dict[str, Any] = {
            "sqs_message_id": self.message_id,
            "receive_count": self.receive_count,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "first_received_at": self.first_received_at.isoformat() if self.first_received_at else None,
            "age_seconds": int(age.total_seconds()) if age is not None else None,
        }
        job = self.parsed
        if job is not None:
            row["job"] = job.model_dump(mode="json")
        else:
            row["unparseable_body"] = self.body[:80]
        if self.scheduler_error:
            row["scheduler_error"] = self.scheduler_error
        return row


@dataclass(frozen=True)
class QueueDepth:
    """SQS's approximate counts: waiting, received by someone and not yet deleted, delayed."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


@dataclass(frozen=True)
class Moved:
    letter: DeadLetter
    queue: str
    new_message_id: str


@dataclass(frozen=True)
class Left:
    letter: DeadLetter
    reason: str


@dataclass
class RedriveReport:
    moved: list[Moved] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)


class SqsDeadLetters:
    """Lists and redrives Petrel's dead-letter queues (`<prefix>-<dlq name>`).

    Listing does not hide messages for long: they are received with a short visibility timeout,
    de-duplicated by SQS MessageId, then made visible again at once, so a redrive right after
    sees them all.
    """

    def __init__(
        self,
        client: SQSClient,
        prefix: str,
        *,
        list_visibility_seconds: int = 20,
        redrive_visibility_seconds: int = 60,
        wait_seconds: int = 2,
    ) -> None:
        self._sqs = client
        self._prefix = prefix
        self._list_visibility = list_visibility_seconds
        self._redrive_visibility = redrive_visibility_seconds
        self._wait = wait_seconds
        self._urls: dict[str, str] = {}
        self._queues = dead_letter_queues()

    def queue(self, name: str) -> DeadLetterQueue:
        """The DLQ an operator names; RecordNotFound (its text lists the known names) for another."""
        try:
            return self._queues[name]
        except KeyError:
            raise RecordNotFound(f"no dead-letter queue {name!r} (known: {', '.join(self._queues)})") from None

    def url(self, queue_name: str) -> str:
        """The URL of a queue by its logical name (`send-bulk`, `schedules-dlq`); RecordNotFound when
        the environment has no such queue (not deployed, or another prefix)."""
        if queue_name not in self._urls:
            physical = resources.physical_name(self._prefix, queue_name)
            try:
                self._urls[queue_name] = self._sqs.get_queue_url(QueueName=physical)["QueueUrl"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _NO_SUCH_QUEUE:
                    raise RecordNotFound(f"queue {physical} does not exist") from None
                raise
        return self._urls[queue_name]

    def depth(self, name: str) -> QueueDepth:
        url = self.url(self.queue(name).dlq)
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        ).get("Attributes", {})
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def peek(self, name: str, limit: int = 50) -> list[DeadLetter]:
        """Up to `limit` dead letters, in the order SQS hands them out (none is promised), left in the queue."""
        dlq = self.queue(name)
        url = self.url(dlq.dlq)
        letters: dict[str, DeadLetter] = {}
        try:
            for batch in self._batches(url, limit, self._list_visibility, letters, kind=dlq.kind):
                for letter in batch:
                    letters[letter.message_id] = letter
        finally:
            self._release(url, letters.values())
        return list(letters.values())

    def redrive(
        self, name: str, limit: int | None = None, *, prepare: Callable[[SendJob], SendJob] | None = None
    ) -> RedriveReport:
        """Move up to `limit` dead letters (all, by default) back to their send queue.

        `prepare` is called with each letter's SendJob before it is sent, and returns the job to send
        (petrel.services.redrive reopens a message the worker ended `worker-error` and answers the job
        of the attempt it now waits at); a letter whose job it changes goes back with that job as its
        body. When `prepare` raises, the letter is left where it is and reported. `prepare` is never
        called for the ingest DLQ: its letters go back to the ingest queue as they are, since ingest
        is idempotent per inbound id (a letter whose message was meanwhile ingested finds its record
        and does nothing new).

        A send DLQ's letters go back to its send queue; a schedules-DLQ letter goes to the send queue
        of its job's pool, without Scheduler's error attributes. The body is sent byte for byte as
        received. A letter whose destination cannot be told (a schedules-DLQ body that is no SendJob,
        or one Scheduler truncated) is left where it is, visible again, and reported.

        Each letter is first sent to its queue, then deleted from the DLQ. A crash (or a failed
        delete) in between can only leave a copy in both: the job then runs twice, and that is
        harmless, because the send worker acknowledges a job whose attempt is already done and does
        nothing, and the ingest worker finds the inbound record of an ingest job's id already there.
        That is what makes redrive idempotent: run it again and it moves only what is still in the
        DLQ. A letter that comes back to the DLQ while this redrive runs (the job failed again) is
        recognised by its SQS MessageId and left for the next run, not looped.
        """
        dlq = self.queue(name)
        url = self.url(dlq.dlq)
        if dlq.kind != "send":  # no message record to repair behind an ingest job
            prepare = None
        report = RedriveReport()
        sent_ids: set[str] = set()
        held: dict[str, DeadLetter] = {}
        seen: dict[str, DeadLetter] = {}
        try:
            for batch in self._batches(url, limit, self._redrive_visibility, seen, kind=dlq.kind):
                by_queue: dict[str, list[tuple[DeadLetter, str]]] = {}
                for letter in batch:
                    seen[letter.message_id] = letter
                    if letter.message_id in sent_ids:  # what this run put back failed again: next run
                        held[letter.message_id] = letter
                        continue
                    target, reason = self._destination(dlq, letter)
                    body = self._body(letter, prepare) if target is not None else None
                    if isinstance(body, Exception):
                        target, reason = None, f"could not prepare the job: {type(body).__name__}"
                    if target is None or not isinstance(body, str):
                        report.left.append(Left(letter, reason))
                        held[letter.message_id] = letter
                    else:
                        by_queue.setdefault(target, []).append((letter, body))
                for target, letters in by_queue.items():
                    self._move(url, target, letters, report=report, sent_ids=sent_ids, held=held)
        finally:
            self._release(url, held.values())
        return report

    def _destination(self, dlq: DeadLetterQueue, letter: DeadLetter) -> tuple[str | None, str]:
        if dlq.source is not None:
            return dlq.source, ""
        if letter.truncated:
            return None, "Scheduler truncated the body"
        job = letter.job
        if job is None:
            return None, f"unparseable body: {letter.body[:80]!r}"
        target = send_queue_of_pool(job.pool)
        if target is None:
            return None, f"no send queue for pool {job.pool!r}"
        return target, ""

    @staticmethod
    def _body(letter: DeadLetter, prepare: Callable[[SendJob], SendJob] | None) -> str | Exception:
        """The body to send back: the letter's own, byte for byte, unless `prepare` changes its job."""
        job = letter.job
        if prepare is None or not isinstance(job, SendJob):  # a release job goes back as it is
            return letter.body
        try:
            again = prepare(job)
        except Exception as exc:  # the store is unreachable: leave the letter for the next run
            return exc
        return letter.body if again == job else again.model_dump_json()

    def _move(
        self,
        dlq_url: str,
        target: str,
        outgoing: Sequence[tuple[DeadLetter, str]],
        *,
        report: RedriveReport,
        sent_ids: set[str],
        held: dict[str, DeadLetter],
    ) -> None:
        letters = [letter for letter, _ in outgoing]
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for i, (letter, body) in enumerate(outgoing):
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(i), "MessageBody": body}
            if attributes := letter.resent_attributes():
                entry["MessageAttributes"] = attributes
            if group := letter.message_group:
                entry["MessageGroupId"] = group
            if letter.trace_header:
                trace: MessageSystemAttributeValueTypeDef = {"DataType": "String", "StringValue": letter.trace_header}
                entry["MessageSystemAttributes"] = {"AWSTraceHeader": trace}
            entries.append(entry)
        out = self._sqs.send_message_batch(QueueUrl=self.url(target), Entries=entries)
        for failure in out.get("Failed", []):
            letter = letters[int(failure["Id"])]
            report.left.append(Left(letter, f"send to {target} failed: {failure.get('Code', '')}"))
            held[letter.message_id] = letter
        sent = {int(ok["Id"]): ok["MessageId"] for ok in out.get("Successful", [])}
        if not sent:
            return
        sent_ids.update(sent.values())
        deleted = self._sqs.delete_message_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": letters[i].receipt_handle} for i in sent],
        )
        not_deleted = {int(failure["Id"]): failure.get("Code", "") for failure in deleted.get("Failed", [])}
        for i, new_id in sent.items():
            letter = letters[i]
            if i in not_deleted:
                reason = f"copied to {target} but not deleted from the DLQ ({not_deleted[i]}): it may run twice"
                report.left.append(Left(letter, reason))
                held[letter.message_id] = letter
            else:
                report.moved.append(Moved(letter, target, new_id))

    def _batches(
        self, url: str, limit: int | None, visibility: int, seen: Mapping[str, DeadLetter], *, kind: LetterKind
    ) -> Iterable[list[DeadLetter]]:
        """Receive until `limit` distinct messages were handed out or the queue has none left to give.

        Yields only messages not in `seen` (which the caller fills); a second delivery of a message
        already seen refreshes nothing and is skipped. An empty short poll is confirmed by the
        queue's visible count and one long poll, since a short poll samples only some SQS servers.
        """
        count = 0
        while limit is None or count < limit:
            want = _BATCH if limit is None else min(_BATCH, limit - count)
            fresh = self._receive(url, want, visibility, 0, seen, kind=kind)
            if not fresh and self._visible(url):
                fresh = self._receive(url, want, visibility, self._wait, seen, kind=kind)
            if not fresh:
                return
            count += len(fresh)
            yield fresh

    def _receive(
        self, url: str, count: int, visibility: int, wait: int, seen: Mapping[str, DeadLetter], *, kind: LetterKind
    ) -> list[DeadLetter]:
        out = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=count,
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        fresh: dict[str, DeadLetter] = {}
        for message in out.get("Messages", []):
            letter = DeadLetter.from_sqs(message, kind)
            if letter.message_id not in seen:
                fresh[letter.message_id] = letter
        return list(fresh.values())

    def _visible(self, url: str) -> bool:
        attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes.get("Attributes", {}).get("ApproximateNumberOfMessages", 0)) > 0

    def _release(self, url: str, letters: Iterable[DeadLetter]) -> None:
        """Make received messages visible again now (best effort: else they reappear after the timeout)."""
        pending = list(letters)
        for start in range(0, len(pending), _BATCH):
            chunk = pending[start : start + _BATCH]
            try:
                self._sqs.change_message_visibility_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                        for i, letter in enumerate(chunk)
                    ],
                )
            except ClientError:
                continue
