"""What the ingest side stores: incoming mail (read from a tenant's mailbox, pushed raw, or delivered
locally), its content and attachments, and what it was classified as; and the ingest queue's jobs."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from petrel.ids import encode
from petrel.models.records import Record

INBOUND_ID_PREFIX = "in"


class InboundKind(StrEnum):
    DELIVERY_REPORT = "delivery_report"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"
    REPLY = "reply"
    MESSAGE = "message"


class InboundAttachment(Record):
    """An attachment of an incoming message; its bytes are in the bodies bucket at `key`."""

    id: str
    filename: str | None = None
    content_type: str
    size: int
    disposition: str | None = None  # attachment | inline
    content_id: str | None = None
    key: str


class InboundReport(Record):
    """One delivery report (the first recipient's, when a report names several) as stored and shown."""

    action: str
    status: str
    diagnostic_code: str | None = None
    remote_mta: str | None = None
    final_recipient: str | None = None
    original_envelope_id: str | None = None
    original_message_id: str | None = None


class Related(Record):
    """The Petrel message an incoming message is about."""

    email_id: str
    message_id: str


class InboundRecord(Record):
    """An incoming message: what listing shows. Its content (headers, text, HTML) is an InboundContent."""

    tenant_id: str
    inbound_id: str
    kind: InboundKind
    received_at: datetime
    source: Literal["imap", "push", "local"]
    mailbox_id: str | None = None  # the mailbox it was read from, or locally delivered to
    mailbox: str | None = None  # that mailbox's address (or folder), as shown
    from_: str | None = Field(default=None, alias="from")
    to: tuple[str, ...] = ()
    subject: str | None = None
    message_id: str | None = None  # its own Message-ID header
    in_reply_to: str | None = None
    raw_key: str
    size: int
    digest: str  # sha256 of the raw bytes, hex
    parse_error: str | None = None  # set when the MIME could not be read in full (it is kept raw)
    report: InboundReport | None = None
    reports: int = 0  # how many per-recipient reports it held (delivery reports)
    related: Related | None = None
    attachments: tuple[InboundAttachment, ...] = ()
    outcome: str | None = None  # what ingesting it did to the related message (e.g. `bounced`, `event`)

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)


class InboundContent(Record):
    """An incoming message's parsed content, stored beside its record (or in the bucket when large)."""

    headers: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    html: str | None = None
    reply_text: str | None = None  # a reply's own text, the quoted original split off


class IngestJob(BaseModel):
    """A raw message to ingest: it is in the bodies bucket at `raw_key` already.

    `inbound_id` is derived from the tenant, the Message-ID and the raw bytes (`inbound_id()`), so the
    same message read twice, or read and pushed, is one record.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    v: int = 1
    tenant_id: str
    inbound_id: str
    raw_key: str
    received_at: datetime
    source: Literal["imap", "push", "local"]
    mailbox_id: str | None = None
    folder: str | None = None
    uid: int | None = None
    # local delivery: the Petrel message delivered (its record moved to `delivered` by the worker)
    local_message_id: str | None = None


def inbound_id(tenant_id: str, message_id: str | None, raw: bytes) -> str:
    """The id of an incoming message: `in_` and 26 Crockford base32 characters of a SHA-256 over the
    tenant, its Message-ID and its raw bytes. The same bytes give the same id, whoever reads them."""
    digest = hashlib.sha256(raw).digest()
    key = hashlib.sha256(b"\0".join([tenant_id.encode(), (message_id or "").encode(), digest])).digest()
    return f"{INBOUND_ID_PREFIX}_{encode(int.from_bytes(key[:17], 'big') >> 6, 26)}"  # 130 bits


def raw_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
