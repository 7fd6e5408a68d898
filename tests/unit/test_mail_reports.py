"""Classifying incoming mail (issue 9, point 3): reports, complaints, automatic and human replies.

Every fixture under fixtures/inbound is a hand-written message in the shape a real MTA or mail client
produces; each test asserts every field the classifier extracts from it, so a regression in any one
extractor shows up as a changed value, not just a changed kind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petrel.mail.reports import (
    Action,
    AutoReply,
    AutoReplyReason,
    Classification,
    Complaint,
    DeliveryReport,
    DeliveryReports,
    HumanReply,
    OtherMail,
    ReportFormat,
    candidate_message_ids,
    classify,
    classify_bytes,
    message_ids,
    parse_message,
    petrel_email_id,
    split_reply,
    verp_message_id,
)

FIXTURES = Path(__file__).parent / "fixtures" / "inbound"
KINDS = (DeliveryReports, Complaint, AutoReply, HumanReply, OtherMail)


def load(name: str) -> Classification:
    return classify_bytes((FIXTURES / name).read_bytes())


def report(
    action: Action,
    status: str,
    recipient: str,
    *,
    diagnostic: str | None,
    envid: str | None = None,
    original: str | None,
    verp: str | None,
    reporting: str | None = None,
    remote: str | None = None,
    code: int | None = None,
) -> DeliveryReport:
    return DeliveryReport(
        action=action,
        status=status,
        diagnostic=diagnostic,
        recipient=recipient,
        original_envelope_id=envid,
        original_message_id=original,
        verp_message_id=verp,
        reporting_mta=reporting,
        remote_mta=remote,
        smtp_code=code,
    )


EXPECTED_REPORTS: dict[str, DeliveryReports] = {
    "dsn_failed.eml": DeliveryReports(
        ReportFormat.RFC3464,
        (
            report(
                Action.FAILED,
                "5.1.1",
                "no.such.user@customer.example.org",
                diagnostic="550 5.1.1 <no.such.user@customer.example.org>: Recipient address rejected: "
                "User unknown in virtual mailbox table",
                envid="msg_01JDQ3ZK8N5V7W2X4Y6A8B0C1D",
                original="<em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>",
                verp="msg_01JDQ3ZK8N5V7W2X4Y6A8B0C1D",
                reporting="relay.shop.example.com",
                remote="mx1.customer.example.org",
                code=550,
            ),
        ),
    ),
    "dsn_delivered.eml": DeliveryReports(
        ReportFormat.RFC3464,
        (
            report(
                Action.DELIVERED,
                "2.0.0",
                "ana@customer.example.org",
                diagnostic="delivery via dovecot service",
                envid="msg_01JDQ40A2B3C4D5E6F7G8H9J0K",
                original="<em_01jdq409xyz0abcdef0123456789@shop.example.com>",
                verp="msg_01JDQ40A2B3C4D5E6F7G8H9J0K",
                reporting="relay.shop.example.com",
            ),
        ),
    ),
    "dsn_delayed_relayed.eml": DeliveryReports(
        ReportFormat.RFC3464,
        (
            report(
                Action.DELAYED,
                "4.4.7",
                "slow@partner.example.net",
                diagnostic="451 4.4.7 Deferred: Connection timed out with mx.partner.example.net",
                envid="msg_01JDQ41B2C3D4E5F6G7H8J9K0M",  # xtext-decoded from msg+5F...
                original="<em_01jdq41a0000000000000000aa@shop.example.com>",
                verp="msg_01JDQ41B2C3D4E5F6G7H8J9K0M",
                reporting="gw.partner.example.net",
                remote="mx.partner.example.net",
                code=451,
            ),
            report(
                Action.RELAYED,
                "2.0.0",
                "list@partner.example.net",
                diagnostic=None,
                envid="msg_01JDQ41B2C3D4E5F6G7H8J9K0M",
                original="<em_01jdq41a0000000000000000aa@shop.example.com>",
                verp="msg_01JDQ41B2C3D4E5F6G7H8J9K0M",
                reporting="gw.partner.example.net",
                remote="legacy.partner.example.net",
            ),
        ),
    ),
    "qmail.eml": DeliveryReports(
        ReportFormat.QMAIL,
        (
            report(
                Action.FAILED,
                "5.1.1",
                "gone@oldhost.example",
                diagnostic="198.51.100.20 does not like recipient. Remote host said: 550 5.1.1 "
                "<gone@oldhost.example>... No such user here Giving up on 198.51.100.20.",
                original="<em_01jdq42b0000000000000000bb@shop.example.com>",
                verp="msg_01JDQ42C3D4E5F6G7H8J9K0M1N",
                reporting="mail.oldhost.example",
                code=550,
            ),
        ),
    ),
    "exim.eml": DeliveryReports(
        ReportFormat.EXIM,
        (
            report(
                Action.FAILED,
                "5.2.2",
                "mailbox.full@hosting.example",
                diagnostic="host mx.hosting.example [192.0.2.50] SMTP error from remote mail server after "
                "RCPT TO:<mailbox.full@hosting.example>: 552 5.2.2 <mailbox.full@hosting.example>: "
                "Mailbox full, quota exceeded",
                original="<em_01jdq43c0000000000000000cc@shop.example.com>",
                verp="msg_01JDQ43D4E5F6G7H8J9K0M1N2P",
                remote="mx.hosting.example",
                code=552,
            ),
        ),
    ),
    "exim_delayed.eml": DeliveryReports(
        ReportFormat.EXIM,
        (
            report(
                Action.DELAYED,
                "4.7.1",
                "late@slow.example",
                diagnostic="host mx.slow.example [192.0.2.99] Delay reason: SMTP error from remote mail server "
                "after RCPT TO:<late@slow.example>: 451 4.7.1 Greylisted, please try again later",
                original=None,
                verp="msg_01JDQ44E5F6G7H8J9K0M1N2P3Q",
                remote="mx.slow.example",
                code=451,
            ),
        ),
    ),
    "sendmail.eml": DeliveryReports(
        ReportFormat.SENDMAIL,
        (
            report(
                Action.FAILED,
                "5.1.1",
                "old.student@university.example",
                diagnostic="550 5.1.1 <old.student@university.example>... User unknown",
                original="<em_01jdq45e0000000000000000dd@shop.example.com>",
                verp="msg_01JDQ45F6G7H8J9K0M1N2P3Q4R",
                code=550,
            ),
        ),
    ),
    "exchange.eml": DeliveryReports(
        ReportFormat.EXCHANGE,
        (
            report(
                Action.FAILED,
                "5.1.10",
                "departed@corp.example.com",
                diagnostic="550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
                original="<em_01jdq46f0000000000000000ee@shop.example.com>",
                verp="msg_01JDQ46G7H8J9K0M1N2P3Q4R5S",
                reporting="am0pr01mb1234.eurprd01.prod.exchangelabs.com",
                code=550,
            ),
        ),
    ),
    "gmail.eml": DeliveryReports(
        ReportFormat.GMAIL,
        (
            report(
                Action.FAILED,
                "5.1.1",
                "nobody.here@gmail.example",
                diagnostic="550 5.1.1 The email account that you tried to reach does not exist. Please try "
                "double-checking the recipient's email address for typos or unnecessary spaces. Learn more at "
                "https://support.google.com/mail/?p=NoSuchUser",
                original="<em_01jdq47g0000000000000000ff@shop.example.com>",
                verp="msg_01JDQ47H8J9K0M1N2P3Q4R5S6T",
                code=550,
            ),
        ),
    ),
    "yahoo.eml": DeliveryReports(
        ReportFormat.YAHOO,
        (
            report(
                Action.FAILED,
                "5.0.0",
                "closed.account@yahoo.example",
                diagnostic="554: delivery error: dd Not a valid recipient - atlas122.free.mail.ne1.yahoo.example",
                original="<em_01jdq48h0000000000000000gg@shop.example.com>",
                verp="msg_01JDQ48J9K0M1N2P3Q4R5S6T7V",
                code=554,
            ),
        ),
    ),
    "postfix_text.eml": DeliveryReports(
        ReportFormat.POSTFIX,
        (
            report(
                Action.FAILED,
                "5.7.1",
                "blocked@strict.example",
                diagnostic="host mx.strict.example[192.0.2.77] said: 554 5.7.1 Service unavailable; Client host "
                "[198.51.100.4] blocked using zen.spamhaus.example (in reply to RCPT TO command)",
                original="<em_01jdq49j0000000000000000hh@shop.example.com>",
                verp="msg_01JDQ49K0M1N2P3Q4R5S6T7V8W",
                reporting="mail.tenant.example",
                remote="mx.strict.example",
                code=554,
            ),
            report(
                Action.FAILED,
                "5.0.0",
                "typo@nonexistent-domain.example",
                diagnostic="Host or domain name not found. Name service error for name=nonexistent-domain.example "
                "type=MX: Host not found",
                original="<em_01jdq49j0000000000000000hh@shop.example.com>",
                verp="msg_01JDQ49K0M1N2P3Q4R5S6T7V8W",
                reporting="mail.tenant.example",
            ),
        ),
    ),
    "postfix_warning.eml": DeliveryReports(
        ReportFormat.POSTFIX,
        (
            report(
                Action.DELAYED,
                "4.0.0",
                "queued@busy.example",
                diagnostic="connect to mx.busy.example[192.0.2.88]:25: Connection timed out",
                original=None,
                verp="msg_01JDQ4AM1N2P3Q4R5S6T7V8W9X",
                reporting="mail.tenant.example",
            ),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_REPORTS))
def test_delivery_reports_extract_every_field(name: str) -> None:
    assert load(name) == EXPECTED_REPORTS[name]


def test_arf_complaint() -> None:
    assert load("arf.eml") == Complaint(
        feedback_type="abuse",
        complainant="annoyed@isp.example",
        original_message_id="<em_01jdq4bm0000000000000000jj@shop.example.com>",
        verp_message_id="msg_01JDQ4BN2P3Q4R5S6T7V8W9X0Y",
        user_agent="ISP-FBL/2.1",
        arrival_date="Mon, 30 Nov 2026 12:00:00 +0000",
        reporting_mta="fbl.isp.example",
    )


def test_arf_with_headers_only_and_auto_submitted_is_still_a_complaint() -> None:
    # No Original-Rcpt-To: the complainant comes from the enclosed headers' single To address.
    assert load("arf_headers_only.eml") == Complaint(
        feedback_type="abuse",
        complainant="someone@mailbox.example",
        original_message_id="<em_01jdq4cn0000000000000000kk@shop.example.com>",
        verp_message_id="msg_01JDQ4CP3Q4R5S6T7V8W9X0Y1Z",
        user_agent="MailboxExample-FBL/1.0",
        arrival_date="Mon, 30 Nov 2026 15:00:00 +0000",
        reporting_mta=None,
    )


EM_4471 = "<em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("auto_replied.eml", AutoReply(AutoReplyReason.AUTO_REPLIED, EM_4471, (EM_4471,))),
        ("out_of_office.eml", AutoReply(AutoReplyReason.VACATION, EM_4471, ())),
        ("abwesenheitsnotiz.eml", AutoReply(AutoReplyReason.VACATION, None, ())),
        (
            "reponse_automatique.eml",
            AutoReply(AutoReplyReason.VACATION, "<em_01jdq50a0000000000000000mm@shop.example.com>", ()),
        ),
        (
            "x_autoreply.eml",
            AutoReply(AutoReplyReason.AUTO_REPLIED, None, ("<em_01jdq50b0000000000000000nn@shop.example.com>",)),
        ),
        ("precedence_auto_reply.eml", AutoReply(AutoReplyReason.AUTO_REPLIED, None, ())),
    ],
)
def test_automatic_replies(name: str, expected: AutoReply) -> None:
    assert load(name) == expected


def test_gmail_reply_with_wrapped_attribution() -> None:
    assert load("reply_gmail.eml") == HumanReply(
        in_reply_to="<em_01jdq409xyz0abcdef0123456789@shop.example.com>",
        references=(
            "<em_01jdq3aa0000000000000000pp@shop.example.com>",
            "<em_01jdq409xyz0abcdef0123456789@shop.example.com>",
        ),
        text="Thanks! Can I change my delivery address to Rua Augusta 12?\n\nAna",
        quoted="On Mon, Nov 30, 2026 at 12:20 PM Shop <orders@shop.example.com>\nwrote:\n\nWelcome aboard.",
    )


def test_outlook_reply_with_from_sent_block() -> None:
    assert load("reply_outlook.eml") == HumanReply(
        in_reply_to="<em_01jdq41a0000000000000000aa@shop.example.com>",
        references=(),
        text="Please send the invoice to accounts@corp.example.com instead.\n\nRegards,\nTom",
        quoted="________________________________\nFrom: Shop <orders@shop.example.com>\n"
        "Sent: Monday, November 30, 2026 12:14 PM\nTo: Peters, Tom <tom.peters@corp.example.com>\n"
        "Subject: Invoice\n\nYour invoice is attached.",
    )


def test_outlook_reply_with_original_message_separator() -> None:
    assert load("reply_outlook_original_message.eml") == HumanReply(
        in_reply_to="<em_01jdq41a0000000000000000aa@shop.example.com>",
        references=(),
        text="Paid today.",
        quoted="-----Original Message-----\nFrom: Shop <orders@shop.example.com>\n"
        "Sent: Monday, November 30, 2026 12:14 PM\nSubject: Invoice\n\nYour invoice is attached.",
    )


def test_french_html_only_reply() -> None:
    assert load("reply_french_html.eml") == HumanReply(
        in_reply_to="<em_01jdq50a0000000000000000mm@shop.example.com>",
        references=(),
        text="Merci, c'est bien reçu.",
        quoted="Le lun. 30 nov. 2026 à 12:00, Shop <orders@shop.example.com> a écrit :\n\nVotre commande est en route.",
    )


def test_german_reply_with_inline_quotes() -> None:
    assert load("reply_german_inline.eml") == HumanReply(
        in_reply_to=None,
        references=("<em_01jdq51c0000000000000000qq@shop.example.com>",),
        text="Ja, Samstag passt.\nNein.",
        quoted="Möchten Sie die Lieferung am Samstag?\nOder lieber am Montag?\n\n"
        "Am 30.11.2026 um 12:00 schrieb Shop <orders@shop.example.com>:\nIhre Bestellung ist unterwegs.",
    )


def test_unthreaded_bulk_mail_is_other() -> None:
    assert load("other.eml") == OtherMail()


# ------------------------------------------------------------------------------------ order


def test_a_dsn_that_is_auto_submitted_is_a_report() -> None:
    message = parse_message((FIXTURES / "dsn_failed.eml").read_bytes())
    assert message["Auto-Submitted"] == "auto-replied"
    assert isinstance(classify(message), DeliveryReports)


def test_a_human_forwarding_a_bounce_is_not_a_bounce() -> None:
    raw = (
        b"From: Tom <tom@corp.example.com>\nTo: orders@shop.example.com\nSubject: Re: why?\n"
        b"In-Reply-To: <em_01jdq41a0000000000000000aa@shop.example.com>\n\n"
        b"I got this, what does it mean?\n\n"
        b"Hi. This is the qmail-send program at mail.oldhost.example.\n\n<gone@oldhost.example>:\n"
        b"Remote host said: 550 5.1.1 No such user\n"
    )
    found = classify_bytes(raw)
    assert isinstance(found, HumanReply)
    assert found.text.startswith("I got this, what does it mean?")


def test_auto_reply_threaded_to_our_message_is_not_a_human_reply() -> None:
    found = load("auto_replied.eml")
    assert isinstance(found, AutoReply)


def test_auto_submitted_no_is_not_automatic() -> None:
    raw = b"From: a@x.example\nTo: b@y.example\nSubject: hello\nAuto-Submitted: no\n\nhi\n"
    assert classify_bytes(raw) == OtherMail()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("auto-generated", AutoReplyReason.AUTO_GENERATED),
        ("auto-notified; owner-email=x@y.example", AutoReplyReason.AUTO_NOTIFIED),
        ("auto-replied", AutoReplyReason.AUTO_REPLIED),
    ],
)
def test_auto_submitted_keywords(value: str, reason: AutoReplyReason) -> None:
    raw = f"From: a@x.example\nSubject: status\nAuto-Submitted: {value}\n\nbody\n".encode()
    assert classify_bytes(raw) == AutoReply(reason, None, ())


@pytest.mark.parametrize(
    "subject",
    ["Out of Office: order", "Automatic reply: order", "Réponse automatique : commande", "AW: Abwesenheitsnotiz"],
)
def test_vacation_subjects(subject: str) -> None:
    message = parse_message(b"From: a@x.example\n\nbody\n")
    message["Subject"] = subject
    assert classify(message) == AutoReply(AutoReplyReason.VACATION, None, ())


# ------------------------------------------------------------------------------ correlation


def test_verp_restores_the_case_of_a_lower_cased_local_part() -> None:
    assert verp_message_id("BOUNCES+msg_01jdq3zk8n5v7w2x4y6a8b0c1d@bounce.example") == "msg_01JDQ3ZK8N5V7W2X4Y6A8B0C1D"
    assert verp_message_id("<bounces+msg_01JDQ3ZK8N5V7W2X4Y6A8B0C1D@b.example>") == "msg_01JDQ3ZK8N5V7W2X4Y6A8B0C1D"


@pytest.mark.parametrize(
    "address", [None, "", "bounces@b.example", "bounces+msg_SHORT@b.example", "orders@shop.example.com"]
)
def test_verp_of_other_addresses_is_none(address: str | None) -> None:
    assert verp_message_id(address) is None


def test_petrel_email_id_from_our_message_id() -> None:
    assert petrel_email_id("<em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>") == "em_01JDQ3YQ2R4T6V8X0Z2B4D6F8H"
    assert petrel_email_id("<CAF=reply-1@mail.customer.example.org>") is None
    assert petrel_email_id(None) is None


def test_candidate_message_ids_in_reply_to_first_then_newest_reference() -> None:
    message = parse_message(
        b"From: a@x.example\nIn-Reply-To: <c@x>\nReferences: <a@x> <b@x>\n <c@x>\n\nbody\n",
    )
    assert candidate_message_ids(message) == ("<c@x>", "<b@x>", "<a@x>")


def test_message_ids_ignores_text_and_repeats() -> None:
    assert message_ids('<a@x> (comment) "q" <b@x> <a@x>') == ("<a@x>", "<b@x>")
    assert message_ids(None) == ()


def test_split_reply_without_quote_keeps_everything() -> None:
    assert split_reply("Just this.\r\nAnd this.\r\n") == ("Just this.\nAnd this.", "")


def test_split_reply_from_line_without_sent_is_own_text() -> None:
    own, quoted = split_reply("From: the desk of Tom\nAll good.")
    assert (own, quoted) == ("From: the desk of Tom\nAll good.", "")


# ------------------------------------------------------------------------------ malformed


MALFORMED = [
    b"",
    b"\x00\xff\xfe garbage",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\nContent-Type: "
    b"message/delivery-status\n\nAction: failed\n",
    b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary at all\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=q\n\n--q\n"
    b"Content-Type: message/feedback-report\nContent-Transfer-Encoding: base64\n\n!!!not base64\n--q--\n",
    b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\nHi. This is the qmail-send program at\n<",
    b"From: MAILER-DAEMON@x.example\nContent-Type: text/plain; charset=x-unknown-charset\n\n"
    b"This is the mail system at host h.\n\n<a@b.example>: \xff\xfe 550 5.1.1 nope\n",
    b"In-Reply-To: <<<>>>\nReferences: <\n\n> quoted only",
    b"Subject: =?utf-8?b?invalid-base64?=\nAuto-Submitted: \xff\n\nx",
    b"X" * 5000 + b": y\n\n",
    b"Content-Type: message/rfc822\n\nContent-Type: multipart/report; report-type=delivery-status\n\n",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_input_never_raises(raw: bytes) -> None:
    assert isinstance(classify_bytes(raw), KINDS)


def test_report_without_recipient_blocks_and_no_other_signal_is_other_mail() -> None:
    raw = (
        b"From: someone@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\n\n"
        b"--x\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n--x--\n"
    )
    assert classify_bytes(raw) == OtherMail()


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.eml")))
def test_truncated_fixtures_never_raise(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    for cut in range(0, len(raw), max(1, len(raw) // 40)):
        assert isinstance(classify_bytes(raw[:cut]), KINDS)


def test_at_least_one_fixture_per_shape() -> None:
    kinds = {type(load(path.name)) for path in FIXTURES.glob("*.eml")}
    formats = {found.format for path in FIXTURES.glob("*.eml") if isinstance(found := load(path.name), DeliveryReports)}
    assert kinds == set(KINDS)
    assert formats == set(ReportFormat)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(classify_bytes(raw), KINDS)


FIXTURE_BYTES = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXTURE_BYTES), st.data())
def test_fuzz_mutated_fixtures_never_raise(raw: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(raw)))
    end = data.draw(st.integers(start, min(len(raw), start + 200)))
    insert = data.draw(st.binary(max_size=60) | st.sampled_from([b"\n", b"\n\n", b"--", b"<", b">", b":", b"\xff"]))
    assert isinstance(classify_bytes(raw[:start] + insert + raw[end:]), KINDS)


def test_unknown_charset_bounce_is_still_read() -> None:
    raw = (
        b"From: MAILER-DAEMON@x.example\nContent-Type: text/plain; charset=x-unknown-charset\n\n"
        b"This is the mail system at host h.example.\n\n<a@b.example>: host mx.b.example[192.0.2.1] said:\n"
        b"    550 5.1.1 \xff\xfe no such user\n"
    )
    found = classify_bytes(raw)
    assert isinstance(found, DeliveryReports)
    assert [(r.recipient, r.status, r.smtp_code, r.remote_mta) for r in found.reports] == [
        ("a@b.example", "5.1.1", 550, "mx.b.example")
    ]
