"""Accepting an email: check the sender's domain, build the MIME once, store, enqueue.

Each step is a named function so that the pipeline reads top to bottom in `submit_email`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from petrel.errors import InvalidRequest, PayloadTooLarge
from petrel.ids import new_id
from petrel.mail.addresses import parse_mailbox
from petrel.mail.mime import AttachmentPart, MessageContent, build_mime, header_message_id
from petrel.models.api import RecipientStatus, SendEmailRequest, SendEmailResponse
from petrel.models.jobs import SendJob
from petrel.models.records import EmailRecord, Event, MessageRecord, MessageStatus, Recipient, Tenant
from petrel.ports import BlobStore, Clock, JobQueue, MessageStore, TenantStore, Transition


@dataclass(frozen=True)
class SubmitDeps:
    tenants: TenantStore
    messages: MessageStore
    blobs: BlobStore
    queue: JobQueue
    clock: Clock
    retention_days: int
    inline_body_limit: int


def check_sender_domain(deps: SubmitDeps, tenant: Tenant, from_: str) -> str:
    domain = parse_mailbox(from_).domain
    if deps.tenants.get_domain(tenant.tenant_id, domain) is None:
        raise InvalidRequest(
            f"the sender domain {domain!r} is not one of this tenant's sending domains",
            errors=[{"pointer": "/from", "detail": f"add {domain} as a sending domain first"}],
        )
    return domain


def build_body(request: SendEmailRequest, *, email_id: str, from_domain: str, now: datetime) -> bytes:
    content = MessageContent(
        from_=request.from_,
        subject=request.subject,
        to=request.to,
        cc=request.cc,
        reply_to=request.reply_to,
        text=request.text,
        html=request.html,
        headers=request.headers,
        attachments=[AttachmentPart(a.filename, a.content_type, a.decoded()) for a in request.attachments],
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
) -> tuple[EmailRecord, list[MessageRecord]]:
    body_key = None
    inline: bytes | None = body
    if len(body) > deps.inline_body_limit:
        body_key = f"bodies/{tenant.tenant_id}/{email_id}.eml"
        deps.blobs.put(body_key, body)
        inline = None
    recipients = tuple(
        Recipient(message_id=new_id("msg"), email=address, kind=kind) for address, kind in request.recipients()
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
    messages = [
        MessageRecord(
            tenant_id=tenant.tenant_id,
            email_id=email_id,
            message_id=r.message_id,
            recipient=r.email,
            kind=r.kind,
            pool=request.pool,
            status=MessageStatus.QUEUED,
            events=(Event(type="email.queued", at=now, message_id=r.message_id, recipient=r.email),),
            created_at=now,
            updated_at=now,
        )
        for r in recipients
    ]
    expires_at = int((now + timedelta(days=deps.retention_days)).timestamp())
    deps.messages.create_email(email, messages, expires_at)
    return email, messages


def enqueue(deps: SubmitDeps, email: EmailRecord, messages: list[MessageRecord]) -> dict[str, MessageStatus]:
    """Queue a job per message. A message whose job cannot be queued is marked failed, never left queued."""
    jobs = [SendJob(tenant_id=m.tenant_id, email_id=m.email_id, message_id=m.message_id) for m in messages]
    not_queued = {job.message_id for job in deps.queue.send_jobs(email.pool, jobs)}
    statuses: dict[str, MessageStatus] = {}
    now = deps.clock.now()
    for message in messages:
        if message.message_id not in not_queued:
            statuses[message.message_id] = MessageStatus.QUEUED
            continue
        deps.messages.transition(
            message.tenant_id,
            message.email_id,
            message.message_id,
            expected=[MessageStatus.QUEUED],
            attempt=None,
            change=Transition(
                status=MessageStatus.FAILED,
                failure_reason="enqueue-failed",
                events=(
                    Event(
                        type="email.failed",
                        at=now,
                        message_id=message.message_id,
                        recipient=message.recipient,
                        detail="the send queue did not accept the job",
                    ),
                ),
            ),
            now=now,
        )
        statuses[message.message_id] = MessageStatus.FAILED
    return statuses


def submit_email(deps: SubmitDeps, tenant: Tenant, request: SendEmailRequest) -> SendEmailResponse:
    now = deps.clock.now()
    email_id = new_id("em", int(now.timestamp() * 1000))
    from_domain = check_sender_domain(deps, tenant, request.from_)
    body = build_body(request, email_id=email_id, from_domain=from_domain, now=now)
    check_size(tenant, body)
    email, messages = store_email(deps, tenant, request, email_id=email_id, from_domain=from_domain, body=body, now=now)
    statuses = enqueue(deps, email, messages)
    return SendEmailResponse(
        id=email_id,
        recipients=[
            RecipientStatus(id=m.message_id, email=m.recipient, status=statuses[m.message_id]) for m in messages
        ],
    )
