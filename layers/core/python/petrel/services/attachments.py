"""Attachments uploaded before the email: declared (`create_attachment`), PUT by the client straight to
the bodies bucket through a short-lived pre-signed URL, then read back when an email references them
(`fetch_uploaded`), so that no request body has to carry a large file.

Keys are tenant-scoped (`attachments/<tenant>/<id>`, and its declaration at `<key>.json`): an id of
another tenant names nothing here. Uploads expire by the bucket's lifecycle rule; an upload older
than `ATTACHMENT_RETENTION_DAYS` is refused here even if S3 has not removed it yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from petrel.errors import InvalidRequest, PayloadTooLarge
from petrel.ids import new_id
from petrel.mail.mime import AttachmentPart
from petrel.models.api import Attachment
from petrel.models.attachments import AttachmentUpload, CreateAttachmentRequest, StoredAttachment
from petrel.models.records import Tenant
from petrel.ports import BlobStore, Clock
from petrel.resources import ATTACHMENT_RETENTION_DAYS, ATTACHMENTS_PREFIX
from petrel.services.suspension import check_not_suspended

UPLOAD_URL_SECONDS = 15 * 60  # how long the pre-signed upload URL works


@dataclass(frozen=True)
class AttachmentDeps:
    blobs: BlobStore
    clock: Clock
    upload_url_seconds: int = UPLOAD_URL_SECONDS


def upload_key(tenant_id: str, attachment_id: str) -> str:
    return f"{ATTACHMENTS_PREFIX}{tenant_id}/{attachment_id}"


def _declaration_key(tenant_id: str, attachment_id: str) -> str:
    return upload_key(tenant_id, attachment_id) + ".json"


def encoded_size(size: int) -> int:
    """The bytes a file of `size` bytes takes in a message: base64, in lines of 76 characters + CRLF."""
    chars = 4 * math.ceil(size / 3)
    return chars + 2 * math.ceil(chars / 76)


def _too_large(what: str, encoded: int, tenant: Tenant) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} takes {encoded} bytes once base64-encoded in the message; "
        f"this tenant's messages may be at most {tenant.max_message_bytes} bytes"
    )


def create_attachment(deps: AttachmentDeps, tenant: Tenant, request: CreateAttachmentRequest) -> AttachmentUpload:
    """Declare a file and get the URL to upload it to. Nothing is uploaded by Petrel itself. A suspended
    tenant declares nothing (403, as its sends): an upload is the first step of a send."""
    check_not_suspended(tenant)
    encoded = encoded_size(request.size)
    if encoded > tenant.max_message_bytes:
        raise _too_large(f"a file of {request.size} bytes", encoded, tenant)
    now = deps.clock.now()
    attachment_id = new_id("att", int(now.timestamp() * 1000))
    stored = StoredAttachment(
        tenant_id=tenant.tenant_id,
        attachment_id=attachment_id,
        filename=request.filename,
        content_type=request.content_type,
        size=request.size,
        created_at=now,
        expires_at=now + timedelta(days=ATTACHMENT_RETENTION_DAYS),
    )
    deps.blobs.put(
        _declaration_key(tenant.tenant_id, attachment_id), stored.model_dump_json().encode(), "application/json"
    )
    url = deps.blobs.presign_put(
        upload_key(tenant.tenant_id, attachment_id),
        content_type=request.content_type,
        size=request.size,
        expires_in=deps.upload_url_seconds,
    )
    return AttachmentUpload(
        id=attachment_id,
        filename=request.filename,
        content_type=request.content_type,
        size=request.size,
        upload_url=url,
        upload_headers={"Content-Type": request.content_type},
        upload_expires_at=now + timedelta(seconds=deps.upload_url_seconds),
        expires_at=stored.expires_at,
    )


def _declared(blobs: BlobStore, tenant_id: str, attachment_id: str) -> StoredAttachment | None:
    key = _declaration_key(tenant_id, attachment_id)
    if blobs.size(key) is None:
        return None
    stored = StoredAttachment.model_validate_json(blobs.get(key))
    return stored if stored.tenant_id == tenant_id else None


def _check_uploaded(blobs: BlobStore, tenant_id: str, attachment_id: str, now: datetime) -> StoredAttachment | str:
    """The declaration of an upload ready to use, or why it is not."""
    stored = _declared(blobs, tenant_id, attachment_id)
    if stored is None:
        return f"no attachment {attachment_id} (create it with POST /v1/attachments)"
    if now >= stored.expires_at:
        return f"attachment {attachment_id} expired at {stored.expires_at.isoformat()}; upload it again"
    size = blobs.size(upload_key(tenant_id, attachment_id))
    if size is None:
        return f"attachment {attachment_id} ({stored.filename}) was not uploaded: PUT it to its upload_url first"
    if size != stored.size:
        return f"attachment {attachment_id} ({stored.filename}) is {size} bytes, but {stored.size} were declared"
    return stored


def fetch_uploaded(
    blobs: BlobStore, tenant: Tenant, attachments: Sequence[Attachment], now: datetime
) -> dict[str, AttachmentPart]:
    """The uploaded files an email references, by attachment id. Each must exist for this tenant,
    be unexpired and be exactly as long as declared (422 naming each that is not); together, once
    encoded, they must fit the tenant's message size (413) before any of them is downloaded."""
    errors: list[dict[str, str]] = []
    ready: dict[str, StoredAttachment] = {}
    for index, attachment in enumerate(attachments):
        attachment_id = attachment.attachment_id
        if attachment_id is None or attachment_id in ready:
            continue
        checked = _check_uploaded(blobs, tenant.tenant_id, attachment_id, now)
        if isinstance(checked, str):
            errors.append({"pointer": f"/attachments/{index}/attachment_id", "detail": checked})
        else:
            ready[attachment_id] = checked
    if errors:
        raise InvalidRequest("; ".join(error["detail"] for error in errors), errors=errors)
    encoded = sum(encoded_size(stored.size) for stored in ready.values())
    if encoded > tenant.max_message_bytes:
        raise _too_large("the uploaded attachments", encoded, tenant)
    parts: dict[str, AttachmentPart] = {}
    for attachment_id, stored in ready.items():
        data = blobs.get(upload_key(tenant.tenant_id, attachment_id))
        if len(data) != stored.size:  # replaced since it was checked
            raise InvalidRequest(
                f"attachment {attachment_id} changed while it was read; upload it again",
                errors=[{"pointer": "/attachments", "detail": f"attachment {attachment_id} changed"}],
            )
        parts[attachment_id] = AttachmentPart(stored.filename, stored.content_type, data)
    return parts
