"""An email posted over HTTP travels through the queue, the worker and real Postfix into a
Dovecot mailbox; every recipient's message ends in the state its reply calls for.

A message the stand-in takes is `relayed`; Postfix's success report then moves it on to `delivered`
(tests/e2e/test_ingest.py follows that step): these tests accept either (`SENT`)."""

from __future__ import annotations

import base64
import secrets
import time
import uuid

import pytest

from local.platform import LocalPlatform
from petrel.services import tenants as admin
from tests.e2e.support.api import Api, mailbox_of, read_mailbox
from tests.e2e.support.tenants import admin_deps
from tests.e2e.support.tracking import SENT

pytestmark = pytest.mark.e2e


def _status(view: dict, index: int = 0) -> str:
    return str(view["recipients"][index]["status"])


def _by_email(view: dict) -> dict[str, str]:
    return {str(r["email"]): str(r["status"]) for r in view["recipients"]}


def test_email_is_relayed_and_read_back_over_imap(platform: LocalPlatform, api: Api) -> None:
    box = platform.info["test_mailbox"]
    subject = f"Quarterly report ✓ {uuid.uuid4().hex[:8]}"
    attachment = secrets.token_bytes(3000)
    status, sent = api.call(
        "POST",
        "/v1/emails",
        {
            "from": f"Petrel Demo <{platform.info['from_address']}>",
            "to": [box["address"]],
            "subject": subject,
            "text": "Plain text body — with UTF-8.",
            "html": "<p>HTML <b>body</b></p>",
            "attachments": [
                {
                    "filename": "report.bin",
                    "content_type": "application/octet-stream",
                    "content": base64.b64encode(attachment).decode(),
                }
            ],
            "headers": {"X-Campaign": "q3"},
            "tags": {"kind": "report"},
        },
    )
    assert status == 202, sent
    message_id = sent["recipients"][0]["id"]

    [received] = read_mailbox(box, subject=subject)
    assert received["Subject"] == subject
    assert received["X-Campaign"] == "q3"
    assert received["Return-Path"] == f"<bounces+{message_id}@{platform.config.domain}>"
    assert received["Message-ID"].endswith(f"@{platform.config.domain}>")
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert text is not None and text.get_content().strip() == "Plain text body — with UTF-8."
    assert html is not None and "<b>body</b>" in html.get_content()
    [part] = list(received.iter_attachments())
    assert part.get_filename() == "report.bin"
    assert part.get_content() == attachment

    view = api.wait_for(sent["id"], lambda v: _status(v) in SENT)
    recipient = view["recipients"][0]
    assert recipient["attempts"] == 1
    assert recipient["attempt_log"][0]["reply"]["code"] == 250
    assert [e["type"] for e in view["events"]][:2] == ["email.queued", "email.sent"]


def test_recipient_rejected_with_550_is_bounced(platform: LocalPlatform, api: Api) -> None:
    gone = f"gone-{uuid.uuid4().hex[:6]}@{platform.config.recipient_domain}"
    platform.mailu.set_recipient_rule(gone, f"550 5.1.1 <{gone}>: Recipient address rejected: User unknown")
    try:
        status, sent = api.call(
            "POST", "/v1/emails", {"from": platform.info["from_address"], "to": gone, "subject": "bounce", "text": "x"}
        )
        assert status == 202, sent
        view = api.wait_for(sent["id"], lambda v: _status(v) == "bounced")
    finally:
        platform.mailu.clear_recipient_rule(gone)
    recipient = view["recipients"][0]
    assert recipient["bounce_class"] == "hard"
    assert recipient["last_reply"]["code"] == 550
    assert recipient["last_reply"]["enhanced"] == "5.1.1"
    assert view["events"][-1]["type"] == "email.bounced"


def test_451_is_deferred_then_relayed_when_the_server_accepts(platform: LocalPlatform, api: Api) -> None:
    address = f"later-{uuid.uuid4().hex[:6]}@{platform.config.recipient_domain}"
    password = secrets.token_urlsafe(12)
    platform.mailu.add_user(address, password)
    platform.mailu.set_recipient_rule(address, "451 4.3.0 Try again later")
    try:
        status, sent = api.call(
            "POST",
            "/v1/emails",
            {"from": platform.info["from_address"], "to": address, "subject": "later", "text": "x"},
        )
        assert status == 202, sent
        deferred = api.wait_for(sent["id"], lambda v: _status(v) == "deferred")
        assert deferred["recipients"][0]["last_reply"]["code"] == 451
    finally:
        platform.mailu.clear_recipient_rule(address)
    view = api.wait_for(sent["id"], lambda v: _status(v) in SENT)
    recipient = view["recipients"][0]
    assert recipient["attempts"] >= 2
    assert [a["reply"]["code"] for a in recipient["attempt_log"]][-1] == 250
    assert 451 in [a["reply"]["code"] for a in recipient["attempt_log"]]
    assert "email.deferred" in [e["type"] for e in view["events"]]
    assert len(read_mailbox(mailbox_of(platform.info, address, password), subject="later")) == 1


def test_wrong_smtp_password_never_loses_the_message(platform: LocalPlatform, api: Api) -> None:
    deps = admin_deps(platform)
    tenant_id, server_id = platform.info["tenant_id"], platform.info["server_id"]
    admin.set_smtp_password(deps, tenant_id, server_id, "not-the-password")
    time.sleep(platform.config.config_cache_seconds + 0.5)  # workers may hold the old one that long
    subject = f"password {uuid.uuid4().hex[:8]}"
    try:
        status, sent = api.call(
            "POST",
            "/v1/emails",
            {
                "from": platform.info["from_address"],
                "to": platform.info["test_mailbox"]["address"],
                "subject": subject,
                "text": "x",
            },
        )
        assert status == 202, sent
        deferred = api.wait_for(sent["id"], lambda v: _status(v) == "deferred")
        reply = deferred["recipients"][0]["last_reply"]
        assert reply["code"] == 535 and reply["stage"] == "auth"
    finally:
        admin.set_smtp_password(deps, tenant_id, server_id, platform.relay_password)
    api.wait_for(sent["id"], lambda v: _status(v) in SENT)
    assert len(read_mailbox(platform.info["test_mailbox"], subject=subject)) == 1


def test_several_recipients_each_get_their_own_status(platform: LocalPlatform, api: Api) -> None:
    box = platform.info["test_mailbox"]
    gone = f"nobody-{uuid.uuid4().hex[:6]}@{platform.config.recipient_domain}"
    platform.mailu.set_recipient_rule(gone, "550 5.1.1 User unknown")
    subject = f"multi {uuid.uuid4().hex[:8]}"
    try:
        status, sent = api.call(
            "POST",
            "/v1/emails",
            {
                "from": platform.info["from_address"],
                "to": box["address"],
                "bcc": [gone],
                "subject": subject,
                "text": "x",
            },
        )
        assert status == 202, sent
        view = api.wait_for(
            sent["id"], lambda v: _by_email(v).get(gone) == "bounced" and _by_email(v).get(box["address"]) in SENT
        )
    finally:
        platform.mailu.clear_recipient_rule(gone)
    assert _by_email(view)[gone] == "bounced"
    [received] = read_mailbox(box, subject=subject)
    assert received["Bcc"] is None and gone not in received.as_string()


def test_unknown_key_gets_a_problem_document(api: Api) -> None:
    status, body = Api(api.base, "ptl_not-a-real-key").call("GET", "/v1/emails")
    assert status == 401
    assert body["type"].endswith("unauthorized") and body["status"] == 401
