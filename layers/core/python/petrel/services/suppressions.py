"""A tenant's suppression list: addresses Petrel will not send to (checked before every send)."""

from __future__ import annotations

from urllib.parse import unquote

from petrel.errors import Conflict, InvalidRequest, NotFound
from petrel.mail.addresses import AddressError, parse_mailbox
from petrel.models.api import SuppressionList, SuppressionRequest, SuppressionView
from petrel.models.records import Suppression
from petrel.ports import AlreadyExists, Clock, InvalidCursor, RecordNotFound, SuppressionStore
from petrel.services.query import cursor_problem

MAX_PAGE = 100


def _view(item: Suppression) -> SuppressionView:
    return SuppressionView(
        email=item.email, reason=item.reason, detail=item.detail, message_id=item.message_id, created_at=item.created_at
    )


def normalise(raw: str) -> str:
    """The address as stored: its addr-spec, lower-cased (a path segment may arrive %-encoded)."""
    try:
        return parse_mailbox(unquote(raw)).address.lower()
    except AddressError as exc:
        raise InvalidRequest(
            f"{raw!r} is not an email address: {exc}", errors=[{"parameter": "email", "detail": str(exc)}]
        ) from exc


def add(store: SuppressionStore, clock: Clock, tenant_id: str, request: SuppressionRequest) -> SuppressionView:
    item = Suppression(
        tenant_id=tenant_id,
        email=normalise(request.email),
        reason=request.reason,
        detail=request.note,
        created_at=clock.now(),
    )
    try:
        store.add(item)
    except AlreadyExists as exc:
        raise Conflict(f"{item.email} is on the suppression list already") from exc
    return _view(item)


def get(store: SuppressionStore, tenant_id: str, raw_email: str) -> SuppressionView:
    found = store.get(tenant_id, normalise(raw_email))
    if found is None:
        raise NotFound(f"{raw_email!r} is not on the suppression list")
    return _view(found)


def remove(store: SuppressionStore, tenant_id: str, raw_email: str) -> None:
    try:
        store.remove(tenant_id, normalise(raw_email))
    except RecordNotFound as exc:
        raise NotFound(f"{raw_email!r} is not on the suppression list") from exc


def list_page(store: SuppressionStore, tenant_id: str, *, limit: int, cursor: str | None) -> SuppressionList:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(
            f"limit must be between 1 and {MAX_PAGE}",
            errors=[{"parameter": "limit", "detail": f"an integer from 1 to {MAX_PAGE}"}],
        )
    try:
        page = store.list(tenant_id, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise cursor_problem(exc) from exc
    return SuppressionList(data=[_view(s) for s in page.suppressions], next_cursor=page.cursor)
