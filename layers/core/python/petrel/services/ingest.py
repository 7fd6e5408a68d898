"""Ingest one incoming message: the raw bytes already in the bucket become an inbound record, and what
the message says (a delivery report, a complaint, an automatic or a human reply) is applied to the
Petrel message it is about.

The steps, each safe to run again after a crash at any point:

    load raw → parse → classify → correlate → store attachments → store the record (one transaction)
      → apply (status, events, suppression) → mark the record's outcome

Invariants (tests/unit/test_ingest.py breaks each on purpose):

- One record per incoming message: its id is derived from the tenant, its Message-ID and its bytes
  (models.inbound.inbound_id), so a second run, a second poll or a push of the same bytes finds it.
- Applying is idempotent: a status moves only by a conditional write from the state it expects; an
  event carries the record's own `received_at` as its time, so the same event is never added twice; a
  suppression keeps its first entry. A record without an `outcome` has not been applied yet, so a run
  that finds it applies again; one with an outcome is done.
- Statuses only move forward: `relayed → delivered` and `relayed → bounced` only. A report for a message
  in any other state is an event, never a status change (a late `failed` after `delivered` stays
  `delivered`), except a message still `sending`: its worker has not yet recorded the relay the report
  is about, so the job is retried later (RetryLater) until its last receive, then it is an event.
- Nothing is dropped: a report whose original cannot be found is stored with outcome `unmatched` and
  listed; mail that does not parse is stored raw with its parse error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from petrel import resources
from petrel.mail.inbound import ParsedInbound, parse_bytes, parse_inbound, read_inbound
from petrel.mail.reports import (
    AutoReply,
    Classification,
    Complaint,
    DeliveryReport,
    DeliveryReports,
    HumanReply,
    candidate_message_ids,
    classify,
    header_text,
    petrel_email_id,
    verp_message_id,
)
from petrel.mail.smtp_reply import HardFail, SmtpReply, Stage
from petrel.mail.smtp_reply import classify as classify_reply
from petrel.models.inbound import (
    InboundAttachment,
    InboundContent,
    InboundKind,
    InboundRecord,
    InboundReport,
    IngestJob,
    Related,
    raw_digest,
)
from petrel.models.records import Event, EventName, MessageRecord, MessageStatus, Reply, Suppression
from petrel.ports import AlreadyExists, EmailKey, MessageKey, RecordNotFound, Transition, WriteConflict

if TYPE_CHECKING:
    from email.message import Message

    from petrel.ports import BlobStore, Clock, InboundStore, MailboxStore, MessageStore, SuppressionStore


class RetryLater(Exception):
    """The report is ahead of the record it is about (the message is still `sending`): SQS brings the
    job back after its visibility timeout."""


# What applying a message did (the record's `outcome`).
DELIVERED = "delivered"
BOUNCED = "bounced"
EVENT = "event"  # an event on the message, its status unchanged
UNMATCHED = "unmatched"  # about a message Petrel cannot find: stored and listed only
RECEIVED = "received"  # other mail (inbound.received): nothing to apply
SUPPRESSED = "suppressed"  # a complaint: event and suppression


@dataclass(frozen=True)
class IngestDeps:
    inbound: InboundStore
    messages: MessageStore
    suppressions: SuppressionStore
    mailboxes: MailboxStore
    blobs: BlobStore
    clock: Clock
    retention_days: int = 30


@dataclass(frozen=True)
class Ingested:
    """One job's result: the record, what it was, and what applying it did."""

    record: InboundRecord
    outcome: str
    created: bool  # False when an earlier run (or another reader of the same bytes) stored it
    applied: tuple[str, ...] = field(default=())  # the message ids whose status or events changed


@dataclass(frozen=True)
class Target:
    """A Petrel message an incoming message is about, and the per-recipient report that names it."""

    key: MessageKey
    recipient: str
    report: DeliveryReport | None = None


