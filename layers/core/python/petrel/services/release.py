"""Releasing a scheduled email: its one `send_at` schedule fires a ReleaseJob, and the worker puts a
SendJob (attempt 0) on the queue for each of the email's messages that is still `scheduled`.

One schedule per email, not per recipient: a 100-email x 50-recipient batch costs 100 CreateSchedule
calls at submission. A release that fires twice, or late, is harmless: a message leased by the first
release's job is no longer `scheduled` at attempt 0 when the second job arrives (the lease rules).
"""

from __future__ import annotations

from dataclasses import dataclass

from petrel.models.jobs import ReleaseJob, SendJob, recipient_domain
from petrel.models.records import MessageRecord, MessageStatus
from petrel.ports import EmailKey, JobQueue, MessageStore


def release_schedule_name(email_id: str) -> str:
    """The one `send_at` schedule of an email: a second create collides instead of doubling."""
    return f"{email_id}-release"


class ReleaseIncomplete(Exception):
    """The send queue refused some of the jobs: the release job must come back (SQS redelivers it).

    Jobs already queued are queued again by the redelivery; their second copy finds attempt 0 done.
    """


@dataclass(frozen=True)
class ReleaseDeps:
    messages: MessageStore
    queue: JobQueue


@dataclass(frozen=True)
class Released:
    queued: int  # SendJobs put on the queue
    note: str = ""


def send_job(message: MessageRecord) -> SendJob:
    """The first attempt's job of a message."""
    return SendJob(
        tenant_id=message.tenant_id,
        email_id=message.email_id,
        message_id=message.message_id,
        pool=message.pool,
        domain=recipient_domain(message.recipient),
    )


def waiting_for_release(messages: list[MessageRecord]) -> list[MessageRecord]:
    """The messages a release applies to: still `scheduled`, never attempted."""
    return [m for m in messages if m.status is MessageStatus.SCHEDULED and m.attempt == 0]


def release_email(deps: ReleaseDeps, job: ReleaseJob) -> Released:
    found = deps.messages.get_email(EmailKey.of(job))
    if found is None:
        return Released(0, note="no such email")
    _, messages = found
    waiting = waiting_for_release(messages)
    if not waiting:
        return Released(0, note="nothing scheduled")
    refused = deps.queue.send_jobs(job.pool, [send_job(m) for m in waiting])
    if refused:
        raise ReleaseIncomplete(f"the send queue refused {len(refused)} of {len(waiting)} jobs")
    return Released(len(waiting))
