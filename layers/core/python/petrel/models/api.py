"""Request and response bodies of the public API. The OpenAPI document is generated from these."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    field_validator,
    model_validator,
)

from petrel.mail.addresses import AddressError, parse_mailbox
from petrel.mail.text import body_text_problem, header_text_problem
from petrel.models.inbound import InboundKind
from petrel.models.records import Attempt, Event, MessageStatus, Pool, RecipientKind, Reply

MAX_RECIPIENTS = 50
MAX_BATCH = 100
MAX_SCHEDULE_DAYS = 30  # how far ahead `send_at` may be
# The largest request body the API takes. Deployed, API Gateway hands the body to Lambda base64-encoded
# (binary media type */*) inside the event, and a synchronous invoke takes at most 6,291,456 bytes:
# 4 MiB becomes 5.6 MB, leaving room for the headers and the request context. Larger files are
# uploaded first (POST /v1/attachments).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
ATTACHMENT_ID_PATTERN = r"^att_[0-9A-Z]{26}$"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_FIELD_NAME_RE = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext, a sane length
_TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")

MAX_HEADERS = 50  # custom headers per email
MAX_HEADERS_BYTES = 16 * 1024  # their total size, `Name: value` UTF-8 bytes each

# Headers Petrel writes itself, or that only a receiving or relaying server may write (trace and
# authentication results); a request may not set them through `headers`, in any letter case.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "content-description",
        "return-path",
        "sender",
        "received",
        "received-spf",
        "authentication-results",
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "dkim-signature",
        "domainkey-signature",
        "disposition-notification-to",
        "return-receipt-to",
    }
)
# Whole families: resent fields (RFC 5322 §3.6.6), ARC sets (RFC 8617), and Petrel's own.
RESERVED_HEADER_PREFIXES = ("resent-", "arc-", "x-petrel-")


def _header_text(value: str, what: str, *, allow_tab: bool = True) -> str:
    problem = header_text_problem(value, allow_tab=allow_tab)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return value


def reserved_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES)


def _mailbox(value: str) -> str:
    try:
        mailbox = parse_mailbox(value)
    except AddressError as exc:
        raise ValueError(str(exc)) from exc
    return f"{mailbox.name} <{mailbox.address}>" if mailbox.name else mailbox.address


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=False)


def check_filename(value: str) -> str:
    """An attachment's filename: one name, no path, nothing that breaks a header."""
    _header_text(value, "filename", allow_tab=False)
    if "/" in value or "\\" in value:
        raise ValueError("filename must not contain a path separator")
    return value


def check_content_type(value: str) -> str:
    if not _CONTENT_TYPE_RE.match(value):
        raise ValueError("content_type must look like type/subtype")
    return value.lower()


class Attachment(ApiModel):
    """A file: inline (`filename` and base64 `content`), or uploaded first (`attachment_id`, from
    `POST /v1/attachments`; its filename and type are the ones declared there)."""

    filename: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="Required with `content`"
    )
    content_type: str | None = Field(
        default=None, description="MIME type, e.g. application/pdf (default application/octet-stream)"
    )
    content: str | None = Field(default=None, description="The file, base64-encoded")
    attachment_id: str | None = Field(
        default=None,
        pattern=ATTACHMENT_ID_PATTERN,
        description="An uploaded attachment (`POST /v1/attachments`), instead of `content`",
    )

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str | None) -> str | None:
        return None if value is None else check_filename(value)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str | None) -> str | None:
        return None if value is None else check_content_type(value)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("content is not valid base64") from exc
        return value

    @model_validator(mode="after")
    def _inline_or_uploaded(self) -> Attachment:
        if self.attachment_id is not None:
            if self.content is not None or self.filename is not None or self.content_type is not None:
                raise ValueError(
                    "an attachment_id comes alone: its filename and content_type were declared when it was created"
                )
        elif self.content is None or self.filename is None:
            raise ValueError("an attachment needs filename and content, or an attachment_id")
        return self

    @property
    def media_type(self) -> str:
        return self.content_type or DEFAULT_CONTENT_TYPE

    def decoded(self) -> bytes:
        return base64.b64decode(self.content or "")


def _address_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# Validated item by item, so an error points at `/to/1`, not at the whole list.
MailboxStr = Annotated[str, AfterValidator(_mailbox)]


