"""Accepting an email: check the sender's domain and send time, build the MIME once, store,
then enqueue (or schedule, for `send_at`).

Each step is a named function so that the pipeline reads top to bottom in `submit_email`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from petrel.errors import InvalidRequest, PayloadTooLarge
from petrel.ids import message_id, new_email_id
from petrel.mail import dnsauth, verp
from petrel.mail.addresses import parse_mailbox
from petrel.mail.mime import AttachmentPart, MessageContent, build_mime, header_message_id
from petrel.models.api import MAX_SCHEDULE_DAYS, RecipientStatus, SendEmailRequest, SendEmailResponse
from petrel.models.jobs import ReleaseJob
from petrel.models.records import (
    EmailRecord,
    Event,
    EventName,
    MessageRecord,
    MessageStatus,
    Pool,
    Recipient,
    SendingDomain,
    SmtpServer,
    Tenant,
)
from petrel.ports import (
    AlreadyExists,
    BlobStore,
    Clock,
    JobQueue,
    MessageKey,
    MessageStore,
    RetryScheduler,
    TenantStore,
    Transition,
)
from petrel.services import attachments, quotas
from petrel.services.idempotency import ErrorLog
from petrel.services.release import release_schedule_name, send_job
from petrel.services.suspension import check_not_suspended

# Up to this far ahead a scheduled message waits in its queue (SQS DelaySeconds, at most 900 s);
# further ahead it waits in EventBridge Scheduler.
QUEUE_DELAY_LIMIT = 900


@dataclass(frozen=True)
class SubmitDeps:
    tenants: TenantStore
    messages: MessageStore
    blobs: BlobStore
    queue: JobQueue
    scheduler: RetryScheduler
    clock: Clock
    retention_days: int
    inline_body_limit: int
    # Where a failure after the email was stored is reported: the API passes its container's logger
    # (its lines then carry `petrel-api` and the request's context); the module's stdlib logger otherwise.
    log: ErrorLog = field(default_factory=lambda: logging.getLogger(__name__))


def check_send_at(request: SendEmailRequest, now: datetime) -> datetime | None:
    """The time to release the email, or None to send now (no `send_at`, or one already past)."""
    if request.send_at is None or request.send_at <= now:
        return None
    if request.send_at > now + timedelta(days=MAX_SCHEDULE_DAYS):
        raise InvalidRequest(
            f"send_at may be at most {MAX_SCHEDULE_DAYS} days ahead",
            errors=[{"pointer": "/send_at", "detail": f"at most {MAX_SCHEDULE_DAYS} days ahead"}],
        )
    return request.send_at


@dataclass
class TenantReads:
    """The tenant configuration one request reads, read once: the emails of a batch share their
    tenant's sending domains and servers (100 emails would otherwise make 200 reads)."""

    domains: dict[str, SendingDomain | None] = field(default_factory=dict)
    servers: list[SmtpServer] | None = None

    def domain(self, deps: SubmitDeps, tenant: Tenant, domain: str) -> SendingDomain | None:
        if domain not in self.domains:
            self.domains[domain] = deps.tenants.get_domain(tenant.tenant_id, domain)
        return self.domains[domain]

    def server_list(self, deps: SubmitDeps, tenant: Tenant) -> list[SmtpServer]:
        if self.servers is None:
            self.servers = deps.tenants.list_servers(tenant.tenant_id)
        return self.servers


def check_sender_domain(deps: SubmitDeps, tenant: Tenant, from_: str, reads: TenantReads | None = None) -> str:
    """The From domain, if the tenant has it and it may send: its SPF and DKIM verified (422 naming
    each required record that is not), unless the tenant allows unverified domains (testing)."""
    domain = parse_mailbox(from_).domain
    sending = (reads or TenantReads()).domain(deps, tenant, domain)
    if sending is None:
        raise InvalidRequest(
            f"the sender domain {domain!r} is not one of this tenant's sending domains",
            errors=[{"pointer": "/from", "detail": f"add {domain} as a sending domain first"}],
        )
    if not sending.sendable and not tenant.allow_unverified_domains:
        unverified = [r for r in sending.records if r.required and r.status not in ("verified", "warning")]
        details = [dnsauth.unverified_text(r) for r in unverified] or [f"verify {domain} first"]
        raise InvalidRequest(
            f"the sending domain {domain} is not verified",
            errors=[{"pointer": "/from", "detail": detail} for detail in details],
        )
    return domain


