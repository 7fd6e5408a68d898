"""The ingest side end to end, against the whole local stack (real Postfix + Dovecot, the poller on its
timer, the ingest worker on its queue): what happens to a message after `relayed` is told by mail that
comes back, and each test checks it arrives at the right message.

- Mail to `bounce_recipient` is taken by the stand-in (250), refused by its next hop (550 5.1.1), and
  Postfix bounces it with its own RFC 3464 report to the VERP address: the message ends `bounced`, with
  the report's status code, and the recipient is suppressed.
- Mail to the test mailbox is delivered by Postfix, whose success report (NOTIFY=SUCCESS) ends it
  `delivered`.
- A reply sent into the demo tenant's inbox (In-Reply-To the sent Message-ID) becomes `email.replied`
  on the original and is listed as kind `reply`, its own text cut from the quote.
- A complaint (RFC 5965 ARF) pushed to POST /v1/inbound/raw suppresses the complainant.
- A hand-written RFC 3464 report pushed raw moves a relayed message to `bounced`; a later report that
  says `delivered` is an event only (statuses only move forward).
- Mail to a domain the tenant receives for (its mailboxes' domain) is delivered locally: `delivered` with
  no SMTP, its copy in the tenant's inbound store.

Every report and reply is also listed by GET /v1/inbound with the original it is about (`related`).
"""

from __future__ import annotations

import smtplib
import ssl
import time
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest

from local.platform import LocalPlatform
from tests.e2e.support.api import Api, read_mailbox
from tests.e2e.support.tenants import Mailboxes, make_tenant
from tests.e2e.support.tracking import wait_until

pytestmark = pytest.mark.e2e


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _send(api: Api, platform: LocalPlatform, to: str, subject: str, text: str = "Hello from Petrel.") -> dict[str, Any]:
    status, sent = api.call(
        "POST", "/v1/emails", {"from": platform.info["from_address"], "to": to, "subject": subject, "text": text}
    )
    assert status == 202, sent
    return dict(sent)


def _recipient(view: dict[str, Any]) -> dict[str, Any]:
    [recipient] = view["recipients"]
    return dict(recipient)


def _events(view: dict[str, Any]) -> list[str]:
    return [str(event["type"]) for event in view["events"]]


def _inbound(api: Api, email_id: str, kind: str, timeout: float = 20.0) -> dict[str, Any]:
    """The one incoming message of `kind` about `email_id` that GET /v1/inbound lists (waiting for it),
    then GET /v1/inbound/{id} of it."""

    def listed() -> list[dict[str, Any]]:
        status, page = api.call("GET", f"/v1/inbound?kind={kind}&email_id={email_id}")
        assert status == 200, page
        return list(page["data"])

    [summary] = wait_until(listed, timeout, f"a {kind} about {email_id} in GET /v1/inbound")
    assert summary["kind"] == kind
    assert summary["related"]["email_id"] == email_id, summary
    status, view = api.call("GET", f"/v1/inbound/{summary['id']}")
    assert status == 200, view
    return dict(view)


def _within(platform: LocalPlatform) -> float:
    """How long a report may take: the relay, Postfix's report, two poll intervals and the ingest, with room
    for a slow machine."""
    return 15.0 + 2 * platform.config.poll_seconds