class SendEmailRequest(ApiModel):
    """One email. Each recipient (To, Cc and Bcc) becomes its own message with its own status."""

    from_: str = Field(alias="from", description='Sender: "address" or "Name <address>"')
    to: list[MailboxStr] = Field(default_factory=list, description="Recipients (a string or a list)")
    cc: list[MailboxStr] = Field(default_factory=list)
    bcc: list[MailboxStr] = Field(default_factory=list, description="Blind copies: never shown in headers")
    reply_to: list[MailboxStr] = Field(default_factory=list)
    subject: Annotated[str, Field(min_length=1, max_length=998)]
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers; Petrel's own are refused")
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    tags: dict[str, str] = Field(default_factory=dict, max_length=20)
    pool: Pool = "transactional"
    send_at: AwareDatetime | None = Field(
        default=None,
        description=f"Send at this time (ISO 8601 with an offset), up to {MAX_SCHEDULE_DAYS} days ahead; "
        "a time already past sends now",
    )

    _lists = field_validator("to", "cc", "bcc", "reply_to", mode="before")(_address_list)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _mailbox(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _header_text(value, "subject")

    @field_validator("text", "html")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        problem = None if value is None else body_text_problem(value)
        if problem is not None:
            raise ValueError(f"the body {problem}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} custom headers are allowed, got {len(value)}")
        seen: dict[str, str] = {}
        total = 0
        for name, header_value in value.items():
            if not _FIELD_NAME_RE.match(name):
                raise ValueError(f"header name {name!r} is not a valid field name")
            if reserved_header(name):
                raise ValueError(f"header {name!r} is set by Petrel or by receiving servers and cannot be overridden")
            if name.lower() in seen:
                raise ValueError(f"headers {seen[name.lower()]!r} and {name!r} are the same header")
            seen[name.lower()] = name
            _header_text(header_value, f"header {name!r}")
            if len(header_value) > 998:
                raise ValueError(f"header {name!r} is longer than 998 characters")
            total += len(name.encode()) + 2 + len(header_value.encode("utf-8"))
        if total > MAX_HEADERS_BYTES:
            raise ValueError(f"custom headers total {total} bytes; at most {MAX_HEADERS_BYTES} are allowed")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not _TAG_KEY_RE.match(key):
                raise ValueError(f"tag name {key!r} must be 1-64 of A-Z a-z 0-9 _ . : -")
            if len(tag) > 256:
                raise ValueError(f"tag {key!r} is longer than 256 characters")
            _header_text(tag, f"tag {key!r}")
        return value

    @model_validator(mode="after")
    def _whole(self) -> SendEmailRequest:
        count = len(self.recipients())
        if count == 0:
            raise ValueError("at least one recipient is required in to, cc or bcc")
        if count > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients are allowed, got {count}")
        if self.text is None and self.html is None:
            raise ValueError("text or html (or both) is required")
        return self

    def recipients(self) -> list[tuple[str, RecipientKind]]:
        """Distinct envelope recipients in order: To, then Cc, then Bcc."""
        seen: set[str] = set()
        result: list[tuple[str, RecipientKind]] = []
        kinds: tuple[tuple[RecipientKind, list[str]], ...] = (("to", self.to), ("cc", self.cc), ("bcc", self.bcc))
        for kind, items in kinds:
            for item in items:
                address = parse_mailbox(item).address
                if address.lower() not in seen:
                    seen.add(address.lower())
                    result.append((address, kind))
        return result


class BatchSendRequest(ApiModel):
    """Up to 100 emails. Each is accepted or refused on its own: its result says which."""

    # `emails` keeps its schema and bounds for the OpenAPI document, but is not validated with the
    # envelope: the batch route checks the list's length and validates each email alone, so one
    # invalid email is that email's problem, not the whole request's (petrel.api.routes).
    emails: SkipValidation[Annotated[list[SendEmailRequest], Field(min_length=1, max_length=MAX_BATCH)]]


class RecipientStatus(ApiModel):
    id: str = Field(description="The message id of this recipient's copy")
    email: str
    status: MessageStatus


class SendEmailResponse(ApiModel):
    id: str = Field(description="The email id")
    recipients: list[RecipientStatus]


class Problem(ApiModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class BatchItemResult(ApiModel):
    index: int
    status: int = Field(description="202 when accepted, otherwise the problem's status")
    email: SendEmailResponse | None = None
    error: Problem | None = None


class BatchSendResponse(ApiModel):
    results: list[BatchItemResult]


class MessageView(ApiModel):
    id: str
    email_id: str = Field(description="The email this message is a copy of")
    email: str
    kind: RecipientKind
    status: MessageStatus
    attempts: int
    bounce_class: str | None = None
    failure_reason: str | None = None
    last_reply: Reply | None = None
    next_attempt_at: datetime | None = Field(
        default=None, description="deferred: when the next attempt is due; scheduled: when it will be sent"
    )
    attempt_log: list[Attempt]
    return_path: str | None = Field(
        default=None,
        description="The envelope sender this recipient's copy is relayed with (`bounces+<message id>@<return-path "
        "domain>`): delivery reports come back to it. Null on messages accepted before it was recorded",
    )
    updated_at: datetime


class EmailView(ApiModel):
    id: str
    from_: str = Field(alias="from")
    subject: str
    message_id_header: str
    pool: Pool
    tags: dict[str, str]
    size: int
    created_at: datetime
    recipients: list[MessageView]
    events: list[Event]


class MessageSummary(ApiModel):
    id: str
    email_id: str
    email: str
    status: MessageStatus
    created_at: datetime
    updated_at: datetime


class MessageList(ApiModel):
    data: list[MessageSummary]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page")


ListStatusFilter = Literal[
    "queued", "scheduled", "sending", "relayed", "delivered", "deferred", "bounced", "failed", "suppressed", "cancelled"
]


class CancelledRecipient(ApiModel):
    id: str
    email: str
    status: MessageStatus = Field(description="`cancelled`, or the status it had already reached")


class CancelResponse(ApiModel):
    id: str
    cancelled: list[CancelledRecipient] = Field(description="Recipients whose message will not be sent")
    not_cancelled: list[CancelledRecipient] = Field(
        description="Recipients already sending or finished, with their status"
    )


class SuppressionRequest(ApiModel):
    email: MailboxStr
    reason: str = Field(default="manual", pattern=r"^[a-z0-9-]{1,40}$")
    note: str | None = Field(default=None, max_length=500)

    @field_validator("note")
    @classmethod
    def _note(cls, value: str | None) -> str | None:
        return None if value is None else _header_text(value, "note")


class SuppressionView(ApiModel):
    email: str
    reason: str = Field(description="`hard-bounce` (added by Petrel), `manual`, or the reason given")
    detail: str | None = Field(default=None, description="The bounce's SMTP reply, or the note given")
    message_id: str | None = Field(default=None, description="The message whose bounce added it")
    created_at: datetime


class SuppressionList(ApiModel):
    data: list[SuppressionView]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page")


# -- incoming mail: POST /v1/inbound/raw, GET /v1/inbound, GET /v1/inbound/{id}

RAW_MESSAGE = "message/rfc822"


class InboundAccepted(ApiModel):
    id: str = Field(
        description="The incoming message's id (`in_...`): the same bytes pushed again, or also read from a "
        "mailbox, give the same id. `GET /v1/inbound/{id}` finds it once it is ingested (seconds)"
    )


class InboundAttachmentView(ApiModel):
    id: str
    filename: str | None = None
    content_type: str
    size: int = Field(description="Bytes, decoded")
    url: str | None = Field(
        default=None,
        description="A short-lived link to download the file (no credentials needed). Null in listings: "
        "`GET /v1/inbound/{id}` gives one",
    )


class InboundReportView(ApiModel):
    """A delivery report's fields (RFC 3464; the first recipient's when it names several)."""

    action: str = Field(description="`delivered`, `relayed`, `expanded`, `delayed` or `failed`")
    status: str = Field(description="The enhanced status code, e.g. `5.1.1`")
    diagnostic_code: str | None = None
    remote_mta: str | None = None
    final_recipient: str | None = None
    original_envelope_id: str | None = Field(default=None, description="The `ENVID` Petrel sent: a message id")
    original_message_id: str | None = Field(default=None, description="The `Message-ID` of the original")


class RelatedView(ApiModel):
    """The Petrel message an incoming message is about (a report, complaint or reply to it)."""

    email_id: str
    message_id: str


class InboundSummary(ApiModel):
    """An incoming message as listed: everything but its text and HTML (and the attachments' links)."""

    id: str
    kind: InboundKind
    received_at: datetime
    source: Literal["imap", "push", "local"] = Field(
        description="`imap`: read from a mailbox; `push`: `POST /v1/inbound/raw`; `local`: sent by this tenant "
        "to a domain it receives for"
    )
    mailbox: str | None = Field(default=None, description="The mailbox it was read from or delivered to")
    from_: str | None = Field(default=None, alias="from")
    to: list[str]
    subject: str | None = None
    message_id: str | None = Field(default=None, description="Its own `Message-ID` header")
    in_reply_to: str | None = None
    size: int = Field(description="Bytes of the raw message")
    attachments: list[InboundAttachmentView]
    report: InboundReportView | None = Field(default=None, description="Delivery reports only")
    related: RelatedView | None = Field(default=None, description="Null when it is about no message Petrel sent")
    parse_error: str | None = Field(
        default=None, description="Why the MIME could not be read in full (the raw message is kept); null normally"
    )


class InboundView(InboundSummary):
    """An incoming message with its content, and a link to each attachment."""

    text: str | None = None
    html: str | None = None
    reply_text: str | None = Field(default=None, description="Replies: the reply's own text, the quoted original cut")


class InboundList(ApiModel):
    data: list[InboundSummary]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page")


# -- sending domains: POST/GET /v1/domains, GET/DELETE /v1/domains/{domain}, .../verify, .../rotate


class CreateDomainRequest(ApiModel):
    """A sending domain. Every field but `domain` has the default a tenant with MailU servers wants."""

    domain: str = Field(min_length=1, max_length=253, description="The domain in the From address")
    return_path_domain: str | None = Field(
        default=None,
        max_length=253,
        description="Where bounces come back (the VERP envelope sender's domain); the domain itself by default. "
        "A subdomain (e.g. `bounces.example.com`) keeps the domain's own MX untouched",
    )
    signer: Literal["petrel", "mailu"] = Field(
        default="petrel",
        description="`petrel`: Petrel signs with a key it creates; `mailu`: the tenant's MailU (rspamd) signs "
        "and Petrel only verifies its published key",
    )
    selector: str | None = Field(
        default=None,
        max_length=63,
        description="The DKIM selector: required for `mailu` (the one MailU signs with); generated for `petrel`",
    )
    ed25519: bool = Field(default=False, description="Also sign with an Ed25519 key (RFC 8463), besides RSA-2048")
    spf: list[str] | None = Field(
        default=None,
        max_length=10,
        description="SPF mechanisms that authorize the tenant's MailU servers (`include:`, `a`, `a:`, `mx`, "
        "`ip4:`, `ip6:`); by default `a:<host>` (or `ip4:`/`ip6:`) of each of the tenant's SMTP servers",
    )
    mx: list[str] | None = Field(
        default=None, max_length=10, description="The MailU hosts that receive bounces (default: the SMTP servers')"
    )
    receives: bool | None = Field(
        default=None,
        description="The tenant receives mail at the domain itself (an MX record is asked for); by default true "
        "when the tenant has a mailbox on the domain",
    )
    dmarc_rua: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^mailto:[^\s;,]+@[^\s;,]+$",
        description="Where DMARC aggregate reports go (default `mailto:dmarc@<domain>`)",
    )


class UpdateDomainRequest(ApiModel):
    """A change to a sending domain: only the fields given change (keys are rotated, not updated). A
    changed required record makes the domain `pending` again until it is verified."""

    return_path_domain: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Where bounces come back (the VERP envelope sender's domain); the domain itself to undo a "
        "bounce subdomain",
    )
    spf: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="SPF mechanisms that authorize the tenant's MailU servers (`include:`, `a`, `a:`, `mx`, "
        "`ip4:`, `ip6:`): they replace the current ones",
    )
    mx: list[str] | None = Field(
        default=None, max_length=10, description="The MailU hosts that receive bounces: they replace the current ones"
    )
    receives: bool | None = Field(
        default=None, description="The tenant receives mail at the domain itself (an MX record is asked for)"
    )
    dmarc_rua: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^mailto:[^\s;,]+@[^\s;,]+$",
        description="Where DMARC aggregate reports go",
    )