def ingest(deps: IngestDeps, job: IngestJob, *, last_receive: bool = False) -> Ingested:
    """Run one ingest job (see the module's docstring for the steps and what holds after a crash)."""
    raw = deps.blobs.get(job.raw_key)
    message = _parse(raw)  # one parse, read for storing and for classifying
    parsed = read_inbound(message) if message is not None and raw.strip() else parse_inbound(raw)
    classification = classify(message) if message is not None else None
    targets = correlate(deps, job, message, classification, sender=parsed.from_)
    record, created = store(deps, job, raw, parsed, classification=classification, targets=targets)
    if record.outcome is not None:  # applied by an earlier run
        return Ingested(record, record.outcome, created)
    outcome, applied = apply(deps, record, classification, targets, last_receive=last_receive)
    deps.inbound.set_outcome(record.tenant_id, record.inbound_id, outcome)
    return Ingested(record.model_copy(update={"outcome": outcome}), outcome, created, applied)


def _parse(raw: bytes) -> Message | None:
    try:
        return parse_bytes(raw)
    except Exception:  # the record keeps the raw bytes and parse_inbound's error
        return None


# ------------------------------------------------------------------------------------------ correlate


def correlate(
    deps: IngestDeps,
    job: IngestJob,
    message: Message | None,
    classification: Classification | None,
    *,
    sender: str | None,
) -> list[Target]:
    """The Petrel messages this incoming message is about (several for a report on several
    recipients; none when it is about nothing Petrel sent, or nothing Petrel can find)."""
    tenant = job.tenant_id
    if job.local_message_id is not None:  # a local delivery names its message
        key = deps.messages.find_message_key(tenant, job.local_message_id)
        return [] if key is None else [Target(key, _recipient_of(deps, key))]
    if isinstance(classification, DeliveryReports):
        found = [_report_target(deps, tenant, report) for report in classification.reports]
        return [target for target in found if target is not None]
    if isinstance(classification, Complaint):
        key = _by_ids(deps, tenant, [classification.verp_message_id])
        key = key or _by_email(deps, tenant, classification.original_message_id, classification.complainant)
        return [] if key is None else [Target(key, classification.complainant or _recipient_of(deps, key))]
    if isinstance(classification, AutoReply | HumanReply) and message is not None:
        key = _by_ids(deps, tenant, [verp_message_id(header_text(message, name)) for name in _VERP_HEADERS])
        for candidate in candidate_message_ids(message):
            key = key or _by_email(deps, tenant, candidate, sender)  # the reply's From: the recipient
        return [] if key is None else [Target(key, _recipient_of(deps, key))]
    return []


# Where an automatic reply sent to the envelope sender (RFC 3834 §4) shows the VERP address.
_VERP_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To")


def _report_target(deps: IngestDeps, tenant: str, report: DeliveryReport) -> Target | None:
    key = _by_ids(deps, tenant, [report.verp_message_id, report.original_envelope_id])
    key = key or _by_email(deps, tenant, report.original_message_id, report.recipient)
    return None if key is None else Target(key, report.recipient or _recipient_of(deps, key), report)


def _by_ids(deps: IngestDeps, tenant: str, message_ids: Sequence[str | None]) -> MessageKey | None:
    """The first of `message_ids` (Petrel message ids: VERP, ENVID) that names one of the tenant's messages."""
    for message_id in message_ids:
        if message_id and message_id.startswith("msg_"):
            key = deps.messages.find_message_key(tenant, message_id)
            if key is not None:
                return key
    return None


def _by_email(deps: IngestDeps, tenant: str, header_message_id: str | None, recipient: str | None) -> MessageKey | None:
    """The message of the email whose Message-ID Petrel built, sent to `recipient` (or its only message,
    or its first `to` recipient's when the address matches none: a reply from a forwarded address)."""
    email_id = petrel_email_id(header_message_id)
    if email_id is None:
        return None
    found = deps.messages.get_email(EmailKey(tenant, email_id))
    if found is None or not found[1]:
        return None
    messages = found[1]
    wanted = (recipient or "").strip().lower()
    chosen = next((m for m in messages if m.recipient.lower() == wanted), None)
    chosen = chosen or (messages[0] if len(messages) == 1 else None)
    chosen = chosen or next((m for m in messages if m.kind == "to"), messages[0])
    return MessageKey.of(chosen)


