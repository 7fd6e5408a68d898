"""Build an email's MIME bytes once: the same headers for every recipient and every attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from petrel.mail.addresses import Mailbox, parse_mailbox
from petrel.mail.text import body_text_problem, header_text_problem

_SMTP_POLICY = policy.SMTP.clone(max_line_length=78, cte_type="7bit")


class UnencodableContent(ValueError):
    """Content that MIME cannot carry; the request models refuse it before it gets here."""


def _checked(value: str, what: str, problem: str | None) -> str:
    if problem is not None:
        raise UnencodableContent(f"{what} {problem}")
    return value


@dataclass(frozen=True)
class AttachmentPart:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class MessageContent:
    from_: str
    subject: str
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[AttachmentPart] = field(default_factory=list)


def header_message_id(email_id: str, from_domain: str) -> str:
    return f"<{email_id.lower()}@{from_domain}>"


def _address(mailbox: Mailbox) -> Address:
    return Address(display_name=mailbox.name, addr_spec=mailbox.address)


def _check(content: MessageContent) -> None:
    """Refuse, with the reason, what the email package would refuse or garble."""
    _checked(content.subject, "the subject", header_text_problem(content.subject))
    for item in (content.from_, *content.to, *content.cc, *content.reply_to):
        _checked(item, "a display name", header_text_problem(parse_mailbox(item).name, allow_tab=False))
    for name, value in content.headers.items():
        _checked(value, f"header {name!r}", header_text_problem(value))
    for body, what in ((content.text, "text"), (content.html, "html")):
        if body is not None:
            _checked(body, what, body_text_problem(body))
    for part in content.attachments:
        _checked(part.filename, "an attachment's filename", header_text_problem(part.filename, allow_tab=False))


def build_mime(content: MessageContent, *, message_id: str, date: datetime, email_id: str) -> bytes:
    """RFC 5322 bytes with CRLF line ends, 7-bit clean (quoted-printable or base64 bodies).

    Raises UnencodableContent for text MIME cannot carry (`header_text_problem`, `body_text_problem`).
    """
    _check(content)
    msg = EmailMessage(policy=_SMTP_POLICY)
    msg["From"] = _address(parse_mailbox(content.from_))
    if content.to:
        msg["To"] = [_address(parse_mailbox(item)) for item in content.to]
    if content.cc:
        msg["Cc"] = [_address(parse_mailbox(item)) for item in content.cc]
    if content.reply_to:
        msg["Reply-To"] = [_address(parse_mailbox(item)) for item in content.reply_to]
    msg["Subject"] = content.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    msg["X-Petrel-Email-Id"] = email_id
    for name, value in content.headers.items():
        msg[name] = value

    if content.text is not None:
        msg.set_content(content.text)
        if content.html is not None:
            msg.add_alternative(content.html, subtype="html")
    elif content.html is not None:
        msg.set_content(content.html, subtype="html")
    for part in content.attachments:
        maintype, _, subtype = part.content_type.partition("/")
        msg.add_attachment(part.data, maintype=maintype, subtype=subtype, filename=part.filename)
    return msg.as_bytes(policy=_SMTP_POLICY)
