"""EventBridge Scheduler: one-time `at(...)` schedules that put a job (a SendJob for a retry, a ReleaseJob
for an email's `send_at`) on its pool's send queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from petrel import resources
from petrel.models.jobs import Job
from petrel.ports import AlreadyExists, RecordNotFound

if TYPE_CHECKING:
    from types_boto3_scheduler.client import EventBridgeSchedulerClient


def at_expression(at: datetime) -> str:
    """`at(2026-11-23T18:53:02)` in UTC (Scheduler's one-time expression; seconds are rounded up)."""
    moment = at.astimezone(UTC)
    if moment.microsecond:  # never earlier than asked
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


class EventBridgeRetryScheduler:
    """Schedules are named by the caller (`<message id>-<attempt>`, `<email id>-release`): a second
    create of the same name collides (ConflictException, AlreadyExists) and changes nothing. Each is deleted after
    it fires; what Scheduler cannot put on the queue goes to the schedules' dead-letter queue.

    The target sets no `SqsParameters.MessageGroupId`: Scheduler documents it for FIFO targets only (unlike
    EventBridge rules, which document it for fair queues too), and a rejected target would send every retry
    to the dead-letter queue. A job without a group counts as a tenant of its own on a fair queue, so it is
    never held back as a noisy neighbour's: a retry or a release is one message, and the jobs a release
    puts on the queue carry their tenant (SqsJobQueue.send_jobs)."""

    def __init__(
        self,
        client: EventBridgeSchedulerClient,
        *,
        group: str,
        role_arn: str,
        dead_letter_arn: str,
        queue_arns: dict[str, str],
    ) -> None:
        self._scheduler = client
        self._group = group
        self._role = role_arn
        self._dlq = dead_letter_arn
        self._queues = queue_arns

    def schedule(self, name: str, at: datetime, job: Job) -> None:
        try:
            self._scheduler.create_schedule(
                Name=name,
                GroupName=self._group,
                ScheduleExpression=at_expression(at),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                State="ENABLED",
                Target={
                    "Arn": self._queues[job.pool],
                    "RoleArn": self._role,
                    "Input": job.model_dump_json(),
                    "DeadLetterConfig": {"Arn": self._dlq},
                    "RetryPolicy": {
                        "MaximumRetryAttempts": resources.SCHEDULES.max_retry_attempts,
                        "MaximumEventAgeInSeconds": resources.SCHEDULES.max_event_age_seconds,
                    },
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConflictException":
                raise AlreadyExists(f"schedule {name} exists") from exc
            raise

    def cancel(self, name: str) -> None:
        try:
            self._scheduler.delete_schedule(Name=name, GroupName=self._group)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise RecordNotFound(f"no schedule {name}") from exc
            raise