def test_mail_to_the_bounce_recipient_ends_bounced_from_postfixs_own_report(platform: LocalPlatform, api: Api) -> None:
    recipient = platform.info["bounce_recipient"]
    started = time.monotonic()
    sent = _send(api, platform, recipient, f"bounce {_tag()}")
    message_id = sent["recipients"][0]["id"]
    try:
        view = api.wait_for(sent["id"], lambda v: _recipient(v)["status"] == "bounced", timeout=_within(platform))
        took = time.monotonic() - started
        message = _recipient(view)
        # Relayed first (the stand-in said 250), then bounced by the report: never a synchronous bounce.
        assert [a["reply"]["code"] for a in message["attempt_log"]] == [250]
        assert message["return_path"] == f"bounces+{message_id}@{platform.config.domain}"
        assert message["bounce_class"] == "hard"
        reply = message["last_reply"]
        assert (reply["code"], reply["enhanced"]) == (550, "5.1.1"), reply
        assert f"<{recipient}>: Recipient address rejected" in reply["text"]
        events = _events(view)
        assert events[:2] == ["email.queued", "email.sent"] and events[-1] == "email.bounced", events

        report = _inbound(api, sent["id"], "delivery_report")
        assert report["source"] == "imap" and report["mailbox"] == f"bounces@{platform.config.domain}"
        assert report["report"]["action"] == "failed" and report["report"]["status"] == "5.1.1"
        assert report["report"]["final_recipient"] == recipient
        assert report["report"]["original_envelope_id"] == message_id
        assert report["related"] == {"email_id": sent["id"], "message_id": message_id}

        status, suppression = api.call("GET", f"/v1/suppressions/{recipient}")
        assert status == 200 and suppression["reason"] == "hard-bounce", suppression
        print(f"\nbounce_recipient: bounced {took:.1f} s after the POST (poll every {platform.config.poll_seconds} s)")
    finally:
        api.call("DELETE", f"/v1/suppressions/{recipient}")  # the next run may send to it again


def test_mail_to_the_test_mailbox_ends_delivered_from_postfixs_success_report(
    platform: LocalPlatform, api: Api
) -> None:
    box = platform.info["test_mailbox"]
    subject = f"delivered {_tag()}"
    sent = _send(api, platform, box["address"], subject)
    message_id = sent["recipients"][0]["id"]
    view = api.wait_for(sent["id"], lambda v: _recipient(v)["status"] == "delivered", timeout=_within(platform))
    assert _events(view) == ["email.queued", "email.sent", "email.delivered"]
    assert [a["reply"]["code"] for a in _recipient(view)["attempt_log"]] == [250]
    assert len(read_mailbox(box, subject=subject)) == 1

    report = _inbound(api, sent["id"], "delivery_report")
    assert report["report"]["action"] == "delivered" and report["report"]["status"].startswith("2.")
    assert report["report"]["final_recipient"] == box["address"]
    assert report["report"]["original_envelope_id"] == message_id
    assert report["report"]["original_message_id"] == view["message_id_header"]


def _submit(platform: LocalPlatform, message: EmailMessage) -> None:
    """Send `message` as the test mailbox's user would: submission with STARTTLS (the stand-in's CA) and AUTH."""
    box = platform.info["test_mailbox"]
    server = platform.info["smtp_server"]
    context = ssl.create_default_context(cafile=box["ca_file"])
    with smtplib.SMTP(server["host"], server["submission_port"], timeout=20) as smtp:
        smtp.starttls(context=context)
        smtp.login(box["username"], box["password"])
        smtp.send_message(message)


def test_a_reply_into_the_tenants_inbox_becomes_email_replied(platform: LocalPlatform, api: Api) -> None:
    box = platform.info["test_mailbox"]
    subject = f"question {_tag()}"
    sent = _send(api, platform, box["address"], subject, "Shall we meet on Thursday?")
    [original] = read_mailbox(box, subject=subject)

    answer = EmailMessage()
    answer["From"] = box["address"]
    answer["To"] = platform.info["from_address"]
    answer["Subject"] = f"Re: {subject}"
    answer["Message-ID"] = f"<reply-{_tag()}@{platform.config.recipient_domain}>"
    answer["In-Reply-To"] = original["Message-ID"]
    answer["References"] = original["Message-ID"]
    answer["Date"] = format_datetime(datetime.now(UTC))
    answer.set_content(
        f"Thursday works for me.\n\nOn {original['Date']}, {original['From']} wrote:\n> Shall we meet on Thursday?\n"
    )
    _submit(platform, answer)

    view = api.wait_for(sent["id"], lambda v: "email.replied" in _events(v), timeout=_within(platform))
    assert _recipient(view)["status"] in ("relayed", "delivered")  # a reply is an event, not a status
    reply = _inbound(api, sent["id"], "reply")
    assert reply["source"] == "imap" and reply["mailbox"] == platform.info["from_address"]
    assert reply["message_id"] == answer["Message-ID"] and reply["in_reply_to"] == original["Message-ID"]
    assert reply["from"] == box["address"] and reply["subject"] == f"Re: {subject}"
    assert reply["reply_text"].strip() == "Thursday works for me."
    assert "Shall we meet" in reply["text"]


