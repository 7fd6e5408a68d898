"""Builders for stored records with sensible defaults (ids in Petrel's own format)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from petrel.ids import message_id, new_email_id, new_id
from petrel.mail import verp
from petrel.models.records import (
    DomainStatus,
    EmailRecord,
    Event,
    EventName,
    MessageRecord,
    MessageStatus,
    Pool,
    Recipient,
    RecipientKind,
    SendingDomain,
    SmtpServer,
    Tenant,
)
from tests.fakes.clock import DEFAULT_START


def tenant(name: str = "Acme", *, at: datetime = DEFAULT_START, **fields: Any) -> Tenant:
    return Tenant(tenant_id=fields.pop("tenant_id", new_id("tn")), name=name, created_at=at, **fields)


def domain(
    tenant_id: str, name: str = "example.com", *, return_path: str | None = None, **fields: Any
) -> SendingDomain:
    """A sending domain that may send (verified) and that Petrel does not sign (no keys), unless told."""
    values: dict[str, Any] = {"status": DomainStatus.VERIFIED}
    values.update(fields)
    return SendingDomain(
        tenant_id=tenant_id, domain=name, return_path_domain=return_path or name, created_at=DEFAULT_START, **values
    )


def server(tenant_id: str, **fields: Any) -> SmtpServer:
    server_id = fields.pop("server_id", new_id("srv"))
    values: dict[str, Any] = {
        "host": "mail.example.com",
        "port": 587,
        "username": "relay@example.com",
        "secret_name": f"petrel-test/tenants/{tenant_id}/smtp/{server_id}",
        "created_at": DEFAULT_START,
    }
    values.update(fields)
    return SmtpServer(tenant_id=tenant_id, server_id=server_id, **values)


def email(
    tenant_id: str,
    recipients: Sequence[str | tuple[str, RecipientKind]] = ("rcpt@example.org",),
    *,
    at: datetime = DEFAULT_START,
    pool: Pool = "transactional",
    status: MessageStatus = MessageStatus.QUEUED,
    body: bytes = b"Subject: hi\r\n\r\nhello\r\n",
    body_key: str | None = None,
    from_address: str = "sender@example.com",
    legacy_ids: bool = False,
    return_path: bool = True,
) -> tuple[EmailRecord, list[MessageRecord]]:
    """An email and its messages, as submit would store them (queued, with an `email.queued` event, a
    VERP return path on the From domain). `legacy_ids`: random message ids, as made before they derived
    from the email's (petrel.ids); `return_path=False`: none, as on records made before it was stored."""
    email_id = new_email_id(int(at.timestamp() * 1000))
    people = [(r, "to") if isinstance(r, str) else r for r in recipients]
    recips = tuple(
        Recipient(message_id=new_id("msg") if legacy_ids else message_id(email_id, n), email=address, kind=kind)
        for n, (address, kind) in enumerate(people, start=1)
    )
    record = EmailRecord(
        tenant_id=tenant_id,
        email_id=email_id,
        from_address=from_address,
        subject="hi",
        header_message_id=f"<{email_id.lower()}@example.com>",
        pool=pool,
        recipients=recips,
        size=len(body),
        body_inline=None if body_key else body,
        body_key=body_key,
        created_at=at,
    )
    messages = [
        MessageRecord(
            tenant_id=tenant_id,
            email_id=email_id,
            message_id=r.message_id,
            recipient=r.email,
            kind=r.kind,
            pool=pool,
            status=status,
            events=(Event(type=EventName.QUEUED, at=at, message_id=r.message_id, recipient=r.email),),
            return_path=(
                verp.return_path(r.message_id, from_address=from_address, return_path_domain=None)
                if return_path
                else None
            ),
            created_at=at,
            updated_at=at,
        )
        for r in recips
    ]
    return record, messages
