"""What an incoming message is: a delivery report, a complaint, an automatic reply, a human reply, or other mail.

Issue 9 (the ingest side) turns every message read from a tenant's mailbox into a status or an event on
the message Petrel sent. This module is the pure half of that: it looks at one parsed message (no I/O,
no AWS) and returns a small, typed value saying what the message is and how it can be correlated back
(VERP return path, `Original-Envelope-Id`, the enclosed original's `Message-ID`, `In-Reply-To`).

Order matters and is fixed: an ARF report is a complaint; a delivery report stays a report even when it
is also `Auto-Submitted`; only then automatic replies, then replies threaded to a message, then the rest.
Malformed mail is never an error here: what cannot be understood is `OtherMail`.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from enum import StrEnum
from html.parser import HTMLParser

# ---------------------------------------------------------------------------------------------- values


class Action(StrEnum):
    """The RFC 3464 `Action` of one recipient."""

    DELIVERED = "delivered"
    RELAYED = "relayed"
    DELAYED = "delayed"
    FAILED = "failed"
    EXPANDED = "expanded"


class ReportFormat(StrEnum):
    """Which shape the report came in: the standard one, or the MTA whose plain text was read."""

    RFC3464 = "rfc3464"
    QMAIL = "qmail"
    EXIM = "exim"
    SENDMAIL = "sendmail"
    EXCHANGE = "exchange"
    GMAIL = "gmail"
    YAHOO = "yahoo"
    POSTFIX = "postfix"


class AutoReplyReason(StrEnum):
    """Why a message counts as automatic: an out-of-office, or which RFC 3834 keyword it carried."""

    VACATION = "vacation"
    AUTO_REPLIED = "auto_replied"
    AUTO_GENERATED = "auto_generated"
    AUTO_NOTIFIED = "auto_notified"


@dataclass(frozen=True)
class DeliveryReport:
    """One recipient's outcome from a delivery report (one per per-recipient block).

    `verp_message_id` is the Petrel message id decoded from the `bounces+<id>@...` return path;
    `original_envelope_id` is the `ENVID` Petrel sent (also the message id); either correlates alone.
    """

    action: Action
    status: str
    diagnostic: str | None
    recipient: str | None
    original_envelope_id: str | None
    original_message_id: str | None
    verp_message_id: str | None
    reporting_mta: str | None
    remote_mta: str | None
    smtp_code: int | None


@dataclass(frozen=True)
class DeliveryReports:
    """A delivery report: one `DeliveryReport` per recipient it speaks of (never empty)."""

    format: ReportFormat
    reports: tuple[DeliveryReport, ...]


@dataclass(frozen=True)
class Complaint:
    """An RFC 5965 feedback report: a recipient (or their provider) called a message unwanted."""

    feedback_type: str
    complainant: str | None
    original_message_id: str | None
    verp_message_id: str | None
    user_agent: str | None
    arrival_date: str | None
    reporting_mta: str | None


@dataclass(frozen=True)
class AutoReply:
    """An automatic answer (RFC 3834 and the vacation shapes): an event, never a human reply."""

    reason: AutoReplyReason
    in_reply_to: str | None
    references: tuple[str, ...]


@dataclass(frozen=True)
class HumanReply:
    """A message threaded to an earlier one, with its own text separated from the quoted original."""

    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    quoted: str


@dataclass(frozen=True)
class OtherMail:
    """Anything else: stored and announced as `inbound.received`."""


Classification = DeliveryReports | Complaint | AutoReply | HumanReply | OtherMail

# ------------------------------------------------------------------------------------ small helpers

_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_VERP_RE = re.compile(r"\bbounces\+(msg_[0-9A-Za-z]{26})@", re.IGNORECASE)
_ADDR_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE_RE = re.compile(r"(?<![\d.#:])([245][0-5]\d)(?=[\s:-]|$)")
_XTEXT_RE = re.compile(r"\+([0-9A-Fa-f]{2})")
_DIAGNOSTIC_MAX = 1000


def parse_message(raw: bytes) -> EmailMessage:
    """Parse raw bytes the way every classifier here expects (`policy.default`)."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)  # policy.default builds EmailMessage
    return message


