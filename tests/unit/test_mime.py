"""petrel.mail.mime: the bytes parse back to what was asked for, and are fit for SMTP as they are."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest

from petrel.mail.mime import AttachmentPart, MessageContent, build_mime, header_message_id

DATE = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
MESSAGE_ID = "<em_01kf0fv2e05jw2zewdntnkmxkg@example.com>"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


def _build(**fields: object) -> bytes:
    values: dict[str, object] = {"from_": "Jane Doe <jane@example.com>", "subject": "Hello", "to": ["bob@example.org"]}
    values.update(fields)
    return build_mime(MessageContent(**values), message_id=MESSAGE_ID, date=DATE, email_id="em_01KF")  # type: ignore[arg-type]


def _text(part: object) -> str:
    """A text part's content with wire line ends (CRLF) read back as newlines."""
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.fixture
def full() -> bytes:
    return _build(
        subject="Grüße aus Köln, Übersicht",
        to=["Bob <bob@example.org>", "carol@example.org"],
        cc=['"Doe, Dan" <dan@example.net>'],
        reply_to=["support@example.com"],
        text="Hallo Bob,\nGrüße aus Köln.\n" + "lang " * 400 + "\n.\nEnde",
        html="<p>Hallo <b>Bob</b>, Grüße aus Köln.</p>" + "<span>x</span>" * 300,
        headers={"X-Campaign": "spring-2026", "List-Unsubscribe": "<mailto:unsub@example.com>"},
        attachments=[
            AttachmentPart("report.pdf", "application/pdf", PDF),
            AttachmentPart("notes.txt", "text/plain", "naïve text\n".encode()),
        ],
    )


def test_headers(full: bytes) -> None:
    msg = _parse(full)
    assert msg["From"] == "Jane Doe <jane@example.com>"
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org", "carol@example.org"]
    assert msg["To"].addresses[0].display_name == "Bob"
    assert msg["Cc"].addresses[0].display_name == "Doe, Dan"
    assert msg["Cc"].addresses[0].addr_spec == "dan@example.net"
    assert msg["Reply-To"] == "support@example.com"
    assert msg["Message-ID"] == MESSAGE_ID
    assert msg["X-Petrel-Email-Id"] == "em_01KF"
    assert msg["X-Campaign"] == "spring-2026"
    assert msg["List-Unsubscribe"] == "<mailto:unsub@example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime == DATE


def test_there_is_never_a_bcc_header(full: bytes) -> None:
    assert "Bcc" not in _parse(full)
    assert b"bcc:" not in full.lower()


def test_non_ascii_subject_is_encoded(full: bytes) -> None:
    head = full.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in head
    assert "Grüße".encode() not in head
    assert _parse(full)["Subject"] == "Grüße aus Köln, Übersicht"


def test_text_and_html_are_alternatives(full: bytes) -> None:
    msg = _parse(full)
    assert msg.get_content_type() == "multipart/mixed"
    alternative = next(part for part in msg.walk() if part.get_content_type() == "multipart/alternative")
    plain, html = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert _text(plain).startswith("Hallo Bob,\nGrüße aus Köln.\n" + "lang " * 400)
    assert _text(plain).endswith("\n.\nEnde\n")
    assert "<b>Bob</b>, Grüße aus Köln." in _text(html)
    assert msg.get_body(preferencelist=("html",)) is html


def test_attachments_round_trip(full: bytes) -> None:
    attachments = {part.get_filename(): part for part in _parse(full).iter_attachments()}
    assert set(attachments) == {"report.pdf", "notes.txt"}
    assert attachments["report.pdf"].get_content_type() == "application/pdf"
    assert attachments["report.pdf"].get_content() == PDF  # type: ignore[attr-defined]
    assert attachments["notes.txt"].get_payload(decode=True) == "naïve text\n".encode()


def test_bytes_are_fit_for_smtp(full: bytes) -> None:
    assert all(byte < 128 for byte in full), "not 7-bit clean"
    assert full.count(b"\n") == full.count(b"\r\n"), "a bare LF"
    assert full.count(b"\r") == full.count(b"\r\n"), "a bare CR"
    assert max(len(line) for line in full.split(b"\r\n")) <= 998
    assert full.endswith(b"\r\n")


def test_text_only_and_html_only() -> None:
    text_only = _parse(_build(text="just text"))
    assert text_only.get_content_type() == "text/plain"
    assert _text(text_only) == "just text\n"

    html_only = _parse(_build(html="<p>only html</p>"))
    assert html_only.get_content_type() == "text/html"
    assert _text(html_only) == "<p>only html</p>\n"


def test_no_cc_or_reply_to_when_not_given() -> None:
    msg = _parse(_build(text="x"))
    assert "Cc" not in msg and "Reply-To" not in msg


def test_a_display_name_that_needs_encoding() -> None:
    raw = _build(from_="Jörg Müller <jorg@example.com>", text="x")
    assert all(byte < 128 for byte in raw)
    assert _parse(raw)["From"].addresses[0].display_name == "Jörg Müller"


def test_header_message_id() -> None:
    assert header_message_id("em_01KF0FV2E05JW2ZEWDNTNKMXKG", "example.com") == (
        "<em_01kf0fv2e05jw2zewdntnkmxkg@example.com>"
    )


def test_same_input_same_bytes_except_boundaries() -> None:
    first = _build(text="a", html="<p>a</p>")
    second = _build(text="a", html="<p>a</p>")
    assert _parse(first)["Message-ID"] == _parse(second)["Message-ID"] == MESSAGE_ID
