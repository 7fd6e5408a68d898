"""Reading emails and messages back: status per recipient, attempts, the events timeline."""

from __future__ import annotations

from petrel.errors import InvalidRequest, NotFound
from petrel.ids import is_id
from petrel.models.api import EmailView, MessageList, MessageSummary, MessageView
from petrel.models.records import MessageRecord, MessageStatus
from petrel.ports import EmailKey, InvalidCursor, MessageStore

MAX_PAGE = 100
DEFAULT_PAGE = 20


def _message_view(message: MessageRecord) -> MessageView:
    return MessageView(
        id=message.message_id,
        email_id=message.email_id,
        email=message.recipient,
        kind=message.kind,
        status=message.status,
        # Attempts logged, and the one in flight: a lease that attempted nothing (a suspended tenant's
        # hold, a suppressed recipient) is not an attempt.
        attempts=len(message.attempts) + (1 if message.status is MessageStatus.SENDING else 0),
        bounce_class=message.bounce_class,
        failure_reason=message.failure_reason,
        last_reply=message.last_reply,
        next_attempt_at=message.next_attempt_at,
        attempt_log=list(message.attempts),
        return_path=message.return_path,
        updated_at=message.updated_at,
    )


def _email_key(store: MessageStore, tenant_id: str, some_id: str) -> EmailKey | None:
    """The key of the email `some_id` names: an email id itself, or a message id (found through the store)."""
    if is_id(some_id, "em"):
        return EmailKey(tenant_id, some_id)
    if is_id(some_id, "msg"):
        found = store.find_message_key(tenant_id, some_id)
        return found.email if found is not None else None
    return None


def get_email(store: MessageStore, tenant_id: str, some_id: str) -> EmailView:
    """One email of this tenant, by its id or by one of its messages' ids. Another tenant's id is
    indistinguishable from a missing one."""
    key = _email_key(store, tenant_id, some_id)
    found = store.get_email(key) if key is not None else None
    if found is None:
        raise NotFound(f"no email {some_id!r}")
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


def get_message(store: MessageStore, tenant_id: str, message_id: str) -> MessageView:
    """One message (one recipient's copy) of this tenant."""
    key = store.find_message_key(tenant_id, message_id) if is_id(message_id, "msg") else None
    found = store.get_message(key) if key is not None else None
    if found is None:
        raise NotFound(f"no message {message_id!r}")
    return _message_view(found)


def list_messages(
    store: MessageStore, tenant_id: str, *, status: str | None, limit: int, cursor: str | None
) -> MessageList:
    errors: list[dict[str, str]] = []
    if not 1 <= limit <= MAX_PAGE:
        errors.append({"parameter": "limit", "detail": f"an integer from 1 to {MAX_PAGE}"})
    try:
        wanted = MessageStatus(status) if status else None
    except ValueError:
        wanted = None
        errors.append({"parameter": "status", "detail": "one of: " + ", ".join(s.value for s in MessageStatus)})
    if errors:
        raise InvalidRequest("the query is not valid: " + "; ".join(e["detail"] for e in errors), errors=errors)
    try:
        page = store.list_messages(tenant_id, status=wanted, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise cursor_problem(exc) from exc
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


def cursor_problem(exc: InvalidCursor) -> InvalidRequest:
    """The 422 for a cursor the store did not hand out, naming the `cursor` query parameter."""
    detail = str(exc)
    return InvalidRequest(detail, errors=[{"parameter": "cursor", "detail": detail}])
