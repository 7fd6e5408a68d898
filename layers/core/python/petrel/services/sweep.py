"""The sweeper: finds non-final messages whose way forward is gone, and puts each back on its queue.

At every moment each non-final message has exactly one way forward: a job on a queue, a schedule, a
live lease, or a dead letter that an alarm reports. A message that waits carries a due time (the "due"
index, petrel.resources.DUE_INDEX): when that way forward should have acted. It is written when a
message waits (scheduled, deferred, reopened) and by the sweeper, and by nothing else: the lease does
not move it and a final status does not remove it (two index writes saved per message). A message
queued at its creation has none (a third write saved): the sweeper finds it in its tenant's creation
shard (petrel.resources.creation_shard), the tenant's messages in creation order, where a message
that has a due time is passed (the due shards look at it). So each shard's entries are read in order
from a watermark (`due_watermark`) up to `now - grace_seconds`, each with its message's current
state, and:

- a final message's entry is passed (`passed`);
- a `sending` message whose lease is still live (not over by a grace) has its entry moved to the
  lease's end (`move_due`), to be looked at again then;
- a waiting message behind a backlog (below) is left where it is, and holds the watermark: the next
  run looks at it again (a read, no write);
- any other has lost its way forward (a crash between storing and enqueuing, a worker that died
  twice, a lost schedule) and is repaired:
  1. claim: a conditional write that moves its due time to now (or gives it one, found in its
     creation shard), only if status, attempt and due time are still those seen, so a concurrent or
     repeated sweep does not repair it twice (and a message that moved on meanwhile is left alone);
  2. a job on its pool's send queue: SendJob(attempt) for queued, scheduled and deferred; for
     `sending` with a lease long expired, SendJob(attempt - 1), the job of the attempt in flight,
     which the worker's takeover path leases again.

Every move is a key change ahead of the watermark (from a creation shard, into the due index), so the
entry is seen again. A due shard's watermark then moves past every entry looked at, up to the first
whose conditional write lost to a change this sweep did not see (say a lease that landed between the
read and the claim: a lease moves no entry, so a watermark past it would never see that message
again); the next run looks at it again. A creation shard's entries never move, so a watermark held
there would re-read every entry after it on every run: there a write that lost to a change gives the
message a due time now instead, whatever its state (`adopt`), and the due shards look at it again a
grace later. The watermark is written after the page's jobs: a crash before it only makes the next
run look again, and an entry already moved is no longer where it was.

A job for an attempt already done does nothing (the lease rules), so a repair is always safe. A job
the queue refused is repaired again one grace later.

A backlog is not a lost job. A queued, scheduled (released) or deferred (its retry fired) message whose
job waits behind a backlog longer than the grace looks exactly like one whose job is gone; repairing it
would add a job per waiting message every grace period and feed the very backlog it waits behind. So
while a pool's queue holds more than `backlog_limit` jobs, the sweeper leaves that pool's waiting
messages alone (counted as `backlogged`); it repairs them once the queue is under the limit, when a job
still missing really is missing. A backlogged entry of a due shard is not moved: it holds the
watermark, and each run reads it again until its pool's queue is under the limit (one found in a
creation shard is given a due time once, `adopt`, and is then the due shards'). Moving it ahead instead cost a write per
waiting message every grace period (a campaign's whole backlog rewritten every run: in the local stack
that work took most of the embedded DynamoDB while the backlog drained); reading it again costs a
fraction of a read unit. It counts towards `max_messages`, so a run behind a long backlog stops after
that many entries (`truncated`). `sending` messages (a dead worker's lease) within those are repaired
whatever the backlog: their job, redelivered, would only be taken over; one beyond them waits for the
backlog to fall below the limit, or for its own job to come back after the visibility timeout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from petrel import resources
from petrel.models.jobs import SendJob
from petrel.models.records import FINAL_STATUSES, MessageStatus, Pool
from petrel.ports import Clock, DueMessage, JobQueue, MessageStore, RecordNotFound, WriteConflict

PAGE_SIZE = 100


@dataclass(frozen=True)
class SweepDeps:
    messages: MessageStore
    queue: JobQueue
    clock: Clock
    shards: Sequence[str]  # the due index's shards (petrel.resources.due_shards)
    tenant_ids: Callable[[], Sequence[str]]  # every tenant, read once per run: their creation shards
    grace_seconds: int
    max_messages: int  # repairs per run at most; the rest wait for the next run
    backlog_limit: int = 1_000  # jobs on a pool's queue above which its waiting messages are left alone


@dataclass
class SweepReport:
    repaired: Counter[MessageStatus] = field(default_factory=Counter)
    examined: int = 0  # entries of non-final messages looked at
    claim_lost: int = 0  # another sweep, or the message's own way forward, got there first
    requeue_failed: int = 0  # claimed, but the queue refused the job: repaired again one grace later
    truncated: bool = False  # stopped at max_messages with more due
    backlogged: int = 0  # waiting messages left alone: their pool's queue is over the backlog limit
    backlogs: dict[Pool, int] = field(default_factory=dict)  # each pool's queue, read once per run
    leased: int = 0  # `sending` messages whose lease is live: due again at the lease's end
    passed: int = 0  # entries of final messages, or in a creation shard of messages with a due time
    adopted: int = 0  # creation shard: a write lost to a change, so the due shards look at it again

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


def postpone(deps: SweepDeps, message: DueMessage, report: SweepReport) -> bool:
    """Due again when the live lease ends; whether the entry moved (see `move_ahead`)."""
    assert message.lease_until is not None
    if not move_ahead(deps, message, to=message.lease_until, report=report):
        return False
    report.leased += 1
    return True


def move_ahead(deps: SweepDeps, message: DueMessage, *, to: int, report: SweepReport) -> bool:
    """Move the entry to `to`, where a later run sees it again; False when the message changed since it
    was read (counted as a lost claim: the next run looks at it again)."""
    try:
        deps.messages.move_due(message, to=to)
    except (WriteConflict, RecordNotFound):
        report.claim_lost += 1
        return False
    return True


def adopt(deps: SweepDeps, message: DueMessage, *, now: int, report: SweepReport) -> bool:
    """A message of a creation shard that this run cannot pass (a write lost to a change, or it waits
    behind a backlog): given a due time now, whatever its state, the due shards look at it again a grace
    later (one write, once: from then on the creation shard passes it); so the creation shard's watermark passes it
    (its entries never move, and a watermark held there would re-read every entry after it on every
    run). Whether the watermark may pass it: always, unless the store failed (then the run fails)."""
    try:
        deps.messages.adopt_due(message, to=now)
    except WriteConflict:
        return True  # it has a due time already: the due shards'
    except RecordNotFound:
        return True  # gone
    report.adopted += 1
    return True


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


def look_at(deps: SweepDeps, message: DueMessage, *, now: int, report: SweepReport, claimed: list[DueMessage]) -> bool:
    """Act on one due entry; whether the watermark may pass it: yes when its message is final, or its
    entry was moved ahead (repaired, a live lease), where a later run sees it again; no when it waits
    behind a backlog, or a conditional write lost to a change this sweep did not see (the next run looks
    at it again)."""
    if message.status in FINAL_STATUSES:
        report.passed += 1
        return True
    report.examined += 1
    if message.status is MessageStatus.SENDING and message.attempt == 0:
        return True  # cannot be: a lease always counts an attempt
    if lease_live(deps, message, now=now):
        return postpone(deps, message, report)
    if behind_backlog(deps, message, report):
        report.backlogged += 1
        return False  # left where it is: the next run reads it again (see the module docstring)
    if claim(deps, message, now=now):
        claimed.append(message)
        return True
    report.claim_lost += 1
    return False


def sweep_shard(deps: SweepDeps, shard: str, *, now: int, report: SweepReport) -> None:
    """Look at the shard's entries from its watermark up to `now - grace`, and move the watermark past
    every entry looked at (up to the first one that must be looked at again)."""
    creation = resources.creation_shard_tenant(shard) is not None
    # At least a second back: an entry this run gave a due time (now) is a later run's, even with no grace.
    before = now - max(deps.grace_seconds, 1)
    mark = deps.messages.due_watermark(shard)
    cursor = mark
    held = False  # an entry was not passed: the watermark stays before it for this run
    while True:
        budget = deps.max_messages - report.examined
        if budget <= 0:
            report.truncated = True
            return
        page = deps.messages.find_due(shard, due_before=before, limit=min(PAGE_SIZE, budget), cursor=cursor)
        claimed: list[DueMessage] = []
        start = mark
        for message in page.messages:
            if creation and message.due_at is not None:  # waiting, or looked at before: the due shards'
                report.passed += 1
                passed = True
            else:
                passed = look_at(deps, message, now=now, report=report, claimed=claimed)
                if not passed and creation:
                    passed = adopt(deps, message, now=now, report=report)
            held = held or not passed
            if not held:
                mark = message.position
        _requeue(deps, claimed, report)
        if mark is not None and mark != start:  # after the jobs: a crash before it only looks again
            deps.messages.set_due_watermark(shard, mark)
        cursor = page.cursor
        if cursor is None:
            return


def sweep(deps: SweepDeps) -> SweepReport:
    """One run over every shard of the due index, and every tenant's creation shard."""
    now = int(deps.clock.now().timestamp())
    report = SweepReport()
    shards = [*deps.shards, *(resources.creation_shard(t) for t in deps.tenant_ids())]
    start = now % len(shards) if shards else 0  # no shard is always last when a run is cut short
    for shard in [*shards[start:], *shards[:start]]:
        sweep_shard(deps, shard, now=now, report=report)
    return report