def _recipient_of(deps: IngestDeps, key: MessageKey) -> str:
    message = deps.messages.get_message(key)
    return message.recipient if message is not None else ""


# ---------------------------------------------------------------------------------------------- store


def kind_of(classification: Classification | None) -> InboundKind:
    if isinstance(classification, DeliveryReports):
        return InboundKind.DELIVERY_REPORT
    if isinstance(classification, Complaint):
        return InboundKind.COMPLAINT
    if isinstance(classification, AutoReply):
        return InboundKind.AUTO_REPLY
    if isinstance(classification, HumanReply):
        return InboundKind.REPLY
    return InboundKind.MESSAGE


def store(
    deps: IngestDeps,
    job: IngestJob,
    raw: bytes,
    parsed: ParsedInbound,
    *,
    classification: Classification | None,
    targets: Sequence[Target],
) -> tuple[InboundRecord, bool]:
    """Store the attachments, then the record and its content in one transaction. (record, created):
    the stored record, and whether this run created it (False: it was there already)."""
    existing = deps.inbound.get_inbound(job.tenant_id, job.inbound_id)
    if existing is not None:
        return existing, False
    attachments = tuple(_store_attachments(deps, job, parsed))
    record = _record(deps, job, raw, parsed, classification=classification, targets=targets, attachments=attachments)
    content = InboundContent(
        headers=parsed.headers,
        text=parsed.text,
        html=parsed.html,
        reply_text=classification.text if isinstance(classification, HumanReply) else None,
    )
    expires_at = int((record.received_at + timedelta(days=deps.retention_days)).timestamp())
    try:
        deps.inbound.create_inbound(record, content, expires_at=expires_at)
    except AlreadyExists:  # another run stored it meanwhile: that one is the record
        stored = deps.inbound.get_inbound(job.tenant_id, job.inbound_id)
        if stored is None:
            raise
        return stored, False
    return record, True


def _store_attachments(deps: IngestDeps, job: IngestJob, parsed: ParsedInbound) -> list[InboundAttachment]:
    stored: list[InboundAttachment] = []
    for number, part in enumerate(parsed.attachments, start=1):
        attachment_id = f"att_{number}"
        key = resources.inbound_attachment_key(job.tenant_id, job.inbound_id, attachment_id)
        deps.blobs.put(key, part.payload, part.content_type)  # the same key on every run
        stored.append(
            InboundAttachment(
                id=attachment_id,
                filename=part.filename,
                content_type=part.content_type,
                size=part.size,
                disposition=part.disposition,
                content_id=part.content_id,
                key=key,
            )
        )
    return stored


def _record(
    deps: IngestDeps,
    job: IngestJob,
    raw: bytes,
    parsed: ParsedInbound,
    *,
    classification: Classification | None,
    targets: Sequence[Target],
    attachments: tuple[InboundAttachment, ...],
) -> InboundRecord:
    first = targets[0] if targets else None
    reports = classification.reports if isinstance(classification, DeliveryReports) else ()
    shown = (first.report if first is not None and first.report is not None else None) or (
        reports[0] if reports else None
    )
    return InboundRecord(
        tenant_id=job.tenant_id,
        inbound_id=job.inbound_id,
        kind=kind_of(classification),
        received_at=job.received_at,
        source=job.source,
        mailbox_id=job.mailbox_id,
        mailbox=_mailbox_name(deps, job),
        **{"from": _cap(parsed.from_)},
        to=tuple(_cap(address) or "" for address in parsed.to[:MAX_LISTED_RECIPIENTS]),
        subject=_cap(parsed.subject),
        message_id=_cap(parsed.message_id),
        in_reply_to=_cap(parsed.in_reply_to),
        raw_key=job.raw_key,
        size=len(raw),
        digest=raw_digest(raw),
        parse_error=parsed.parse_error,
        report=None if shown is None else _shown_report(shown),
        reports=len(reports),
        related=None if first is None else Related(email_id=first.key.email_id, message_id=first.key.message_id),
        attachments=attachments,
    )