def header_text(message: Message, name: str) -> str | None:
    """A header's unfolded text, or None; a header the email package cannot decode counts as absent."""
    try:
        value = message.get(name)
        text = None if value is None else " ".join(str(value).split())
    except Exception:
        return None
    return text or None


def _all_headers(message: Message, name: str) -> list[str]:
    try:
        return [" ".join(str(value).split()) for value in message.get_all(name) or []]
    except Exception:
        return []


def message_ids(value: str | None) -> tuple[str, ...]:
    """The `<id>` tokens of a Message-ID, In-Reply-To or References value, in order, without repeats."""
    found: list[str] = []
    for match in _MSGID_RE.finditer(value or ""):
        token = f"<{match.group(1)}>"
        if token not in found:
            found.append(token)
    return tuple(found)


def verp_message_id(address: str | None) -> str | None:
    """The Petrel message id in a VERP return path `bounces+<message id>@<domain>`, or None.

    Petrel ids are upper-case Crockford base32; some MTAs lower-case local parts, so case is restored.
    """
    match = _VERP_RE.search(address or "")
    if match is None:
        return None
    prefix, _, tail = match.group(1).partition("_")
    return f"{prefix.lower()}_{tail.upper()}"


def petrel_email_id(message_id: str | None) -> str | None:
    """The Petrel email id in a `Message-ID` Petrel built (`<em_...@domain>`, lower-cased), or None."""
    match = re.fullmatch(r"<?(em_[0-9a-z]{26})@[^>]+>?", (message_id or "").strip(), re.IGNORECASE)
    return None if match is None else f"em_{match.group(1)[3:].upper()}"


def candidate_message_ids(message: Message) -> tuple[str, ...]:
    """Message-IDs this message answers, most likely first: In-Reply-To, then References newest first."""
    ordered = [
        *message_ids(header_text(message, "In-Reply-To")),
        *reversed(message_ids(header_text(message, "References"))),
    ]
    return tuple(dict.fromkeys(ordered))


def _xtext_decode(value: str) -> str:
    """RFC 3461 xtext (how ENVID travels): `+XX` is a hex-encoded byte."""
    return _XTEXT_RE.sub(lambda match: chr(int(match.group(1), 16)), value)


def _typed_value(value: str | None) -> str | None:
    """`rfc822; a@b` → `a@b`, `dns; mx.example` → `mx.example`, `smtp; 550 ...` → `550 ...`."""
    if value is None:
        return None
    _, sep, rest = value.partition(";")
    text = (rest if sep else value).strip()
    return text or None


def _clean(text: str | None) -> str | None:
    """Whitespace collapsed and bounded, so a diagnostic is one line of reasonable length."""
    if text is None:
        return None
    collapsed = " ".join(text.split())
    return collapsed[:_DIAGNOSTIC_MAX] or None


def _recipient(text: str | None) -> str | None:
    match = _ADDR_RE.search(text or "")
    return None if match is None else match.group(0).lower()


def _enhanced_status(text: str | None) -> str | None:
    match = _ENHANCED_RE.search(text or "")
    return None if match is None else match.group(0)


def _smtp_code(text: str | None) -> int | None:
    match = _SMTP_CODE_RE.search(text or "")
    return None if match is None else int(match.group(1))


def _part_text(part: Message) -> str:
    """A leaf part's text, decoded by its charset where possible and by replacement where not."""
    try:
        content = part.get_content() if isinstance(part, EmailMessage) else None
    except Exception:  # an unknown charset or a broken transfer encoding: fall back to the bytes
        content = None
    if isinstance(content, str):
        return content
    payload = None if part.is_multipart() else part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