def check_pool(deps: SubmitDeps, tenant: Tenant, pool: Pool, reads: TenantReads | None = None) -> None:
    """Refuse an email that no server could relay: its pool has no enabled server of the tenant."""
    servers = (reads or TenantReads()).server_list(deps, tenant)
    if not any(server.pool == pool and server.enabled for server in servers):
        raise InvalidRequest(
            f"the pool {pool!r} has no enabled SMTP server for this tenant",
            errors=[{"pointer": "/pool", "detail": f"add or enable an SMTP server in the {pool} pool first"}],
        )


def attachment_parts(request: SendEmailRequest, uploaded: Mapping[str, AttachmentPart]) -> list[AttachmentPart]:
    """The email's attachments in request order: inline ones decoded, uploaded ones by id."""
    return [
        uploaded[a.attachment_id]
        if a.attachment_id is not None
        else AttachmentPart(a.filename or "", a.media_type, a.decoded())
        for a in request.attachments
    ]


def build_body(
    request: SendEmailRequest,
    *,
    email_id: str,
    from_domain: str,
    now: datetime,
    uploaded: Mapping[str, AttachmentPart] | None = None,
) -> bytes:
    """`uploaded`: the files of `attachment_id` references (`attachments.fetch_uploaded`)."""
    content = MessageContent(
        from_=request.from_,
        subject=request.subject,
        to=request.to,
        cc=request.cc,
        reply_to=request.reply_to,
        text=request.text,
        html=request.html,
        headers=request.headers,
        attachments=attachment_parts(request, uploaded or {}),
    )
    return build_mime(content, message_id=header_message_id(email_id, from_domain), date=now, email_id=email_id)


def check_size(tenant: Tenant, body: bytes) -> None:
    if len(body) > tenant.max_message_bytes:
        raise PayloadTooLarge(
            f"the message is {len(body)} bytes once encoded; this tenant allows {tenant.max_message_bytes}"
        )


def store_email(
    deps: SubmitDeps,
    tenant: Tenant,
    request: SendEmailRequest,
    *,
    email_id: str,
    from_domain: str,
    body: bytes,
    now: datetime,
    send_at: datetime | None,
    return_path_domain: str | None = None,
) -> tuple[EmailRecord, list[MessageRecord]]:
    """Store the email and its messages, each with its VERP envelope sender fixed now (on the sending
    domain's `return_path_domain`), so every attempt relays with it and a client can correlate on it."""
    body_key = None
    inline: bytes | None = body
    if len(body) > deps.inline_body_limit:
        body_key = f"bodies/{tenant.tenant_id}/{email_id}.eml"
        deps.blobs.put(body_key, body)
        inline = None
    recipients = tuple(
        Recipient(message_id=message_id(email_id, n), email=address, kind=kind)
        for n, (address, kind) in enumerate(request.recipients(), start=1)
    )
    email = EmailRecord(
        tenant_id=tenant.tenant_id,
        email_id=email_id,
        from_address=request.from_,
        subject=request.subject,
        header_message_id=header_message_id(email_id, from_domain),
        pool=request.pool,
        tags=request.tags,
        recipients=recipients,
        size=len(body),
        body_inline=inline,
        body_key=body_key,
        created_at=now,
    )
    status = MessageStatus.QUEUED if send_at is None else MessageStatus.SCHEDULED
    created = EventName.QUEUED if send_at is None else EventName.SCHEDULED
    messages = [
        MessageRecord(
            tenant_id=tenant.tenant_id,
            email_id=email_id,
            message_id=r.message_id,
            recipient=r.email,
            kind=r.kind,
            pool=request.pool,
            status=status,
            next_attempt_at=send_at,
            send_at=send_at,
            events=(Event(type=created, at=now, message_id=r.message_id, recipient=r.email),),
            return_path=verp.return_path(
                r.message_id, from_address=request.from_, return_path_domain=return_path_domain
            ),
            created_at=now,
            updated_at=now,
        )
        for r in recipients
    ]
    deps.messages.create_email(email, messages, retention_expiry(tenant, now, send_at, deps.retention_days))
    return email, messages