# The record item holds what listing shows; it must stay far below DynamoDB's 400 KB whatever the
# headers say (the whole header block is in the content item, and the raw message in the bucket).
MAX_LISTED_RECIPIENTS = 50
MAX_FIELD = 998  # RFC 5322's line limit


def _cap(value: str | None) -> str | None:
    return None if value is None else value[:MAX_FIELD]


def _mailbox_name(deps: IngestDeps, job: IngestJob) -> str | None:
    if job.mailbox_id is None:
        return None
    mailbox = deps.mailboxes.get_mailbox(job.tenant_id, job.mailbox_id)
    name = mailbox.address if mailbox is not None else job.mailbox_id
    return f"{name}/{job.folder}" if job.folder and job.folder != "INBOX" else name


def _shown_report(report: DeliveryReport) -> InboundReport:
    return InboundReport(
        action=str(report.action),
        status=report.status,
        diagnostic_code=report.diagnostic,
        remote_mta=report.remote_mta,
        final_recipient=report.recipient,
        original_envelope_id=report.original_envelope_id,
        original_message_id=report.original_message_id,
    )


# ---------------------------------------------------------------------------------------------- apply


def apply(
    deps: IngestDeps,
    record: InboundRecord,
    classification: Classification | None,
    targets: Sequence[Target],
    *,
    last_receive: bool = False,
) -> tuple[str, tuple[str, ...]]:
    """Apply what the message says to the messages it is about; (outcome, message ids changed)."""
    if record.source == "local":  # the worker recorded the delivery itself
        return RECEIVED, ()
    if not targets:
        return (RECEIVED if record.kind is InboundKind.MESSAGE else UNMATCHED), ()
    at = record.received_at
    detail = f"inbound {record.inbound_id}"
    outcomes: list[str] = []
    for target in targets:
        if isinstance(classification, DeliveryReports) and target.report is not None:
            outcomes.append(_apply_report(deps, target, target.report, at, detail, last_receive=last_receive))
        elif isinstance(classification, Complaint):
            _events(deps, target, EventName.COMPLAINED, at, f"{detail}: {classification.feedback_type}")
            _suppress(deps, target, "complaint", f"{classification.feedback_type} report ({detail})", at)
            outcomes.append(SUPPRESSED)
        elif isinstance(classification, AutoReply):
            _events(deps, target, EventName.AUTO_REPLIED, at, f"{detail}: {classification.reason}")
            outcomes.append(EVENT)
        elif isinstance(classification, HumanReply):
            _events(deps, target, EventName.REPLIED, at, detail)
            outcomes.append(EVENT)
    return _summary(outcomes), tuple(target.key.message_id for target in targets)


def _summary(outcomes: Sequence[str]) -> str:
    for outcome in (BOUNCED, DELIVERED, SUPPRESSED, EVENT):
        if outcome in outcomes:
            return outcome
    return UNMATCHED


def _apply_report(
    deps: IngestDeps, target: Target, report: DeliveryReport, at: datetime, detail: str, *, last_receive: bool
) -> str:
    """One recipient's report: delivered/relayed/expanded → `delivered`; failed → `bounced`; delayed → an
    `email.deferred` event. Only from `relayed`; otherwise the report is an event."""
    action = str(report.action)
    smtp = _smtp_reply(report)
    reply = _report_reply(report, smtp)
    if action == "delayed":
        _events(deps, target, EventName.DEFERRED, at, f"{detail}: delayed", reply=reply)
        return EVENT
    if action == "failed":
        outcome = classify_reply(smtp)
        bounce_class = outcome.bounce_class if isinstance(outcome, HardFail) else "hard"
        event = _event(target, EventName.BOUNCED, at, f"{detail}: {bounce_class}", reply)
        change = Transition(MessageStatus.BOUNCED, (event,), reply=reply, bounce_class=str(bounce_class))
        moved = _move(deps, target, change, at, last_receive=last_receive)
        if isinstance(outcome, HardFail) and outcome.suppress:  # as for a bounce at the relay
            _suppress(deps, target, "hard-bounce", _reply_line(smtp), at)
        return BOUNCED if moved else EVENT
    # delivered, relayed (to a system that sends no reports) or expanded (to a list): it arrived
    event = _event(target, EventName.DELIVERED, at, f"{detail}: {action}", reply)
    moved = _move(
        deps, target, Transition(MessageStatus.DELIVERED, (event,), reply=reply), at, last_receive=last_receive
    )
    return DELIVERED if moved else EVENT