class _HtmlText(HTMLParser):
    """The visible text of an HTML body, line breaks kept at block ends; `<blockquote>` lines get `> `."""

    _BLOCKS = frozenset({"p", "div", "br", "tr", "li", "blockquote", "h1", "h2", "h3", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.depth = 0
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag == "blockquote":
            self.depth += 1
        if tag in self._BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        if tag == "blockquote":
            self.depth = max(0, self.depth - 1)
        if tag in self._BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip and data.strip():
            prefix = "> " * self.depth
            self.chunks.append("\n".join(prefix + line if line.strip() else line for line in data.split("\n")))


def _html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.chunks).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def body_text(message: Message) -> str:
    """The message's readable text: the first text/plain part outside attachments, else its HTML as text."""
    plain: str | None = None
    html: str | None = None
    for part in _leaf_parts(message):
        if part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = _part_text(part)
        elif kind == "text/html" and html is None:
            html = _part_text(part)
    if plain is not None:
        return plain
    return _html_to_text(html) if html is not None else ""


def _leaf_parts(message: Message) -> Iterator[Message]:
    """The non-multipart parts, not descending into enclosed messages (those are the original's)."""
    if message.is_multipart() and message.get_content_maintype() == "multipart":
        for sub in message.get_payload():
            if isinstance(sub, Message):
                yield from _leaf_parts(sub)
    elif message.get_content_maintype() != "message":
        yield message


def _parts(message: Message) -> Iterator[Message]:
    """Every part including enclosed ones (message/* parts show up with their payload list)."""
    yield message
    payload = message.get_payload() if message.is_multipart() else None
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _parts(sub)


# -------------------------------------------------------------------------- the enclosed original


def _enclosed_headers(message: Message) -> Message | None:
    """The original message (or just its headers) that a report encloses, if it has one."""
    for part in _parts(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind in ("text/rfc822-headers", "message/rfc822-headers", "text/rfc822"):
            return email.message_from_string(_part_text(part).lstrip(), policy=policy.default)
    return None


# Where plain-text bounces start their copy of the original (its headers follow).
_ORIGINAL_MARKERS = re.compile(
    r"^.*(?:Below this line is a copy of the message|This is a copy of the message|"
    r"Original message headers|Original message follows|Returned mail follows|"
    r"Undelivered message headers|Text of returned message|Headers of the original message|"
    r"original message below|Transcript of session follows).*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_LINE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _original_message_id(message: Message, text: str) -> str | None:
    """The enclosed original's Message-ID: from an enclosed part, else from headers copied into the text."""
    enclosed = _enclosed_headers(message)
    if enclosed is not None:
        ids = message_ids(header_text(enclosed, "Message-ID"))
        if ids:
            return ids[0]
    marker = _ORIGINAL_MARKERS.search(text)
    match = _HEADER_LINE.search(text, marker.end() if marker else 0)
    return match.group(1) if match else None


def _find_verp(message: Message, *extra: str | None) -> str | None:
    """The Petrel message id from the VERP address a report was sent to (or that its original came from)."""
    candidates: list[str | None] = [*extra]
    for name in ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Original-Rcpt"):
        candidates.extend(_all_headers(message, name))
    enclosed = _enclosed_headers(message)
    if enclosed is not None:
        candidates.extend(_all_headers(enclosed, "Return-Path"))
    for candidate in candidates:
        found = verp_message_id(candidate)
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------------------ RFC 3464 and 5965


def _report_type(message: Message) -> str | None:
    if message.get_content_type() != "multipart/report":
        return None
    value = message.get_param("report-type")
    return value.lower() if isinstance(value, str) else None


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The header blocks of a message/delivery-status or message/feedback-report part, names lower-cased."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [
            {name.lower(): " ".join(str(value).split()) for name, value in block.items()}
            for block in payload
            if isinstance(block, Message)
        ]
        return [block for block in blocks if block]
    return _text_blocks(_part_text(part))


def _text_blocks(text: str) -> list[dict[str, str]]:
    """`Name: value` blocks separated by blank lines (for parts the parser left as text)."""
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        block: dict[str, str] = {}
        last: str | None = None
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and last is not None:
                block[last] = f"{block[last]} {line.strip()}"
            elif ":" in line:
                name, _, value = line.partition(":")
                last = name.strip().lower()
                block[last] = value.strip()
        if block:
            blocks.append(block)
    return blocks


def _first_part(message: Message, kinds: tuple[str, ...]) -> Message | None:
    return next((part for part in _parts(message) if part.get_content_type() in kinds), None)


def _action(value: str | None, status: str | None) -> Action | None:
    """The block's action; one with an unknown action is judged by its status class."""
    try:
        return Action((value or "").strip().lower())
    except ValueError:
        pass
    return {"2": Action.DELIVERED, "4": Action.DELAYED, "5": Action.FAILED}.get((status or "")[:1])


def _rfc3464(message: Message) -> DeliveryReports | None:
    part = _first_part(message, ("message/delivery-status", "message/global-delivery-status"))
    if part is None:
        return None
    blocks = _field_blocks(part)
    if not blocks:
        return None
    per_message = blocks[0] if "final-recipient" not in blocks[0] else {}
    recipient_blocks = [block for block in blocks if "final-recipient" in block or "original-recipient" in block]
    envid = per_message.get("original-envelope-id")
    original_envelope_id = _xtext_decode(envid.strip()) if envid else None
    original_id = _original_message_id(message, "")
    verp = _find_verp(message)
    reports: list[DeliveryReport] = []
    for block in recipient_blocks:
        diagnostic = _typed_value(block.get("diagnostic-code"))
        status = _enhanced_status(block.get("status")) or _enhanced_status(diagnostic)
        action = _action(block.get("action"), status)
        if action is None:
            continue
        reports.append(
            DeliveryReport(
                action=action,
                status=status or _default_status(action, _smtp_code(diagnostic)),
                diagnostic=_clean(diagnostic),
                recipient=_recipient(_typed_value(block.get("final-recipient") or block.get("original-recipient"))),
                original_envelope_id=original_envelope_id,
                original_message_id=original_id,
                verp_message_id=verp,
                reporting_mta=_typed_value(per_message.get("reporting-mta")),
                remote_mta=_typed_value(block.get("remote-mta")),
                smtp_code=_smtp_code(diagnostic),
            )
        )
    return DeliveryReports(ReportFormat.RFC3464, tuple(reports)) if reports else None


def _default_status(action: Action, code: int | None) -> str:
    """A status when the report gave none: the class of the SMTP code, else the class of the action."""
    if code is not None:
        return f"{str(code)[0]}.0.0"
    return {Action.DELAYED: "4.0.0", Action.FAILED: "5.0.0"}.get(action, "2.0.0")


def _complaint(message: Message) -> Complaint | None:
    part = _first_part(message, ("message/feedback-report",))
    fields: dict[str, str] = {}
    for block in _field_blocks(part) if part is not None else []:
        fields.update(block)
    if not fields:
        return None
    enclosed = _enclosed_headers(message)
    complainant = _recipient(fields.get("original-rcpt-to") or fields.get("removal-recipient"))
    if complainant is None and enclosed is not None:
        to = _all_headers(enclosed, "To")
        complainant = _recipient(to[0]) if len(to) == 1 and len(_ADDR_RE.findall(to[0])) == 1 else None
    return Complaint(
        feedback_type=(fields.get("feedback-type") or "abuse").strip().lower(),
        complainant=complainant,
        original_message_id=_original_message_id(message, ""),
        verp_message_id=_find_verp(message, fields.get("original-mail-from")),
        user_agent=fields.get("user-agent"),
        arrival_date=fields.get("arrival-date") or fields.get("received-date"),
        reporting_mta=_typed_value(fields.get("reporting-mta")),
    )


# ------------------------------------------------------------------------ plain-text bounces


@dataclass(frozen=True)
class _Failure:
    """One recipient paragraph of a plain-text bounce, before it becomes a DeliveryReport."""

    recipient: str | None
    text: str
    remote_mta: str | None = None


_BOUNCE_SENDER = re.compile(
    r"mailer-daemon|postmaster|mail-daemon|mail delivery|microsoftexchange|mailerdaemon", re.IGNORECASE
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|failure notice|returned mail|mail delivery failed|"
    r"delivery failure|delivery has failed|not delivered|delayed mail|warning: could not send|"
    r"unzustellbar|non remis|delivery delayed|delivery report",
    re.IGNORECASE,
)
_ANGLE_LINE = re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>:?[ \t]*(.*)$")
_REMOTE_HOST = re.compile(r"\bhost\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})\s*\[", re.IGNORECASE)


def _automatic_sender(message: Message) -> bool:
    """Real bounces come from a daemon address, the null sender, or under a bounce subject."""
    return bool(
        _BOUNCE_SENDER.search(header_text(message, "From") or "")
        or (header_text(message, "Return-Path") or "").strip() == "<>"
        or _BOUNCE_SUBJECT.search(header_text(message, "Subject") or "")
    )


def _paragraphs_after(text: str, start: int) -> list[str]:
    """The text from `start` up to the enclosed copy of the original, split on blank lines."""
    end = _ORIGINAL_MARKERS.search(text, start)
    body = text[start : end.start() if end else len(text)]
    return [chunk for chunk in re.split(r"\n[ \t]*\n", body) if chunk.strip()]


def _angle_blocks(text: str, start: int) -> list[_Failure]:
    """`<addr>: reason` paragraphs (qmail, Yahoo, Postfix, Sendmail): the reason runs to the blank line."""
    failures: list[_Failure] = []
    for paragraph in _paragraphs_after(text, start):
        current: list[str] | None = None
        address = ""
        for line in paragraph.splitlines():
            match = _ANGLE_LINE.match(line)
            if match and "@" in match.group(1):
                if current is not None:
                    failures.append(_failure(address, current))
                address, current = match.group(1), [match.group(2)]
            elif current is not None:
                current.append(line)
        if current is not None:
            failures.append(_failure(address, current))
    return failures


def _failure(address: str, lines: list[str]) -> _Failure:
    text = "\n".join(lines)
    reason = re.fullmatch(r"\s*\(reason:\s*(.*)\)\s*", text, re.DOTALL)  # Sendmail wraps it so
    text = reason.group(1) if reason else text
    host = _REMOTE_HOST.search(text)
    return _Failure(address.lower(), text, host.group(1).rstrip(".").lower() if host else None)


def _exim_blocks(text: str, start: int) -> list[_Failure]:
    """Exim: an address indented two spaces, its reason on the more deeply indented lines after it."""
    failures: list[_Failure] = []
    for paragraph in _paragraphs_after(text, start):
        lines = paragraph.splitlines()
        head = lines[0].strip()
        address = head.split(" ", 1)[0]
        if lines[0].startswith(" ") and re.fullmatch(r"<?[^\s<>]+@[^\s<>]+>?", address):
            failures.append(_failure(address.strip("<>"), lines[1:] or [head]))
    return failures


def _exchange_blocks(text: str, start: int) -> list[_Failure]:
    """Exchange/Office 365: `addr` then `Remote Server returned '<reply>'` under the administrators' section."""
    failures: list[_Failure] = []
    pattern = re.compile(r"^\s*([^\s<>]+@[^\s<>]+)\s*\n(?:\s*\n)?\s*Remote Server returned '([^\n]*)'", re.MULTILINE)
    for match in pattern.finditer(text, start):
        address = re.sub(r"<mailto:.*$", "", match.group(1))
        failures.append(_Failure(address.lower(), match.group(2).rstrip("'")))
    if not failures:
        listed = _ADDR_RE.search(text, start)
        if listed is not None:
            failures.append(_Failure(listed.group(0).lower(), text[listed.end() : listed.end() + 400]))
    return failures


def _gmail_blocks(text: str, start: int) -> list[_Failure]:
    """Gmail: a sentence naming the address, then the remote server's response after a fixed lead-in."""
    named = re.search(
        r"(?:wasn't delivered to|delivering your message to|couldn't be delivered to)\s+(\S+@[^\s,]+?)[.,]?(?:\s|$)",
        text[start:],
        re.IGNORECASE,
    )
    response = re.search(r"The response (?:from the remote server )?was:\s*\n?(.+?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    detail = response.group(1) if response else text[start : start + 400]
    return [_Failure(named.group(1).strip("<>").lower() if named else _recipient(detail), detail)]


@dataclass(frozen=True)
class _Shape:
    """One plain-text bounce format: how to recognise it, whether it is a delay, how to read its blocks."""

    format: ReportFormat
    marker: re.Pattern[str]
    delay: re.Pattern[str] | None
    blocks: Callable[[str, int], list[_Failure]]


_SHAPES: tuple[_Shape, ...] = (
    _Shape(ReportFormat.QMAIL, re.compile(r"This is the qmail-send program", re.I), None, _angle_blocks),
    _Shape(
        ReportFormat.EXIM,
        re.compile(r"This message was created automatically by mail delivery software", re.I),
        re.compile(r"has not yet been delivered|No action is required on your part", re.I),
        _exim_blocks,
    ),
    _Shape(
        ReportFormat.SENDMAIL,
        re.compile(r"-+\s*The following addresses had (?:permanent fatal|transient non-fatal) errors\s*-+", re.I),
        re.compile(r"transient non-fatal errors", re.I),
        _angle_blocks,
    ),
    _Shape(
        ReportFormat.EXCHANGE,
        re.compile(r"Diagnostic information for administrators|Delivery (?:has failed|is delayed) to these", re.I),
        re.compile(r"Delivery is delayed to these", re.I),
        _exchange_blocks,
    ),
    _Shape(
        ReportFormat.GMAIL,
        re.compile(
            r"\*\*\s*(?:Address not found|Message blocked|Message not delivered|Delivery incomplete)\s*\*\*", re.I
        ),
        re.compile(r"Delivery incomplete|will retry|temporary problem", re.I),
        _gmail_blocks,
    ),
    _Shape(
        ReportFormat.YAHOO,
        re.compile(r"Sorry, we were unable to deliver your message to the following address", re.I),
        None,
        _angle_blocks,
    ),
    _Shape(
        ReportFormat.POSTFIX,
        re.compile(r"This is the mail system at host", re.I),
        re.compile(r"THIS IS A WARNING ONLY", re.I),
        _angle_blocks,
    ),
)


def _text_bounce(message: Message) -> DeliveryReports | None:
    if not _automatic_sender(message):
        return None
    text = body_text(message).replace("\r\n", "\n")
    for shape in _SHAPES:
        found = shape.marker.search(text)
        if found is None:
            continue
        delayed = shape.delay is not None and shape.delay.search(text) is not None
        reports = _text_reports(message, text, shape.blocks(text, found.start()), delayed)
        if reports:
            return DeliveryReports(shape.format, reports)
    return None


def _text_reports(message: Message, text: str, failures: list[_Failure], delayed: bool) -> tuple[DeliveryReport, ...]:
    action = Action.DELAYED if delayed else Action.FAILED
    original_id = _original_message_id(message, text)
    verp = _find_verp(message)
    reports = []
    for failure in failures:
        if failure.recipient is None:
            continue
        diagnostic = _clean(failure.text)
        code = _smtp_code(diagnostic)
        reports.append(
            DeliveryReport(
                action=action,
                status=_enhanced_status(diagnostic) or _default_status(action, code),
                diagnostic=diagnostic,
                recipient=failure.recipient,
                original_envelope_id=None,
                original_message_id=original_id,
                verp_message_id=verp,
                reporting_mta=_reporting_host(text),
                remote_mta=failure.remote_mta,
                smtp_code=code,
            )
        )
    return tuple(reports)


def _reporting_host(text: str) -> str | None:
    match = re.search(
        r"(?:qmail-send program at|mail system at host|Generating server:)\s*([A-Za-z0-9.-]+[A-Za-z0-9])", text, re.I
    )
    return match.group(1).lower() if match else None


# ------------------------------------------------------------------------------- automatic replies

_VACATION_SUBJECT = re.compile(
    r"^\s*(?:(?:re|aw|fw|fwd|tr|sv)\s*:\s*)*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?reply|"
    r"autoreply|auto:|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|absence|"
    r"respuesta autom[áa]tica|risposta automatica|on vacation|vacation reply|away from (?:the )?office)",
    re.IGNORECASE,
)


def _auto_reply(message: Message) -> AutoReply | None:
    submitted = (header_text(message, "Auto-Submitted") or "").split(";")[0].strip().lower()
    precedence = (header_text(message, "Precedence") or "").strip().lower()
    flagged = (
        bool(header_text(message, "X-Autoreply") or header_text(message, "X-Autorespond")) or precedence == "auto_reply"
    )
    reason: AutoReplyReason | None = None
    if _VACATION_SUBJECT.search(header_text(message, "Subject") or ""):
        reason = AutoReplyReason.VACATION
    elif submitted and submitted != "no":
        reason = {
            "auto-generated": AutoReplyReason.AUTO_GENERATED,
            "auto-notified": AutoReplyReason.AUTO_NOTIFIED,
        }.get(submitted, AutoReplyReason.AUTO_REPLIED)
    elif flagged:
        reason = AutoReplyReason.AUTO_REPLIED
    if reason is None:
        return None
    return AutoReply(reason, _first(message_ids(header_text(message, "In-Reply-To"))), _references(message))


def _first(values: tuple[str, ...]) -> str | None:
    return values[0] if values else None


def _references(message: Message) -> tuple[str, ...]:
    return message_ids(header_text(message, "References"))


# ----------------------------------------------------------------------------------- human replies

_ATTRIBUTION = re.compile(
    r"^\s*(?:On\b.*\bwrote\s*:|Le\b.*\ba [ée]crit\s*:|Am\b.*\bschrieb\b.*:|El\b.*\bescribi[óo]\s*:|"
    r"Il\b.*\bha scritto\s*:|-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|"
    r"Mensaje original|Forwarded message)\s*-{2,}|_{20,})\s*$",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:From|De|Von|Van)\s*:\*?\s+\S")
_OUTLOOK_SENT = re.compile(r"^\s*\*?(?:Sent|Date|Envoyé|Gesendet|Datum|Verzonden)\s*:\*?\s+\S")


def split_reply(text: str) -> tuple[str, str]:
    """The reply's own text and the quoted original, from a reply body.

    The quote starts at the first attribution line (`On ... wrote:`, `Le ... a écrit :`, `Am ... schrieb`),
    an Outlook separator or `From:`/`Sent:` header block; lines starting with `>` are quoted wherever
    they are. Attribution lines wrapped over two lines (as Gmail does) are joined before matching.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    own: list[str] = []
    quoted: list[str] = []
    for index, line in enumerate(lines):
        if _starts_quote(lines, index):
            quoted.extend(_unquote(rest) for rest in lines[index:])
            break
        if line.lstrip().startswith(">"):
            quoted.append(_unquote(line))
        else:
            own.append(line)
    return "\n".join(own).strip(), "\n".join(quoted).strip()


def _starts_quote(lines: list[str], index: int) -> bool:
    line = lines[index]
    following = lines[index + 1] if index + 1 < len(lines) else ""
    if _ATTRIBUTION.match(line) or _ATTRIBUTION.match(f"{line} {following.strip()}"):
        return not line.lstrip().startswith(">")
    if _OUTLOOK_FROM.match(line):
        return any(_OUTLOOK_SENT.match(nxt) for nxt in lines[index + 1 : index + 4])
    return False


def _unquote(line: str) -> str:
    stripped = line.lstrip()
    if stripped.startswith(">"):
        stripped = stripped[1:]
        return stripped[1:] if stripped.startswith(" ") else stripped
    return line


def _human_reply(message: Message) -> HumanReply | None:
    in_reply_to = message_ids(header_text(message, "In-Reply-To"))
    references = _references(message)
    if not in_reply_to and not references:
        return None
    text, quoted = split_reply(body_text(message))
    return HumanReply(_first(in_reply_to), references, text, quoted)


# ---------------------------------------------------------------------------------------- classify


def _report(message: Message) -> Classification | None:
    """multipart/report first (its report-type decides), then the plain-text bounce shapes."""
    report_type = _report_type(message)
    if report_type == "feedback-report":
        return _complaint(message)
    if report_type in ("delivery-status", "global-delivery-status"):
        found = _rfc3464(message)
        if found is not None:
            return found
    return _text_bounce(message)


# In this order: a report that is also Auto-Submitted is a report; an auto-reply that is threaded is not human.
_STEPS: tuple[Callable[[Message], Classification | None], ...] = (_report, _auto_reply, _human_reply)


def classify(message: Message) -> Classification:
    """What one parsed incoming message is. Never raises: what cannot be understood is `OtherMail`."""
    for step in _STEPS:
        try:
            found = step(message)
        except Exception:
            found = None
        if found is not None:
            return found
    return OtherMail()


def classify_bytes(raw: bytes) -> Classification:
    """`classify` of raw RFC 5322 bytes; bytes that do not even parse are `OtherMail`."""
    try:
        message = parse_message(raw)
    except Exception:
        return OtherMail()
    return classify(message)
