"""Delivering one recipient's message: a pipeline of named steps (DESIGN §1, §2).

lease → check takeovers → check age → check suppression → load body → (deliver locally) → check the
sending domain and DKIM-sign → choose server → relay → classify → (suppress | schedule the retry) →
record. A recipient on a domain one of the tenant's own mailboxes receives for is delivered locally:
its raw copy goes to the ingest queue, the same path as mail read from that mailbox, and it is
`delivered` without SMTP (and unsigned: it never leaves the tenant). A suspended tenant's message is
held after the age check (`hold_message`): deferred, not attempted, until the tenant is resumed.

Outcomes are values; only an unexpected exception escapes (and SQS redelivers the job, then moves
it to the DLQ). On the job's last receive the message is first ended `failed`/`worker-error`
(`give_up`), so it never waits in silence for a job that sits in a DLQ.

The worker's time is bounded per invocation (`InvocationBudget`): a record starts only while one
SMTP transaction still fits, the relay gets the invocation's deadline, and records there is no
time for go back to their queue (`hand_back`) without counting as a failed receive.

The steps are pure over ports: no cache and no thread-local state here. Caching is composition (caching
adapters around the ports, petrel.adapters.caching, wired by the worker's container), and what one
invocation learns about its servers lives in the `Batch` it passes to every job.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from petrel import resources
from petrel.mail import verp
from petrel.mail.addresses import parse_mailbox
from petrel.mail.raw import raw_message_id
from petrel.mail.smtp_reply import (
    DeliveryOutcome,
    HardFail,
    PermanentFail,
    Relayed,
    ReplyCode,
    SmtpReply,
    SoftFail,
    Stage,
    classify,
)
from petrel.models.inbound import IngestJob, inbound_id
from petrel.models.jobs import SendJob
from petrel.models.records import (
    FINAL_STATUSES,
    LEASABLE_STATUSES,
    Attempt,
    DomainStatus,
    EmailRecord,
    Event,
    EventName,
    Mailbox,
    MessageRecord,
    MessageStatus,
    Reply,
    SmtpServer,
    Suppression,
    Tenant,
)
from petrel.models.retry import RetryLadder, schedule_name
from petrel.ports import (
    AlreadyExists,
    BlobStore,
    Clock,
    EmailKey,
    Envelope,
    IngestQueue,
    JobQueue,
    MailboxStore,
    MessageKey,
    MessageStore,
    RecordNotFound,
    RetryScheduler,
    SecretStore,
    SmtpRelay,
    SuppressionStore,
    TenantStore,
    Transition,
    WriteConflict,
)
from petrel.services.signing import MessageSigner, Signed, SigningDeferred
from petrel.services.suspension import HELD_REASON, HOLD_SECONDS, attempt_job

# The failure reason of a message whose job the worker could not process (an unexpected error on the
# job's last receive, or workers that kept dying holding its lease): its job is in (or bound for) the
# DLQ, and `petrel dlq redrive` reopens it (petrel.services.redrive).
WORKER_ERROR = "worker-error"


class JobResult(StrEnum):
    DONE = "done"  # recorded (a deferral is a schedule, not a redelivery) or nothing to do: acknowledge
    RETRY = "retry"  # another worker holds the lease: let the queue bring the job back


class PasswordStore(SecretStore, Protocol):
    """Where SMTP passwords come from: a SecretStore that can drop what it kept of a value the server
    refused, so the next try reads it afresh (the operator may have rotated it)."""

    def forget_secret(self, name: str) -> None: ...


class TenantConfig(TenantStore, Protocol):
    """Where tenant configuration comes from: a TenantStore (cached, in the worker) that can drop what
    it kept of a tenant, so a suspension is confirmed by a fresh read before mail is held for it (a
    tenant resumed a moment ago is not held again for a cache's lifetime)."""

    def forget_tenant(self, tenant_id: str) -> None: ...


@dataclass
class DeliverDeps:
    tenants: TenantConfig
    messages: MessageStore
    blobs: BlobStore
    secrets: PasswordStore
    relay: SmtpRelay
    clock: Clock
    suppressions: SuppressionStore
    scheduler: RetryScheduler
    lease_seconds: int
    # Local delivery: the tenant's mailboxes (which domains it receives for) and the ingest queue.
    mailboxes: MailboxStore
    ingest: IngestQueue
    # DKIM: signs each relayed message with its domain's active keys (petrel.services.signing).
    signer: MessageSigner
    ladder: RetryLadder = field(default_factory=RetryLadder)
    rng: random.Random = field(default_factory=random.Random)
    # The send queues' maxReceiveCount: the number of dead workers an attempt may outlive.
    max_receive_count: int = 3
    # How long a suspended tenant's message is held before the worker looks at the tenant again.
    hold_seconds: int = HOLD_SECONDS


@dataclass
class Batch:
    """What one invocation learns as it goes: the servers that failed as a whole (refused, dropped,
    421, timed out). The batch's other messages for them are deferred without another try; the next
    invocation, with a batch of its own, tries them again.

    One per invocation, passed to each of its jobs; the invocation runs its jobs on several threads at
    once, so what it learns is behind a lock.
    """

    unavailable: dict[str, SmtpReply] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def server_failed(self, server_id: str, reply: SmtpReply) -> None:
        with self._lock:
            self.unavailable[server_id] = reply

    def failed(self, server_id: str) -> bool:
        with self._lock:
            return server_id in self.unavailable

    def failure(self, server_id: str) -> SmtpReply | None:
        with self._lock:
            return self.unavailable.get(server_id)


@dataclass
class InvocationBudget:
    """The time one worker invocation has, as `time.monotonic()` instants (from Lambda's
    `get_remaining_time_in_millis()` at its start).

    A record may start while one record's time (an SMTP transaction's limit) plus the margin is left;
    the invocation's first record always may, so a budget larger than the function's timeout slows a
    queue down but cannot stall it. The relay's deadline is the invocation's end less the margin,
    which is kept for recording the outcome and handing back the rest.
    """

    ends_at: float
    record_seconds: float
    margin_seconds: float
    monotonic: Callable[[], float] = time.monotonic
    admitted: int = 0

    @classmethod
    def from_remaining(
        cls,
        remaining_ms: int,
        *,
        record_seconds: float,
        margin_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> InvocationBudget:
        return cls(monotonic() + remaining_ms / 1000, record_seconds, margin_seconds, monotonic)

    @property
    def relay_deadline(self) -> float:
        return self.ends_at - self.margin_seconds

    def admit(self) -> bool:
        """Whether the next record may start now (and count it if so)."""
        left = self.ends_at - self.monotonic()
        if self.admitted and left < self.record_seconds + self.margin_seconds:
            return False
        self.admitted += 1
        return True


def hand_back(queue: JobQueue, job: SendJob, delay_seconds: int) -> bool:
    """Put a job the invocation has no time for back on its queue, visible after `delay_seconds`.

    It goes back as a new queue message, so its receive count starts afresh: running out of time is
    not a failure of the job. False when the queue refused it (then SQS must keep the original).
    """
    return not queue.send_jobs(job.pool, [job], delay_seconds)


@dataclass(frozen=True)
class Delivery:
    """What one job did. `attempted`: it leased its message and ran the attempt (else there was nothing
    to do, or another worker holds it); `status` is the status it recorded (None: none, or the lease
    was lost before it could); `server` the server it relayed through, if it got that far."""

    result: JobResult
    outcome: DeliveryOutcome | None = None
    message: MessageRecord | None = None
    note: str = ""
    status: MessageStatus | None = None
    server: SmtpServer | None = None
    attempted: bool = False


def lease_message(deps: DeliverDeps, job: SendJob, now: datetime) -> MessageRecord | Delivery:
    """The message leased for this job's attempt, or what to do with a job that cannot lease it."""
    try:
        return deps.messages.lease(
            MessageKey.of(job),
            after_attempt=job.attempt,
            now=int(now.timestamp()),
            lease_until=int((now + timedelta(seconds=deps.lease_seconds)).timestamp()),
        )
    except RecordNotFound:
        return Delivery(JobResult.DONE, note="no such message")
    except WriteConflict:
        pass
    current = deps.messages.get_message(MessageKey.of(job))
    if current is None:
        return Delivery(JobResult.DONE, note="no such message")
    if current.status == MessageStatus.SENDING and current.attempt == job.attempt + 1:
        return Delivery(JobResult.RETRY, message=current, note="leased by another worker")
    if current.status in FINAL_STATUSES or current.attempt == job.attempt:
        return Delivery(JobResult.DONE, message=current, note=f"already {current.status}")
    return Delivery(JobResult.DONE, message=current, note=f"attempt {job.attempt} is done already")


def load_body(deps: DeliverDeps, email: EmailRecord) -> bytes:
    if email.body_inline is not None:
        return email.body_inline
    return deps.blobs.get(email.body_key or "")


def expiry(tenant: Tenant | None, message: MessageRecord) -> datetime:
    """The moment the message has been tried for as long as its tenant allows (24 h by default),
    counted from its first due time: its `send_at`, else its creation."""
    hours = tenant.max_age_hours if tenant else Tenant.model_fields["max_age_hours"].default
    return (message.send_at or message.created_at) + timedelta(hours=hours)


def check_suppression(deps: DeliverDeps, message: MessageRecord) -> Suppression | None:
    return deps.suppressions.get(message.tenant_id, message.recipient)


def choose_server(
    deps: DeliverDeps, batch: Batch, tenant_id: str, pool: str, *, preferred: SmtpServer | None = None
) -> SmtpServer | SmtpReply | None:
    """The server the batch's dispatch chose for the job (`preferred`) unless it has failed in this
    batch since, else a weighted pick among the pool's usable servers (enabled, not paused) that have
    not failed in this batch.

    None: the pool has no usable server. A reply: every one failed earlier in this batch (the last reply).
    """
    if preferred is not None and not batch.failed(preferred.server_id):
        return preferred
    now = deps.clock.now()
    candidates = [s for s in deps.tenants.list_servers(tenant_id) if s.pool == pool and s.takes_traffic(now)]
    if not candidates:
        return None
    healthy = [s for s in candidates if not batch.failed(s.server_id)]
    if not healthy:
        return batch.failure(candidates[-1].server_id)
    return deps.rng.choices(healthy, weights=[s.weight for s in healthy])[0]


def server_failed(reply: SmtpReply) -> bool:
    """The reply says the server (not this recipient) cannot take mail now: no reply at all (refused,
    reset, timed out, dropped), a refusal before MAIL (greeting, TLS, AUTH), or 421 closing."""
    return (
        reply.code == 0
        or reply.stage in (Stage.CONNECT, Stage.TLS, Stage.AUTH)
        or reply.code == ReplyCode.SERVICE_NOT_AVAILABLE
    )


def return_path(deps: DeliverDeps, email: EmailRecord, message: MessageRecord) -> str:
    """The VERP envelope sender: the one fixed at submission (`message.return_path`), or, on a record
    older than that field, `bounces+<message id>@<the sending domain's return-path domain>` now."""
    if message.return_path:
        return message.return_path
    domain = deps.tenants.get_domain(email.tenant_id, parse_mailbox(email.from_address).domain)
    return verp.return_path(
        message.message_id,
        from_address=email.from_address,
        return_path_domain=domain.return_path_domain if domain else None,
    )


# The reason of a deferral whose sending domain is gone, or was found broken by the drift check.
DOMAIN_UNVERIFIED = "domain-unverified"


def sign_message(deps: DeliverDeps, tenant: Tenant | None, email: EmailRecord) -> Signed | SoftFail:
    """The bytes to relay: the stored body signed afresh with the From domain's active DKIM keys (never
    stored signed, so a retry carries one signature per key, not one per attempt), or a deferral.

    The domain is read now (through the worker's cache): one deleted since submission, or marked
    `failed` by the drift check (its SPF or DKIM record is gone or wrong), stops sending before
    receivers start failing it, unless the tenant allows unverified domains; it resumes when the
    domain verifies again. A key that cannot be used defers the message: nothing that should be
    signed goes out unsigned."""
    domain = deps.tenants.get_domain(email.tenant_id, parse_mailbox(email.from_address).domain)
    allowed = tenant is not None and tenant.allow_unverified_domains
    if not allowed and (domain is None or domain.status is DomainStatus.FAILED):
        state = "gone" if domain is None else "failing its DNS checks"
        reply = SmtpReply.network(Stage.CONNECT, f"sending domain {state}")
        return SoftFail(reply, reason=DOMAIN_UNVERIFIED)
    body = load_body(deps, email)
    if domain is None:
        return Signed(body)
    signed = deps.signer.sign(body, domain)
    if isinstance(signed, SigningDeferred):
        return SoftFail(SmtpReply.network(Stage.CONNECT, signed.detail), reason=signed.reason)
    return signed


def sign_and_relay(
    deps: DeliverDeps,
    batch: Batch,
    tenant: Tenant | None,
    message: MessageRecord,
    email: EmailRecord,
    *,
    deadline: float | None,
    preferred: SmtpServer | None = None,
) -> tuple[DeliveryOutcome, SmtpServer | None]:
    """Sign, then relay what was signed; a message that cannot be signed is deferred before any SMTP."""
    signed = sign_message(deps, tenant, email)
    if isinstance(signed, SoftFail):
        return signed, None
    return relay_message(deps, batch, message, email, deadline, data=signed.message, preferred=preferred)


def relay_message(
    deps: DeliverDeps,
    batch: Batch,
    message: MessageRecord,
    email: EmailRecord,
    deadline: float | None,
    *,
    data: bytes,
    preferred: SmtpServer | None = None,
) -> tuple[DeliveryOutcome, SmtpServer | None]:
    """One SMTP transaction of `data` (the signed message) through a server of the message's pool (the
    one the dispatch chose, if it has not failed meanwhile); the outcome, and the server tried."""
    server = choose_server(deps, batch, message.tenant_id, message.pool, preferred=preferred)
    if server is None:
        reply = SmtpReply.network(Stage.CONNECT, f"no usable SMTP server in pool {message.pool!r}")
        return SoftFail(reply, reason="no-server"), None
    if isinstance(server, SmtpReply):  # not tried again in this batch: the server just failed
        return SoftFail(server, reason="server-unavailable", retry_after=server.retry_after_seconds()), None
    try:
        password = deps.secrets.get_secret(server.secret_name)
    except Exception as exc:  # the secret store is down or the secret is gone: keep the message
        reply = SmtpReply.network(Stage.AUTH, f"SMTP password unavailable: {type(exc).__name__}")
        return SoftFail(reply, reason="secret-unavailable"), server
    envelope = Envelope(sender=return_path(deps, email, message), recipient=message.recipient, envid=message.message_id)
    reply = deps.relay.relay(server, password, envelope, data, deadline=deadline)
    outcome = classify(reply)
    if isinstance(outcome, SoftFail) and server_failed(reply):
        batch.server_failed(server.server_id, reply)
        if reply.stage is Stage.AUTH:
            deps.secrets.forget_secret(server.secret_name)  # a rotated password is picked up on the next try
    return outcome, server


def _stored_reply(reply: SmtpReply) -> Reply:
    return Reply(code=reply.code, enhanced=reply.enhanced, text=reply.text, stage=str(reply.stage))


def _event(message: MessageRecord, kind: EventName, now: datetime, reply: Reply | None, detail: str | None) -> Event:
    return Event(
        type=kind, at=now, message_id=message.message_id, recipient=message.recipient, reply=reply, detail=detail
    )


def outcome_transition(
    message: MessageRecord, outcome: DeliveryOutcome, attempt: Attempt, now: datetime, next_attempt: datetime | None
) -> Transition:
    """The record of one attempt. A soft failure is `deferred` when `next_attempt` is set, else it
    has run out of time: `failed`, reason `expired`."""
    reply = _stored_reply(outcome.reply)
    if isinstance(outcome, Relayed):
        return Transition(MessageStatus.RELAYED, (_event(message, EventName.SENT, now, reply, None),), attempt, reply)
    if isinstance(outcome, SoftFail) and next_attempt is not None:
        event = _event(message, EventName.DEFERRED, now, reply, outcome.reason)
        return Transition(MessageStatus.DEFERRED, (event,), attempt, reply, next_attempt_at=next_attempt)
    if isinstance(outcome, SoftFail):
        event = _event(message, EventName.FAILED, now, reply, "expired")
        return Transition(MessageStatus.FAILED, (event,), attempt, reply, failure_reason="expired")
    if isinstance(outcome, HardFail):
        event = _event(message, EventName.BOUNCED, now, reply, outcome.bounce_class)
        return Transition(MessageStatus.BOUNCED, (event,), attempt, reply, bounce_class=outcome.bounce_class)
    event = _event(message, EventName.FAILED, now, reply, outcome.reason)
    return Transition(MessageStatus.FAILED, (event,), attempt, reply, failure_reason=outcome.reason)


def schedule_retry(
    deps: DeliverDeps, message: MessageRecord, outcome: SoftFail, tenant: Tenant | None, now: datetime
) -> datetime | None:
    """Create the one-time schedule of the next attempt (named `<message id>-<attempt>`, so a second
    create for the same attempt collides); None when the ladder runs past the message's maximum age."""
    due = deps.ladder.next_attempt(
        failures=len(message.attempts) + 1,  # attempts made, this one included: holds are not attempts
        retry_after=outcome.retry_after,
        now=now,
        expires=expiry(tenant, message),
        rng=deps.rng,
    )
    if due is not None:
        schedule_attempt(deps, message, due)
    return due


def schedule_attempt(deps: DeliverDeps, message: MessageRecord, due: datetime) -> None:
    """Schedule the job of `message`'s current attempt at `due`, once: the schedule is named
    `<message id>-<attempt>`, so the create of an earlier run of this attempt (a retry or a hold)
    makes a second one collide, and it is there once."""
    with contextlib.suppress(AlreadyExists):
        deps.scheduler.schedule(schedule_name(message.message_id, message.attempt), due, attempt_job(message))


def suppress_recipient(deps: DeliverDeps, message: MessageRecord, outcome: HardFail, now: datetime) -> None:
    """Put the recipient on the tenant's suppression list (the first entry for an address is kept)."""
    suppression = Suppression(
        tenant_id=message.tenant_id,
        email=message.recipient.lower(),
        reason="hard-bounce",
        detail=str(outcome.reply),
        message_id=message.message_id,
        created_at=now,
    )
    with contextlib.suppress(AlreadyExists):
        deps.suppressions.add(suppression)


def record(deps: DeliverDeps, message: MessageRecord, change: Transition, now: datetime) -> bool:
    """Write the end of the leased attempt, only while this worker still holds it (sending, same
    attempt, the lease it took: a takeover keeps the attempt but replaces the lease). False when the
    lease was lost meanwhile."""
    return _transition(
        deps,
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=message.attempt,
        change=change,
        now=now,
        lease_until=message.lease_until,
    )


def _transition(
    deps: DeliverDeps,
    key: MessageKey,
    *,
    expected: list[MessageStatus],
    attempt: int,
    change: Transition,
    now: datetime,
    lease_until: int | None,
) -> bool:
    """A conditional write: True when it was applied, False when the message moved on (or is gone)."""
    try:
        deps.messages.transition(
            key, expected=expected, attempt=attempt, change=change, now=now, lease_until=lease_until
        )
    except (WriteConflict, RecordNotFound):
        return False
    return True


def finish_without_sending(
    deps: DeliverDeps,
    message: MessageRecord,
    status: MessageStatus,
    now: datetime,
    *,
    event: EventName,
    detail: str,
    reason: str | None = None,
) -> Delivery:
    """Record an end reached before any SMTP: expired, the recipient is suppressed, or the attempt's
    workers kept dying. A failure's reason is `reason`, else `detail`."""
    change = Transition(
        status,
        (_event(message, event, now, None, detail),),
        failure_reason=(reason or detail) if status is MessageStatus.FAILED else None,
    )
    if not record(deps, message, change, now):
        return Delivery(JobResult.DONE, None, message, note="lease lost before recording", attempted=True)
    return Delivery(JobResult.DONE, None, message, note=detail, status=status, attempted=True)


def hold_message(deps: DeliverDeps, message: MessageRecord, tenant: Tenant, now: datetime) -> Delivery:
    """Hold a suspended tenant's leased message without attempting it (petrel.services.suspension):
    `deferred`, reason `tenant-suspended`, its one way forward the schedule of its next attempt
    `hold_seconds` ahead (or at its expiry, where it then fails `expired`), made before the status is
    written so a crash in between leaves a lease whose takeover holds it again (the schedule's create
    then collides). No attempt is logged; only the first hold adds an event."""
    due = min(now + timedelta(seconds=deps.hold_seconds), expiry(tenant, message))
    schedule_attempt(deps, message, due)
    first = message.failure_reason != HELD_REASON
    events = (_event(message, EventName.DEFERRED, now, None, HELD_REASON),) if first else ()
    change = Transition(MessageStatus.DEFERRED, events, failure_reason=HELD_REASON, next_attempt_at=due)
    if not record(deps, message, change, now):
        return Delivery(JobResult.DONE, None, message, note="lease lost before recording")
    return Delivery(JobResult.DONE, None, message, note=HELD_REASON, status=MessageStatus.DEFERRED)


def local_mailbox(deps: DeliverDeps, message: MessageRecord) -> Mailbox | None:
    """The tenant's enabled mailbox on the recipient's domain, if it has one: the recipient is then
    local (the tenant's own MailU receives for it)."""
    domain = message.recipient.rpartition("@")[2].lower()
    return next((m for m in deps.mailboxes.list_mailboxes(message.tenant_id) if m.enabled and m.domain == domain), None)


def local_copy(deps: DeliverDeps, email: EmailRecord, message: MessageRecord) -> bytes:
    """The message as the recipient's mailbox would hold it: the body, under the envelope's
    `Return-Path` and `Delivered-To` (the same bytes on every attempt, so the copy has one inbound id)."""
    sender = return_path(deps, email, message)
    head = f"Return-Path: <{sender}>\r\nDelivered-To: {message.recipient}\r\n".encode()
    return head + load_body(deps, email)


def deliver_locally(
    deps: DeliverDeps, message: MessageRecord, email: EmailRecord, mailbox: Mailbox, started: datetime
) -> Delivery:
    """Store the copy raw and queue it for ingest into `mailbox`, then record `delivered`. A crash in
    between repeats both on the next lease: the same bytes, the same inbound id, one inbound record."""
    raw = local_copy(deps, email, message)
    found = inbound_id(message.tenant_id, raw_message_id(raw), raw)
    key = resources.inbound_raw_key(message.tenant_id, found)
    deps.blobs.put(key, raw)
    deps.ingest.send_ingest(
        IngestJob(
            tenant_id=message.tenant_id,
            inbound_id=found,
            raw_key=key,
            received_at=started,
            source="local",
            mailbox_id=mailbox.mailbox_id,
            local_message_id=message.message_id,
        )
    )
    finished = deps.clock.now()
    attempt = Attempt(number=message.attempt, started_at=started, finished_at=finished, outcome="local")
    event = _event(message, EventName.DELIVERED, finished, None, f"local delivery to {mailbox.address}")
    change = Transition(MessageStatus.DELIVERED, (event,), attempt)
    if not record(deps, message, change, finished):
        return Delivery(JobResult.DONE, None, message, note="lease lost before recording", attempted=True)
    return Delivery(
        JobResult.DONE, None, message, note="local delivery", status=MessageStatus.DELIVERED, attempted=True
    )


def worker_error(error: BaseException) -> str:
    """An event's detail for an unexpected error: its type only, never its text (which may quote a
    body, an address or a secret)."""
    return f"{WORKER_ERROR}: {type(error).__name__}"


def give_up(
    deps: DeliverDeps,
    job: SendJob,
    leased: MessageRecord | None,
    error: BaseException,
    *,
    started: datetime,
    now: datetime,
) -> bool:
    """On a job's last receive, end its message `failed`/`worker-error` (event `email.failed`, detail
    the error's type) before SQS moves the job to the DLQ. Conditional, so it never overwrites a newer
    outcome: under this worker's own lease when it took one; else only while the message still waits
    for this job (at the job's attempt), or sits under a lease of this attempt whose holder died.
    True when it was written."""
    detail = worker_error(error)
    if leased is not None:
        attempt = Attempt(number=leased.attempt, started_at=started, finished_at=now, outcome=WORKER_ERROR)
        event = _event(leased, EventName.FAILED, now, None, detail)
        change = Transition(MessageStatus.FAILED, (event,), attempt, failure_reason=WORKER_ERROR)
        return record(deps, leased, change, now)
    current = deps.messages.get_message(MessageKey.of(job))
    if current is None:
        return False
    change = Transition(
        MessageStatus.FAILED, (_event(current, EventName.FAILED, now, None, detail),), failure_reason=WORKER_ERROR
    )
    if current.status in LEASABLE_STATUSES and current.attempt == job.attempt:
        expected, lease_until = [current.status], None
    elif (
        current.status is MessageStatus.SENDING
        and current.attempt == job.attempt + 1
        and current.lease_until is not None
        and current.lease_until < now.timestamp()
    ):
        expected, lease_until = [MessageStatus.SENDING], current.lease_until
    else:  # finished, or in a live lease of another worker: its outcome stands
        return False
    return _transition(
        deps,
        MessageKey.of(job),
        expected=expected,
        attempt=current.attempt,
        change=change,
        now=now,
        lease_until=lease_until,
    )


def prefetch_emails(deps: DeliverDeps, jobs: Sequence[SendJob]) -> None:
    """Read the email records of a batch's jobs together, before they run: the worker's message store
    keeps them (petrel.adapters.caching.CachingMessageStore), so each job's own read finds its record
    there; one request instead of one per message. A record the read missed is read by its job."""
    if len(jobs) > 1:
        deps.messages.get_email_records([EmailKey.of(job) for job in jobs])


def deliver_message(
    deps: DeliverDeps,
    job: SendJob,
    *,
    batch: Batch | None = None,
    deadline: float | None = None,
    last_receive: bool = False,
    server: SmtpServer | None = None,
) -> Delivery:
    """Run one job. `batch` is the invocation's (a job run alone is a batch of its own); `deadline` (a
    `time.monotonic()` instant) bounds its SMTP transaction; `last_receive` says SQS dead-letters the job
    if this run raises, and then `give_up` runs first; `server` is the one the batch's dispatch chose
    (petrel.services.dispatch; None: the attempt picks one)."""
    started = deps.clock.now()
    leased: MessageRecord | Delivery | None = None
    try:
        leased = lease_message(deps, job, started)
        if isinstance(leased, Delivery):
            return leased
        return attempt_delivery(deps, batch or Batch(), job, leased, started, deadline=deadline, server=server)
    except Exception as error:
        if last_receive:
            try:
                held = leased if isinstance(leased, MessageRecord) else None
                give_up(deps, job, held, error, started=started, now=deps.clock.now())
            except Exception as failed:  # the original error is the one to report
                error.add_note(f"recording {WORKER_ERROR} failed too: {type(failed).__name__}")
        raise


def attempt_delivery(
    deps: DeliverDeps,
    batch: Batch,
    job: SendJob,
    leased: MessageRecord,
    started: datetime,
    *,
    deadline: float | None,
    server: SmtpServer | None = None,
) -> Delivery:
    """The leased attempt: the checks before SMTP, the relay, its outcome recorded."""
    if leased.takeovers >= deps.max_receive_count:
        detail = f"{WORKER_ERROR}: the lease expired {leased.takeovers} times"
        return finish_without_sending(
            deps, leased, MessageStatus.FAILED, started, event=EventName.FAILED, detail=detail, reason=WORKER_ERROR
        )
    tenant = deps.tenants.get_tenant(job.tenant_id)
    if started >= expiry(tenant, leased):
        return finish_without_sending(
            deps, leased, MessageStatus.FAILED, started, event=EventName.FAILED, detail="expired"
        )
    if tenant is not None and tenant.suspended:
        deps.tenants.forget_tenant(job.tenant_id)
        tenant = deps.tenants.get_tenant(job.tenant_id)
    if tenant is not None and tenant.suspended:
        return hold_message(deps, leased, tenant, started)
    suppressed = check_suppression(deps, leased)
    if suppressed is not None:
        return finish_without_sending(
            deps, leased, MessageStatus.SUPPRESSED, started, event=EventName.SUPPRESSED, detail=suppressed.reason
        )
    email = deps.messages.get_email_record(EmailKey.of(job))
    mailbox = local_mailbox(deps, leased)
    if email is not None and mailbox is not None:
        return deliver_locally(deps, leased, email, mailbox, started)
    preferred, server = server, None
    if email is None:  # cannot happen while retention outlives the queue; finish rather than loop
        outcome: DeliveryOutcome = PermanentFail(
            SmtpReply.network(Stage.CONNECT, "email record missing"), "email-missing"
        )
    else:
        outcome, server = sign_and_relay(deps, batch, tenant, leased, email, deadline=deadline, preferred=preferred)
    finished = deps.clock.now()
    attempt = Attempt(
        number=leased.attempt,
        started_at=started,
        finished_at=finished,
        server_id=server.server_id if server else None,
        outcome=type(outcome).__name__.lower(),
        reply=_stored_reply(outcome.reply),
    )
    next_attempt = None
    if isinstance(outcome, SoftFail):
        next_attempt = schedule_retry(deps, leased, outcome, tenant, finished)
    elif isinstance(outcome, HardFail) and outcome.suppress:
        suppress_recipient(deps, leased, outcome, finished)
    change = outcome_transition(leased, outcome, attempt, finished, next_attempt)
    if not record(deps, leased, change, finished):
        note = "lease lost before the outcome was recorded"
        return Delivery(JobResult.DONE, outcome, leased, note=note, server=server, attempted=True)
    return Delivery(JobResult.DONE, outcome, leased, status=change.status, server=server, attempted=True)