def retention_expiry(tenant: Tenant, now: datetime, send_at: datetime | None, retention_days: int) -> int:
    """When the email's records may go (their TTL, epoch seconds): `retention_days` after the last
    moment it may still be tried, its first due time (send_at, else now) plus the tenant's maximum
    age. A message scheduled weeks ahead is kept until well after its last retry."""
    last_try = (send_at or now) + timedelta(hours=tenant.max_age_hours)
    return int((last_try + timedelta(days=retention_days)).timestamp())


def schedule_release(deps: SubmitDeps, email: EmailRecord, send_at: datetime) -> bool:
    """The email's one `send_at` schedule, whose ReleaseJob queues every recipient still scheduled.
    False when the scheduler did not take it (one by that name existing already is success)."""
    job = ReleaseJob(tenant_id=email.tenant_id, email_id=email.email_id, pool=email.pool)
    try:
        deps.scheduler.schedule(release_schedule_name(email.email_id), send_at, job)
    except AlreadyExists:  # made already (a retried request): it releases this email all the same
        return True
    except Exception:
        return False
    return True


def enqueue(
    deps: SubmitDeps, email: EmailRecord, messages: list[MessageRecord], send_at: datetime | None
) -> dict[str, MessageStatus]:
    """Queue a job per message (10 per SendMessageBatch), or make the email's one release schedule
    when `send_at` is further ahead than a queue can delay. A message whose job could not be queued
    or scheduled is marked failed, never left waiting for a job that does not exist. (A crash before
    this step leaves messages with no job: the sweeper finds them by their due time.)"""
    now = deps.clock.now()
    delay = 0 if send_at is None else math.ceil((send_at - now).total_seconds())
    waiting = MessageStatus.QUEUED if send_at is None else MessageStatus.SCHEDULED
    if delay <= QUEUE_DELAY_LIMIT:
        refused = deps.queue.send_jobs(email.pool, [send_job(m) for m in messages], delay_seconds=max(delay, 0))
        not_queued = {job.message_id for job in refused}
    else:
        assert send_at is not None  # a positive delay means a send time
        scheduled = schedule_release(deps, email, send_at)
        not_queued = set() if scheduled else {m.message_id for m in messages}
    statuses: dict[str, MessageStatus] = {}
    for message in messages:
        statuses[message.message_id] = waiting
        if message.message_id in not_queued:
            statuses[message.message_id] = mark_not_queued(deps, message, waiting, now)
    return statuses


def mark_not_queued(deps: SubmitDeps, message: MessageRecord, waiting: MessageStatus, now: datetime) -> MessageStatus:
    """Record that the message's job was refused: `failed`/`enqueue-failed`. When even that cannot be
    written, the message keeps waiting, due, and the sweeper queues it: the status returned is the
    one stored either way, so the 202 never reports what the store does not hold."""
    try:
        deps.messages.transition(
            MessageKey.of(message),
            expected=[waiting],
            attempt=None,
            change=Transition(
                status=MessageStatus.FAILED,
                failure_reason="enqueue-failed",
                events=(
                    Event(
                        type=EventName.FAILED,
                        at=now,
                        message_id=message.message_id,
                        recipient=message.recipient,
                        detail="the send queue (or the scheduler) did not accept the job",
                    ),
                ),
            ),
            now=now,
        )
    except Exception:
        deps.log.exception("a refused job's message could not be marked failed; the sweeper will queue it")
        return waiting
    return MessageStatus.FAILED


def enqueue_or_leave_to_sweeper(
    deps: SubmitDeps, email: EmailRecord, messages: list[MessageRecord], send_at: datetime | None
) -> dict[str, MessageStatus]:
    """Once stored, an email is accepted: if enqueuing fails unexpectedly (not a refusal, which
    `enqueue` records), its messages keep waiting with no job, and the sweeper puts each on its queue
    when it is due. Reporting a failure here would invite a resubmission of what is already stored."""
    try:
        return enqueue(deps, email, messages, send_at)
    except Exception:
        deps.log.exception("enqueue failed after the email was stored; the sweeper will queue it")
        return {m.message_id: m.status for m in messages}