class DnsRecordView(ApiModel):
    purpose: Literal["spf", "dkim", "dmarc", "return_path_mx", "return_path_spf", "mx"]
    type: Literal["TXT", "MX"]
    name: str = Field(description="The fully qualified name to publish at")
    value: str = Field(description="The value to publish, exactly (an MX: `<preference> <host>.`)")
    required: bool = Field(description="Mail is refused until this record is verified")
    status: Literal["pending", "verified", "missing", "wrong", "warning"]
    found: list[str] = Field(default_factory=list, description="What the last lookup found (when wrong or a warning)")
    detail: str | None = None


class DomainEventView(ApiModel):
    type: Literal["domain.verified", "domain.dns_error"]
    at: datetime
    detail: str | None = None


class DomainView(ApiModel):
    domain: str
    status: Literal["pending", "verified", "failed"] = Field(
        description="`verified`: SPF and DKIM are published as asked; `pending`: not yet; `failed`: was "
        "verified, then a re-check found a required record gone or wrong (mail is refused)"
    )
    signer: Literal["petrel", "mailu"]
    return_path_domain: str
    selectors: list[str] = Field(description="The DKIM selectors the records name (active first)")
    records: list[DnsRecordView]
    sending_allowed: bool = Field(description="Mail from this domain is accepted now")
    created_at: datetime
    checked_at: datetime | None = None
    verified_at: datetime | None = None
    events: list[DomainEventView] = Field(default_factory=list, description="The last verifications and DNS errors")


class DomainList(ApiModel):
    data: list[DomainView]
