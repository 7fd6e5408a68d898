"""The sweeper: finds non-final messages whose way forward is gone, and puts each back on its queue.

At every moment each non-final message has exactly one way forward: a job on a queue, a schedule, a
live lease, or a dead letter that an alarm reports. Each message carries a due time (the sparse
"due" index, petrel.resources.DUE_INDEX): when that way forward should have acted. A message still
there `grace_seconds` after its due time has lost it (a crash between storing and enqueuing, a
worker that died twice, a lost schedule) and is repaired:

1. claim: a conditional write that moves its due time to now, only if status, attempt and due time
   are still those seen, so a concurrent or repeated sweep does not repair it twice (and a message
   that moved on meanwhile is left alone);
   A `sending` message is due from its last waiting state (the lease does not move its due time, so
   a send writes no index): while its lease is live (not over by a grace) its due time is moved to
   the lease's end instead (`move_due`, conditional the same way), and it is looked at again then;
2. a job on its pool's send queue: SendJob(attempt) for queued, scheduled and deferred; for
   `sending` with a lease long expired, SendJob(attempt - 1), the job of the attempt in flight,
   which the worker's takeover path leases again.

A job for an attempt already done does nothing (the lease rules), so a repair is always safe. A job
the queue refused is repaired again one grace later.

A backlog is not a lost job. A queued, scheduled (released) or deferred (its retry fired) message whose
job waits behind a backlog longer than the grace looks exactly like one whose job is gone; repairing it
would add a job per waiting message every grace period and feed the very backlog it waits behind. So
while a pool's queue holds more than `backlog_limit` jobs, the sweeper leaves that pool's waiting
messages alone (and counts them as `backlogged`); it repairs them once the queue is under the limit,
when a job still missing really is missing. `sending` messages (a dead worker's lease) are repaired
whatever the backlog: their job, redelivered, would only be taken over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from petrel.models.jobs import SendJob
from petrel.models.records import MessageStatus, Pool
from petrel.ports import Clock, DueMessage, JobQueue, MessageStore, RecordNotFound, WriteConflict

PAGE_SIZE = 100


@dataclass(frozen=True)
class SweepDeps:
    messages: MessageStore
    queue: JobQueue
    clock: Clock
    shards: Sequence[str]
    grace_seconds: int
    max_messages: int  # repairs per run at most; the rest wait for the next run
    backlog_limit: int = 1_000  # jobs on a pool's queue above which its waiting messages are left alone


@dataclass
class SweepReport:
    repaired: Counter[MessageStatus] = field(default_factory=Counter)
    examined: int = 0
    claim_lost: int = 0  # another sweep, or the message's own way forward, got there first
    requeue_failed: int = 0  # claimed, but the queue refused the job: repaired again one grace later
    truncated: bool = False  # stopped at max_messages with more due
    backlogged: int = 0  # waiting messages left alone: their pool's queue is over the backlog limit
    backlogs: dict[Pool, int] = field(default_factory=dict)  # each pool's queue, read once per run
    leased: int = 0  # `sending` messages whose lease is live: due again at the lease's end

    @property
    def total(self) -> int:
        return sum(self.repaired.values())


def repair_job(message: DueMessage) -> SendJob:
    """The job that moves `message` on: its own attempt's, or for a `sending` message the job of the
    attempt in flight (the takeover of its expired lease)."""
    attempt = message.attempt - 1 if message.status is MessageStatus.SENDING else message.attempt
    return SendJob(
        tenant_id=message.tenant_id,
        email_id=message.email_id,
        message_id=message.message_id,
        attempt=max(attempt, 0),
        pool=message.pool,
    )


def behind_backlog(deps: SweepDeps, message: DueMessage, report: SweepReport) -> bool:
    """Whether the message's job may still be waiting in its pool's queue (see the module docstring)."""
    if message.status is MessageStatus.SENDING:
        return False
    if message.pool not in report.backlogs:
        report.backlogs[message.pool] = deps.queue.backlog(message.pool)
    return report.backlogs[message.pool] > deps.backlog_limit


def lease_live(deps: SweepDeps, message: DueMessage, *, now: int) -> bool:
    """Whether a `sending` message's lease may still be held (it ended less than a grace ago)."""
    return (
        message.status is MessageStatus.SENDING
        and message.lease_until is not None
        and message.lease_until > now - deps.grace_seconds
    )


def postpone(deps: SweepDeps, message: DueMessage, report: SweepReport) -> None:
    """Due again when the live lease ends; lost to a concurrent change, the message moved on anyway."""
    assert message.lease_until is not None
    try:
        deps.messages.move_due(message, to=message.lease_until)
    except (WriteConflict, RecordNotFound):
        report.claim_lost += 1
        return
    report.leased += 1


def claim(deps: SweepDeps, message: DueMessage, *, now: int) -> bool:
    """Whether this sweep won the message's repair (False: another sweep, or the message's own way
    forward, moved it on; or it is gone)."""
    try:
        deps.messages.claim_repair(message, now=now)
    except (WriteConflict, RecordNotFound):
        return False
    return True


def _requeue(deps: SweepDeps, claimed: list[DueMessage], report: SweepReport) -> None:
    by_pool: dict[Pool, list[DueMessage]] = {}
    for message in claimed:
        by_pool.setdefault(message.pool, []).append(message)
    for pool, messages in by_pool.items():
        refused = {job.message_id for job in deps.queue.send_jobs(pool, [repair_job(m) for m in messages])}
        for message in messages:
            if message.message_id in refused:
                report.requeue_failed += 1
            else:
                report.repaired[message.status] += 1


def sweep_shard(deps: SweepDeps, shard: str, *, now: int, report: SweepReport) -> None:
    cursor: str | None = None
    while True:
        budget = deps.max_messages - report.examined
        if budget <= 0:
            report.truncated = True
            return
        page = deps.messages.find_due(
            shard, due_before=now - deps.grace_seconds, limit=min(PAGE_SIZE, budget), cursor=cursor
        )
        report.examined += len(page.messages)
        claimed: list[DueMessage] = []
        for message in page.messages:
            if message.status is MessageStatus.SENDING and message.attempt == 0:
                continue  # cannot be: a lease always counts an attempt
            if lease_live(deps, message, now=now):
                postpone(deps, message, report)
                continue
            if behind_backlog(deps, message, report):
                report.backlogged += 1
                continue
            if claim(deps, message, now=now):
                claimed.append(message)
            else:
                report.claim_lost += 1
        _requeue(deps, claimed, report)
        cursor = page.cursor
        if cursor is None:
            return


def sweep(deps: SweepDeps) -> SweepReport:
    """One run over every shard of the due index."""
    now = int(deps.clock.now().timestamp())
    report = SweepReport()
    start = now % len(deps.shards) if deps.shards else 0  # no shard is always last when a run is cut short
    for shard in [*deps.shards[start:], *deps.shards[:start]]:
        sweep_shard(deps, shard, now=now, report=report)
    return report