@dataclass(frozen=True)
class Accepted:
    """An email stored (accepted), its jobs not queued yet."""

    email: EmailRecord
    messages: list[MessageRecord]
    send_at: datetime | None

    def response(self, statuses: Mapping[str, MessageStatus]) -> SendEmailResponse:
        return SendEmailResponse(
            id=self.email.email_id,
            recipients=[
                RecipientStatus(id=m.message_id, email=m.recipient, status=statuses[m.message_id])
                for m in self.messages
            ],
        )


def accept_email(deps: SubmitDeps, tenant: Tenant, request: SendEmailRequest, reads: TenantReads) -> Accepted:
    """Check and store one email (every refusal is raised before anything is stored or counted)."""
    check_not_suspended(tenant)
    now = deps.clock.now()
    email_id = new_email_id(int(now.timestamp() * 1000))
    from_domain = check_sender_domain(deps, tenant, request.from_, reads)
    check_pool(deps, tenant, request.pool, reads)
    send_at = check_send_at(request, now)
    uploaded = attachments.fetch_uploaded(deps.blobs, tenant, request.attachments, now)
    body = build_body(request, email_id=email_id, from_domain=from_domain, now=now, uploaded=uploaded)
    check_size(tenant, body)
    sending = reads.domain(deps, tenant, from_domain)  # read by check_sender_domain already
    # Counted last, once nothing else can refuse the email; given back if it is not stored after all.
    counted = quotas.consume(deps.tenants, tenant, len(request.recipients()), now)
    try:
        email, messages = store_email(
            deps,
            tenant,
            request,
            email_id=email_id,
            from_domain=from_domain,
            body=body,
            now=now,
            send_at=send_at,
            return_path_domain=sending.return_path_domain if sending else None,
        )
    except BaseException:
        quotas.give_back(deps.tenants, counted)
        raise
    return Accepted(email, messages, send_at)


def submit_email(
    deps: SubmitDeps, tenant: Tenant, request: SendEmailRequest, reads: TenantReads | None = None
) -> SendEmailResponse:
    """Accept one email and queue its jobs."""
    accepted = accept_email(deps, tenant, request, reads or TenantReads())
    return accepted.response(enqueue_or_leave_to_sweeper(deps, accepted.email, accepted.messages, accepted.send_at))


def enqueue_together(deps: SubmitDeps, accepted: Sequence[Accepted]) -> list[dict[str, MessageStatus]]:
    """The jobs of several stored emails (a batch request's) queued together: those of one pool and one
    delay in one call, 10 per SendMessageBatch, rather than a call per email. An email scheduled further
    ahead than a queue can delay gets its release schedule (`enqueue`). What the queue refuses is marked
    as `enqueue` marks it; a call that fails unexpectedly leaves its messages to the sweeper. The
    statuses of each email, in order."""
    now = deps.clock.now()
    statuses: list[dict[str, MessageStatus]] = [{} for _ in accepted]
    groups: dict[tuple[Pool, int], list[tuple[int, MessageRecord]]] = {}
    for index, item in enumerate(accepted):
        delay = 0 if item.send_at is None else math.ceil((item.send_at - now).total_seconds())
        if delay > QUEUE_DELAY_LIMIT:
            statuses[index] = enqueue_or_leave_to_sweeper(deps, item.email, item.messages, item.send_at)
            continue
        groups.setdefault((item.email.pool, max(delay, 0)), []).extend((index, m) for m in item.messages)
    for (pool, delay), members in groups.items():
        waiting = MessageStatus.QUEUED if delay == 0 else MessageStatus.SCHEDULED
        try:
            refused = {job.message_id for job in deps.queue.send_jobs(pool, [send_job(m) for _, m in members], delay)}
        except Exception:
            deps.log.exception("enqueue failed after the emails were stored; the sweeper will queue them")
            for index, message in members:
                statuses[index][message.message_id] = message.status
            continue
        for index, message in members:
            status = waiting
            if message.message_id in refused:
                status = mark_not_queued(deps, message, waiting, now)
            statuses[index][message.message_id] = status
    return statuses