def _move(deps: IngestDeps, target: Target, change: Transition, at: datetime, *, last_receive: bool) -> bool:
    """`relayed` → the report's status, with its event. When the message is elsewhere: `sending` is
    retried later (until the job's last receive); any other state gets the event alone. True when the
    status moved (now or by an earlier run of the same job)."""
    try:
        deps.messages.transition(
            target.key, expected=[MessageStatus.RELAYED], attempt=None, change=change, now=deps.clock.now()
        )
        return True
    except RecordNotFound:
        return False
    except WriteConflict:
        pass
    current = deps.messages.get_message(target.key)
    if current is None:
        return False
    if current.status is MessageStatus.SENDING and not last_receive:
        raise RetryLater(f"{target.key.message_id} is still sending")
    deps.messages.record_events(target.key, change.events, now=deps.clock.now())
    return current.status is change.status and _has(current, change.events)


def _has(message: MessageRecord, events: Sequence[Event]) -> bool:
    return all(any(_same(event, have) for have in message.events) for event in events)


def _same(a: Event, b: Event) -> bool:
    return a.type == b.type and a.at == b.at and a.detail == b.detail


def _events(
    deps: IngestDeps, target: Target, kind: EventName, at: datetime, detail: str, *, reply: Reply | None = None
) -> None:
    with contextlib.suppress(RecordNotFound):  # deleted meanwhile (retention): nothing to add to
        deps.messages.record_events(target.key, (_event(target, kind, at, detail, reply),), now=deps.clock.now())


def _event(target: Target, kind: EventName, at: datetime, detail: str, reply: Reply | None) -> Event:
    return Event(
        type=kind, at=at, message_id=target.key.message_id, recipient=target.recipient, reply=reply, detail=detail
    )


def _suppress(deps: IngestDeps, target: Target, reason: str, detail: str, at: datetime) -> None:
    address = target.recipient.strip().lower()
    if not address:
        return
    suppression = Suppression(
        tenant_id=target.key.tenant_id,
        email=address,
        reason=reason,
        detail=detail[:500],
        message_id=target.key.message_id,
        created_at=at,
    )
    with contextlib.suppress(AlreadyExists):  # the first entry for an address is kept
        deps.suppressions.add(suppression)


def _smtp_reply(report: DeliveryReport) -> SmtpReply:
    """The report as the reply classification reads it: the remote server's code when the diagnostic
    has one (else the status's class: 2.x.x → 250, 4.x.x → 450, 5.x.x → 550), and the report's Status
    as the enhanced code, which DESIGN §2's table reads first."""
    status_class = report.status[:1] if report.status[:1] in ("2", "4", "5") else "5"
    code = (
        report.smtp_code
        if report.smtp_code and str(report.smtp_code)[0] == status_class
        else int(status_class) * 100 + 50
    )
    text = " ".join((report.diagnostic or report.status).split())[:500]
    enhanced = report.status if report.status[:1] == status_class and report.status.count(".") == 2 else None
    return SmtpReply(code=code, text=text, stage=Stage.RCPT, enhanced=enhanced)


def _reply_line(reply: SmtpReply) -> str:
    """The reply as one line, its code once (a report's diagnostic usually starts with the code)."""
    return reply.text if reply.text.startswith(str(reply.code)) else f"{reply.code} {reply.text}"


def _report_reply(report: DeliveryReport, smtp: SmtpReply) -> Reply:
    """The report as the message stores it (`last_reply`, and its events' reply): `smtp` is
    `_smtp_reply(report)`."""
    return Reply(code=smtp.code, enhanced=report.status or smtp.enhanced, text=smtp.text, stage="dsn")
