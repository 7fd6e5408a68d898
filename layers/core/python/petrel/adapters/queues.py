"""SQS: the send queues, one per pool, and the ingest queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from petrel.models.inbound import IngestJob
from petrel.models.jobs import Job
from petrel.models.records import Pool

if TYPE_CHECKING:
    from types_boto3_sqs.client import SQSClient
    from types_boto3_sqs.literals import QueueAttributeNameType
    from types_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

MAX_DELAY_SECONDS = 900  # SQS's limit on DelaySeconds

J = TypeVar("J", bound=Job)


# What counts as the backlog of a send queue: jobs visible, delayed, and received but not yet deleted.
_BACKLOG_ATTRIBUTES: tuple[QueueAttributeNameType, ...] = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)


class SqsJobQueue:
    def __init__(self, client: SQSClient, queue_urls: dict[str, str]) -> None:
        self._sqs = client
        self._urls = queue_urls

    def send_jobs(self, pool: Pool, jobs: Sequence[J], delay_seconds: int = 0) -> list[J]:
        """SendJobs (or ReleaseJobs) on the pool's queue, 10 per SendMessageBatch; returns those refused.

        Each job carries its tenant as `MessageGroupId`: on a standard queue that makes it an SQS fair
        queue, which delivers quiet tenants' jobs ahead of a flooding tenant's backlog (the local pump
        emulates it, local/lambda_runtime.py)."""
        failed: list[J] = []
        delay = max(0, min(delay_seconds, MAX_DELAY_SECONDS))
        for start in range(0, len(jobs), 10):
            chunk = list(jobs[start : start + 10])
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": str(i),
                    "MessageBody": job.model_dump_json(),
                    "DelaySeconds": delay,
                    "MessageGroupId": job.tenant_id,
                }
                for i, job in enumerate(chunk)
            ]
            try:
                out = self._sqs.send_message_batch(QueueUrl=self._urls[pool], Entries=entries)
            except Exception:
                failed.extend(chunk)
                continue
            failed.extend(chunk[int(entry["Id"])] for entry in out.get("Failed", []))
        return failed

    def backlog(self, pool: Pool) -> int:
        out = self._sqs.get_queue_attributes(QueueUrl=self._urls[pool], AttributeNames=list(_BACKLOG_ATTRIBUTES))
        attributes = out.get("Attributes", {})
        return sum(int(attributes.get(name, 0)) for name in _BACKLOG_ATTRIBUTES)


class SqsIngestQueue:
    """The ingest queue: one SendMessage per job (the poller and the API hand them over one at a time,
    and each must know its own job is queued before it moves its cursor or answers 202)."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def send_ingest(self, job: IngestJob) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=job.model_dump_json())