def _arf(platform: LocalPlatform, complainant: str, original: EmailMessage, return_path: str) -> bytes:
    """An RFC 5965 abuse report about `original`, as a mailbox provider's feedback loop sends it: a
    human-readable part, the machine-readable report, and the original's headers."""
    boundary = f"arf-{_tag()}"
    now = format_datetime(datetime.now(UTC))
    headers = "".join(f"{name}: {value}\r\n" for name, value in original.items())
    text = (
        "From: Feedback Loop <fbl@isp.example>\r\n"
        f"To: fbl@{platform.config.domain}\r\n"
        "Subject: Abuse report\r\n"
        f"Message-ID: <{boundary}@isp.example>\r\n"
        f"Date: {now}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is an email abuse report for an email message received from IP 127.0.0.1.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\n"
        "User-Agent: IspFeedback/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{return_path}>\r\n"
        f"Original-Rcpt-To: <{complainant}>\r\n"
        f"Arrival-Date: {now}\r\n"
        f"Reported-Domain: {platform.config.domain}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"{headers}\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode()


def test_a_complaint_pushed_raw_suppresses_the_complainant(platform: LocalPlatform, api: Api) -> None:
    complainant = f"grumpy-{_tag()}@{platform.config.recipient_domain}"
    boxes = Mailboxes(platform.mailu, [complainant])
    subject = f"newsletter {_tag()}"
    sent = _send(api, platform, complainant, subject)
    message_id = sent["recipients"][0]["id"]
    api.wait_for(sent["id"], lambda v: _recipient(v)["status"] in ("relayed", "delivered"))
    [original] = [m for m in _read(boxes, complainant) if m["Subject"] == subject]

    raw = _arf(platform, complainant, original, f"bounces+{message_id}@{platform.config.domain}")
    status, accepted = api.post_raw("/v1/inbound/raw", raw)
    assert status == 202, accepted
    try:
        view = api.wait_for(sent["id"], lambda v: "email.complained" in _events(v), timeout=_within(platform))
        assert _recipient(view)["status"] in ("relayed", "delivered")  # a complaint is an event, not a status
        status, suppression = api.call("GET", f"/v1/suppressions/{complainant}")
        assert status == 200 and suppression["reason"] == "complaint", suppression
        status, complaint = api.call("GET", f"/v1/inbound/{accepted['id']}")
        assert status == 200, complaint
        assert complaint["kind"] == "complaint" and complaint["source"] == "push"
        assert complaint["related"] == {"email_id": sent["id"], "message_id": message_id}

        # Pushed again (a retrying forwarder): the same id, nothing applied twice.
        again_status, again = api.post_raw("/v1/inbound/raw", raw)
        assert (again_status, again["id"]) == (202, accepted["id"]), again
        later = _send(api, platform, complainant, f"after the complaint {_tag()}")
        after = api.wait_for(later["id"], lambda v: _recipient(v)["status"] == "suppressed")
        assert _events(after)[-1] == "email.suppressed"
        _, final = api.call("GET", f"/v1/emails/{sent['id']}")
        assert _events(final).count("email.complained") == 1, _events(final)
    finally:
        api.call("DELETE", f"/v1/suppressions/{complainant}")


def _read(boxes: Mailboxes, address: str) -> list[EmailMessage]:
    """Every message in `address`'s INBOX (waiting for the first)."""

    def messages() -> list[EmailMessage]:
        found = []
        for raw in boxes.mailu.fetch_all(address, boxes.passwords[address]):
            parsed = message_from_bytes(raw, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    return list(wait_until(messages, 20, f"mail in {address}"))


def _rfc3464(return_path: str, message_id: str, header_id: str, recipient: str, action: str, status: str) -> bytes:
    """A delivery report as a remote MTA writes one (RFC 3464), for the copy of `message_id` to `recipient`."""
    boundary = f"dsn-{_tag()}"
    code = {"2": "250", "4": "450", "5": "552"}[status[0]]
    text = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.remote.example>\r\n"
        f"To: {return_path}\r\n"
        "Subject: Delivery Status Notification\r\n"
        f"Message-ID: <{boundary}@mx.remote.example>\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system at host mx.remote.example. Your message to <{recipient}>: {action}.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.remote.example\r\n"
        f"Original-Envelope-Id: {message_id}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.remote.example\r\n"
        f"Diagnostic-Code: smtp; {code} {status} {'Mailbox full' if action == 'failed' else 'Ok'}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {header_id}\r\nTo: {recipient}\r\n\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode()


def test_a_report_pushed_raw_moves_a_relayed_message_and_only_forward(platform: LocalPlatform) -> None:
    # A tenant whose reports no poller reads: its message stays `relayed` until the pushed report comes.
    tenant = make_tenant(platform, "Pushed reports")
    recipient = f"full-{_tag()}@{platform.config.recipient_domain}"
    Mailboxes(platform.mailu, [recipient])
    status, sent = tenant.api.call(
        "POST", "/v1/emails", {"from": tenant.from_address, "to": recipient, "subject": f"push {_tag()}", "text": "x"}
    )
    assert status == 202, sent
    view = tenant.api.wait_for(sent["id"], lambda v: _recipient(v)["status"] == "relayed")
    message = _recipient(view)
    args = (message["return_path"], message["id"], view["message_id_header"], recipient)

    status, accepted = tenant.api.post_raw("/v1/inbound/raw", _rfc3464(*args, "failed", "5.2.2"))
    assert status == 202, accepted
    bounced = tenant.api.wait_for(sent["id"], lambda v: _recipient(v)["status"] == "bounced", timeout=_within(platform))
    reply = _recipient(bounced)["last_reply"]
    assert (reply["code"], reply["enhanced"]) == (552, "5.2.2"), reply
    assert _events(bounced)[-1] == "email.bounced"
    status, _ = tenant.api.call("GET", f"/v1/suppressions/{recipient}")
    assert status == 404, "a full mailbox is not a reason to suppress (DESIGN §2)"
    status, report = tenant.api.call("GET", f"/v1/inbound/{accepted['id']}")
    assert status == 200 and report["kind"] == "delivery_report" and report["source"] == "push", report
    assert report["related"] == {"email_id": sent["id"], "message_id": message["id"]}

    # A later report that says the opposite: an event on the message, never a step back.
    status, later = tenant.api.post_raw("/v1/inbound/raw", _rfc3464(*args, "delivered", "2.0.0"))
    assert status == 202, later
    after = tenant.api.wait_for(sent["id"], lambda v: "email.delivered" in _events(v), timeout=_within(platform))
    assert _recipient(after)["status"] == "bounced"


def test_mail_to_a_domain_the_tenant_receives_for_is_delivered_locally_without_smtp(
    platform: LocalPlatform, api: Api
) -> None:
    colleague = f"colleague-{_tag()}@{platform.config.domain}"  # the domain of the demo tenant's mailboxes
    sent = _send(api, platform, colleague, f"local {_tag()}", "Straight into our own inbound store.")
    view = api.wait_for(sent["id"], lambda v: _recipient(v)["status"] == "delivered")
    message = _recipient(view)
    assert [a["outcome"] for a in message["attempt_log"]] == ["local"]
    assert _events(view) == ["email.queued", "email.delivered"]

    def listed() -> list[dict[str, Any]]:
        status, page = api.call("GET", f"/v1/inbound?email_id={sent['id']}")
        assert status == 200, page
        return list(page["data"])

    [copy] = wait_until(listed, _within(platform), "the local copy in GET /v1/inbound")
    assert copy["source"] == "local" and copy["to"] == [colleague], copy
    status, full = api.call("GET", f"/v1/inbound/{copy['id']}")
    assert status == 200 and "Straight into our own inbound store." in full["text"], full
    assert colleague not in platform.mailu.postfix_log.read_text(errors="replace"), "it went through Postfix"
