"""Redriving a dead letter so that its job really runs again (`petrel dlq redrive`).

A job reaches a send queue's DLQ only after the worker failed it `maxReceiveCount` times, and on
the last of those receives the worker ended its message `failed`/`worker-error`
(petrel.services.deliver.give_up). Put back as it is, the job would find its message final and do
nothing. So, before the letter goes back, the message is reopened: from `failed`/`worker-error`
back to `queued` at the attempt it failed at (a conditional write on (failed, attempt); event
`email.queued`, detail "redriven"), and the job put back is the one for that attempt. Every other
letter goes back unchanged (its job does nothing if its attempt is done). The ingest DLQ's letters
never come here: an IngestJob has no message record to reopen, and ingest is idempotent per inbound id.
"""

from __future__ import annotations

from dataclasses import dataclass

from petrel.models.jobs import SendJob
from petrel.models.records import Event, EventName, MessageStatus
from petrel.ports import Clock, MessageKey, MessageStore, RecordNotFound, Transition, WriteConflict
from petrel.services.deliver import WORKER_ERROR


@dataclass(frozen=True)
class RedriveDeps:
    messages: MessageStore
    clock: Clock


def reopen_for_redrive(deps: RedriveDeps, job: SendJob) -> SendJob:
    """The job to put back for a dead letter holding `job`, reopening its message first if needed.

    Only a message that failed with `worker-error` at this job's attempt (the error came before the
    lease) or the next one (it came after) is reopened: a failure of a later attempt, or for another
    reason (`expired`, `sender-refused`, ...), stands.
    """
    key = MessageKey.of(job)
    current = deps.messages.get_message(key)
    if current is None or current.status is not MessageStatus.FAILED or current.failure_reason != WORKER_ERROR:
        return job
    if current.attempt not in (job.attempt, job.attempt + 1):
        return job
    now = deps.clock.now()
    event = Event(
        type=EventName.QUEUED, at=now, message_id=current.message_id, recipient=current.recipient, detail="redriven"
    )
    try:
        deps.messages.transition(
            key,
            expected=[MessageStatus.FAILED],
            attempt=current.attempt,
            change=Transition(MessageStatus.QUEUED, (event,)),
            now=now,
        )
    except (WriteConflict, RecordNotFound):  # moved on meanwhile (or gone): its job goes back as it was
        return job
    # Reopened by this redrive: the job of the attempt it waits at.
    return job.model_copy(update={"attempt": current.attempt})
