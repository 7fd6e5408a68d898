"""Holding a suspended tenant's mail, and releasing it when the tenant is resumed.

A suspended tenant's queued and scheduled mail waits; it is neither sent nor lost. The send worker,
on the job of a suspended tenant's message, leases it (the lease is what makes a duplicate job a
no-op), attempts nothing, and records it `deferred` with `failure_reason` `tenant-suspended` and a
retry schedule `HOLD_SECONDS` ahead (petrel.services.deliver.hold_message): the schedule is its one way
forward, and when it fires the worker checks the tenant again. The sweeper sees a held message as any
deferred one: due at its schedule's time, repaired only if that schedule is lost. Holding is not an
attempt: nothing is added to the message's attempt log, the retry ladder counts attempts by that log,
and only the first hold adds an event (`email.deferred`, detail `tenant-suspended`), so a long
suspension does not grow the record. The maximum age keeps counting: a message held past it fails
`expired`, as any other.

`release_held` (on resume) puts every held message of the tenant back on its queue at once. The hold's
schedule stays and fires later; its job, for an attempt that the released job has leased by then, does
nothing (the lease rules), so no message goes out twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from petrel.errors import TenantSuspended
from petrel.models.jobs import SendJob, recipient_domain
from petrel.models.records import MessageRecord, MessageStatus, Pool, Tenant
from petrel.ports import JobQueue, MessageStore

# The failure reason of a held message (status `deferred`), and how long a hold lasts before the
# worker looks at the tenant again.
HELD_REASON = "tenant-suspended"
HOLD_SECONDS = 300
PAGE_SIZE = 100


def check_not_suspended(tenant: Tenant) -> None:
    """A suspended tenant sends nothing (403): no email, batch or attachment declaration is stored
    (submit and attachments both call this, first). Its reads still work and its queued mail waits."""
    if tenant.suspended:
        reason = f": {tenant.suspended_reason}" if tenant.suspended_reason else ""
        raise TenantSuspended(f"this tenant is suspended{reason}; it cannot send until it is resumed")


@dataclass(frozen=True)
class HeldMail:
    """Where a tenant's held messages are, and the queues they go back to."""

    messages: MessageStore
    queue: JobQueue


def is_held(message: MessageRecord) -> bool:
    return message.status is MessageStatus.DEFERRED and message.failure_reason == HELD_REASON


def attempt_job(message: MessageRecord) -> SendJob:
    """The job of a message's current attempt: what its retry or hold schedule sends (deliver), and
    what a resume puts on the queue for a held message instead of waiting for that schedule."""
    return SendJob(
        tenant_id=message.tenant_id,
        email_id=message.email_id,
        message_id=message.message_id,
        attempt=message.attempt,
        pool=message.pool,
        domain=recipient_domain(message.recipient),
    )


def release_held(deps: HeldMail, tenant_id: str) -> int:
    """Queue every held message of the tenant now; the number queued. A job the queue refuses leaves
    its message held: its hold schedule still brings it (so running this again is always safe)."""
    released = 0
    cursor: str | None = None
    while True:
        page = deps.messages.list_messages(tenant_id, status=MessageStatus.DEFERRED, limit=PAGE_SIZE, cursor=cursor)
        by_pool: dict[Pool, list[SendJob]] = {}
        for message in page.messages:
            if is_held(message):
                by_pool.setdefault(message.pool, []).append(attempt_job(message))
        for pool, jobs in by_pool.items():
            refused = deps.queue.send_jobs(pool, jobs)
            released += len(jobs) - len(refused)
        cursor = page.cursor
        if cursor is None:
            return released
