"""Cancelling an email: every recipient not yet sent (scheduled, queued or deferred) is cancelled,
then the schedules that would have moved them on are deleted: each deferred message's retry, and
the email's one release schedule once none of its messages is scheduled any more."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from petrel.errors import NotFound
from petrel.ids import is_id
from petrel.models.api import CancelledRecipient, CancelResponse
from petrel.models.records import CANCELLABLE_STATUSES, Event, EventName, MessageRecord, MessageStatus
from petrel.models.retry import schedule_name
from petrel.ports import (
    Clock,
    EmailKey,
    MessageKey,
    MessageStore,
    RecordNotFound,
    RetryScheduler,
    Transition,
    WriteConflict,
)
from petrel.services.release import release_schedule_name


@dataclass(frozen=True)
class CancelDeps:
    messages: MessageStore
    scheduler: RetryScheduler
    clock: Clock


def pending_schedule(message: MessageRecord) -> str | None:
    """The message's own schedule: the next retry of a deferred message. (A scheduled message is
    released by its email's schedule, `release_schedule_name`.)"""
    if message.status is MessageStatus.DEFERRED:
        return schedule_name(message.message_id, message.attempt)
    return None


def cancel_message(deps: CancelDeps, message: MessageRecord) -> MessageStatus:
    """Cancel one message if it is still waiting; returns the status it has afterwards.

    The write is conditional on (status, attempt), so it cannot overtake a worker that leased the
    message meanwhile. A queued message's job stays in its queue and finds nothing to do; a
    schedule is deleted after the write (if that fails, the schedule fires a job that does nothing).
    """
    if message.status not in CANCELLABLE_STATUSES:
        return message.status
    now = deps.clock.now()
    event = Event(type=EventName.CANCELLED, at=now, message_id=message.message_id, recipient=message.recipient)
    key = MessageKey.of(message)
    try:
        deps.messages.transition(
            key,
            expected=[message.status],
            attempt=message.attempt,
            change=Transition(MessageStatus.CANCELLED, (event,)),
            now=now,
        )
    except (WriteConflict, RecordNotFound):  # a worker (or another cancel) moved it on first
        current = deps.messages.get_message(key)
        return current.status if current else message.status
    name = pending_schedule(message)
    if name is not None:
        # The cancel is written and stands: a schedule that cannot be deleted now (Scheduler down)
        # fires a job that finds the message cancelled. Failing here would fail the request half-done.
        with contextlib.suppress(Exception):
            deps.scheduler.cancel(name)
    return MessageStatus.CANCELLED


def cancel_email(deps: CancelDeps, tenant_id: str, email_id: str) -> CancelResponse:
    found = deps.messages.get_email(EmailKey(tenant_id, email_id)) if is_id(email_id, "em") else None
    if found is None:
        raise NotFound(f"no email {email_id!r}")
    _, messages = found
    cancelled: list[CancelledRecipient] = []
    kept: list[CancelledRecipient] = []
    for message in messages:
        status = cancel_message(deps, message)
        item = CancelledRecipient(id=message.message_id, email=message.recipient, status=status)
        (cancelled if status is MessageStatus.CANCELLED else kept).append(item)
    was_scheduled = any(m.status is MessageStatus.SCHEDULED for m in messages)
    if was_scheduled and not any(k.status is MessageStatus.SCHEDULED for k in kept):
        # Gone already (fired) is fine; if Scheduler is down, the release left in place fires and
        # finds nothing scheduled: the cancel stands either way.
        with contextlib.suppress(Exception):
            deps.scheduler.cancel(release_schedule_name(email_id))
    return CancelResponse(id=email_id, cancelled=cancelled, not_cancelled=kept)
