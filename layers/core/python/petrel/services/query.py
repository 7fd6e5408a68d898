"""Reading emails and messages back: status per recipient, attempts, the events timeline."""

from __future__ import annotations

from petrel.errors import InvalidRequest, NotFound
from petrel.ids import is_id
from petrel.models.api import EmailView, MessageList, MessageSummary, MessageView
from petrel.models.records import MessageRecord, MessageStatus
from petrel.ports import MessageStore

MAX_PAGE = 100


def _message_view(message: MessageRecord) -> MessageView:
    return MessageView(
        id=message.message_id,
        email=message.recipient,
        kind=message.kind,
        status=message.status,
        attempts=message.attempt,
        bounce_class=message.bounce_class,
        failure_reason=message.failure_reason,
        last_reply=message.last_reply,
        next_attempt_at=message.next_attempt_at,
        attempt_log=list(message.attempts),
        updated_at=message.updated_at,
    )


def get_email(store: MessageStore, tenant_id: str, email_id: str) -> EmailView:
    """One email of this tenant. Another tenant's id is indistinguishable from a missing one."""
    found = store.get_email(tenant_id, email_id) if is_id(email_id, "em") else None
    if found is None:
        raise NotFound(f"no email {email_id!r}")
    email, messages = found
    order = {r.message_id: i for i, r in enumerate(email.recipients)}
    messages.sort(key=lambda m: order.get(m.message_id, len(order)))
    events = sorted((e for m in messages for e in m.events), key=lambda e: e.at)
    return EmailView(
        id=email.email_id,
        from_=email.from_address,
        subject=email.subject,
        message_id_header=email.header_message_id,
        pool=email.pool,
        tags=email.tags,
        size=email.size,
        created_at=email.created_at,
        recipients=[_message_view(m) for m in messages],
        events=events,
    )


def list_messages(
    store: MessageStore, tenant_id: str, *, status: str | None, limit: int, cursor: str | None
) -> MessageList:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    try:
        wanted = MessageStatus(status) if status else None
    except ValueError as exc:
        allowed = ", ".join(s.value for s in MessageStatus)
        raise InvalidRequest(f"status must be one of: {allowed}") from exc
    page = store.list_messages(tenant_id, status=wanted, limit=limit, cursor=cursor)
    return MessageList(
        data=[
            MessageSummary(
                id=m.message_id,
                email_id=m.email_id,
                email=m.recipient,
                status=m.status,
                created_at=m.created_at,
                updated_at=m.updated_at,
            )
            for m in page.messages
        ],
        next_cursor=page.cursor,
    )
