"""Incoming mail through the API: pushing a raw message (`POST /v1/inbound/raw`) and reading what the
ingest worker stored (`GET /v1/inbound`, `GET /v1/inbound/{id}`).

A push takes the same path as mail read from a mailbox once it is in the bucket: the raw bytes go to
`resources.inbound_raw_key`, then one `IngestJob` onto the ingest queue. Its invariant: a 202 is given
only once both are done, and the id it names is derived from the tenant, the Message-ID and the bytes
(`models.inbound.inbound_id`), so a push retried after any failure (or the same bytes pushed twice, or
also polled) writes the same object and queues a job the worker stores once.
"""

from __future__ import annotations

from dataclasses import dataclass

from petrel import resources
from petrel.errors import InvalidRequest, NotFound
from petrel.ids import is_id
from petrel.mail.raw import header_block, raw_message_id
from petrel.models.api import (
    RAW_MESSAGE,
    InboundAccepted,
    InboundAttachmentView,
    InboundList,
    InboundReportView,
    InboundSummary,
    InboundView,
    RelatedView,
)
from petrel.models.inbound import INBOUND_ID_PREFIX, InboundContent, InboundKind, InboundRecord, IngestJob, inbound_id
from petrel.ports import BlobStore, Clock, InboundStore, IngestQueue, InvalidCursor
from petrel.services.query import MAX_PAGE, cursor_problem


@dataclass(frozen=True)
class InboundApiDeps:
    inbound: InboundStore
    blobs: BlobStore
    ingest: IngestQueue
    clock: Clock
    link_seconds: int  # how long an attachment's download link is valid


def check_raw(raw: bytes) -> None:
    """A 422 for a body that is no message: empty, or not starting with a header block."""
    if not raw:
        raise InvalidRequest(
            "the body is empty: send the raw message", errors=[{"pointer": "", "detail": "the raw message"}]
        )
    if header_block(raw) is None:
        detail = "a message starts with its header fields (RFC 5322), e.g. `From: ...`"
        raise InvalidRequest(f"the body is not an email message: {detail}", errors=[{"pointer": "", "detail": detail}])


def push_raw(deps: InboundApiDeps, tenant_id: str, raw: bytes) -> InboundAccepted:
    """Store the raw message and queue it for ingest; its id. What fails raises (nothing is claimed):
    the caller pushes again, and gets the same id."""
    check_raw(raw)
    found = inbound_id(tenant_id, raw_message_id(raw), raw)
    key = resources.inbound_raw_key(tenant_id, found)
    deps.blobs.put(key, raw, RAW_MESSAGE)
    job = IngestJob(tenant_id=tenant_id, inbound_id=found, raw_key=key, received_at=deps.clock.now(), source="push")
    deps.ingest.send_ingest(job)
    return InboundAccepted(id=found)


def list_inbound(
    deps: InboundApiDeps,
    tenant_id: str,
    *,
    kind: InboundKind | None,
    email_id: str | None,
    limit: int,
    cursor: str | None,
) -> InboundList:
    """A page of the tenant's incoming mail, newest first (of one kind, about one email, or both)."""
    errors: list[dict[str, str]] = []
    if not 1 <= limit <= MAX_PAGE:
        errors.append({"parameter": "limit", "detail": f"an integer from 1 to {MAX_PAGE}"})
    if email_id is not None and not is_id(email_id, "em"):
        errors.append({"parameter": "email_id", "detail": "an email id (`em_...`)"})
    if errors:
        raise InvalidRequest("the query is not valid: " + "; ".join(e["detail"] for e in errors), errors=errors)
    try:
        page = deps.inbound.list_inbound(tenant_id, kind=kind, email_id=email_id, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise cursor_problem(exc) from exc
    return InboundList(data=[summary(record) for record in page.records], next_cursor=page.cursor)


def get_inbound(deps: InboundApiDeps, tenant_id: str, some_id: str) -> InboundView:
    """One incoming message of this tenant with its content and a short-lived link to each attachment.
    Another tenant's id is indistinguishable from a missing one."""
    record = deps.inbound.get_inbound(tenant_id, some_id) if is_id(some_id, INBOUND_ID_PREFIX) else None
    if record is None:
        raise NotFound(f"no incoming message {some_id!r}")
    content = deps.inbound.get_content(tenant_id, some_id) or InboundContent()
    links = {
        a.id: deps.blobs.presign_get(a.key, expires_in=deps.link_seconds, filename=a.filename)
        for a in record.attachments
    }
    return InboundView(
        **summary(record, links).model_dump(by_alias=True),
        text=content.text,
        html=content.html,
        reply_text=content.reply_text,
    )


def summary(record: InboundRecord, links: dict[str, str] | None = None) -> InboundSummary:
    """The record as listed; `links`: a download URL per attachment id (none in listings)."""
    report = record.report
    return InboundSummary(
        id=record.inbound_id,
        kind=record.kind,
        received_at=record.received_at,
        source=record.source,
        mailbox=record.mailbox,
        from_=record.from_,
        to=list(record.to),
        subject=record.subject,
        message_id=record.message_id,
        in_reply_to=record.in_reply_to,
        size=record.size,
        attachments=[
            InboundAttachmentView(
                id=a.id,
                filename=a.filename,
                content_type=a.content_type,
                size=a.size,
                url=(links or {}).get(a.id),
            )
            for a in record.attachments
        ],
        report=InboundReportView(**report.model_dump()) if report is not None else None,
        related=RelatedView(**record.related.model_dump()) if record.related is not None else None,
        parse_error=record.parse_error,
    )
