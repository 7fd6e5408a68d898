"""Integration tests of the local MailU stand-in (real Postfix + Dovecot, see local/mailu.py)."""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import secrets
import shutil
import smtplib
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from local.mailu import MailuStandIn, find_processes
from local.nexthop import RefusingNextHop
from petrel.mail.reports import Action, DeliveryReport, DeliveryReports, ReportFormat, classify_bytes
from tests.integration.standin import running_standin
from tests.support_mail import mail_workdir

pytestmark = pytest.mark.integration

# An outside recipient the stand-in also hosts (as in the local stack: not the tenant's own domain).
INBOX = "inbox@recipient.test"
INBOX_PASSWORD = "inbox-secret-1"
RELAY = "relay@petrel.test"
RELAY_PASSWORD = "relay-secret-2"
# Where VERP bounces (bounces+<message id>@petrel.test) and delivery reports land.
BOUNCES = "bounces@petrel.test"
BOUNCES_PASSWORD = "bounces-secret-3"
# A domain the stand-in routes to a next hop that refuses every recipient.
REFUSING_DOMAIN = "refuse.test"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@pytest.fixture(scope="module")
def mailu() -> Iterator[MailuStandIn]:
    with running_standin(
        "petrel-mailu-test-", {INBOX: INBOX_PASSWORD, RELAY: RELAY_PASSWORD, BOUNCES: BOUNCES_PASSWORD}
    ) as standin:
        yield standin


@pytest.fixture(scope="module")
def next_hop(mailu: MailuStandIn) -> Iterator[RefusingNextHop]:
    """The refusing next hop, with the stand-in routing REFUSING_DOMAIN to it."""
    with RefusingNextHop() as hop:
        mailu.route_domain(REFUSING_DOMAIN, hop.host, hop.port)
        try:
            yield hop
        finally:
            mailu.clear_route(REFUSING_DOMAIN)


def _message(subject: str, to: str = INBOX, sender: str = RELAY) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@petrel.test>"
    msg.set_content("Hello from the Petrel stand-in tests.\n")
    return msg


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _find(messages: list[bytes], subject: str) -> Message:
    for raw in messages:
        parsed = _parse(raw)
        if parsed["Subject"] == subject:
            return parsed
    raise AssertionError(f"no message with subject {subject!r} among {len(messages)}")


def _submission(mailu: MailuStandIn) -> smtplib.SMTP:
    client = smtplib.SMTP(mailu.host, mailu.submission_port, timeout=20)
    client.ehlo("client.petrel.test")
    client.starttls(context=mailu.ssl_context())
    client.ehlo("client.petrel.test")
    return client


def test_submission_starttls_auth_dsn_and_imaps_readback(mailu: MailuStandIn) -> None:
    subject = f"starttls {uuid.uuid4().hex}"
    inbox_before = len(mailu.fetch_all(INBOX, INBOX_PASSWORD))
    relay_before = len(mailu.fetch_all(RELAY, RELAY_PASSWORD))
    with _submission(mailu) as client:
        assert client.has_extn("dsn")
        assert client.has_extn("auth")
        client.login(RELAY, RELAY_PASSWORD)
        refused = client.sendmail(
            RELAY,
            [INBOX],
            _message(subject).as_bytes(),
            mail_options=["RET=HDRS", "ENVID=abc"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY"],
        )
        assert refused == {}

    delivered = _find(mailu.wait_for_messages(INBOX, INBOX_PASSWORD, inbox_before + 1), subject)
    assert delivered["Return-Path"] == f"<{RELAY}>"

    # NOTIFY=SUCCESS: Postfix sends a real delivery report back to the envelope sender.
    reports = mailu.wait_for_messages(RELAY, RELAY_PASSWORD, relay_before + 1)
    report = _parse(reports[-1])
    assert report.get_content_type() == "multipart/report"
    text = reports[-1].decode(errors="replace")
    assert "Original-Envelope-Id: abc" in text
    assert "Action: delivered" in text


def test_implicit_tls_submission(mailu: MailuStandIn) -> None:
    subject = f"smtps {uuid.uuid4().hex}"
    before = len(mailu.fetch_all(INBOX, INBOX_PASSWORD))
    with smtplib.SMTP_SSL(mailu.host, mailu.smtps_port, context=mailu.ssl_context(), timeout=20) as client:
        client.ehlo("client.petrel.test")
        assert client.has_extn("dsn")
        client.login(RELAY, RELAY_PASSWORD)
        client.send_message(_message(subject), from_addr=RELAY, to_addrs=[INBOX])
    delivered = _find(mailu.wait_for_messages(INBOX, INBOX_PASSWORD, before + 1), subject)
    assert delivered["Return-Path"] == f"<{RELAY}>"


def test_auth_is_not_offered_before_starttls(mailu: MailuStandIn) -> None:
    with smtplib.SMTP(mailu.host, mailu.submission_port, timeout=20) as client:
        client.ehlo("client.petrel.test")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")


def test_wrong_password_is_535(mailu: MailuStandIn) -> None:
    with _submission(mailu) as client, pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        client.login(RELAY, "not-the-password")
    assert caught.value.smtp_code == 535


def test_plus_address_is_delivered_to_the_base_mailbox(mailu: MailuStandIn) -> None:
    subject = f"plus {uuid.uuid4().hex}"
    before = len(mailu.fetch_all(INBOX, INBOX_PASSWORD))
    with _submission(mailu) as client:
        client.login(RELAY, RELAY_PASSWORD)
        client.sendmail(
            RELAY, ["inbox+tag@recipient.test"], _message(subject, to="inbox+tag@recipient.test").as_bytes()
        )
    _find(mailu.wait_for_messages(INBOX, INBOX_PASSWORD, before + 1), subject)


def test_recipient_rules_give_real_replies(mailu: MailuStandIn) -> None:
    target = "inbox+rules@recipient.test"
    try:
        mailu.set_recipient_rule(target, f"550 5.1.1 <{target}>: Recipient address rejected: User unknown")
        with _submission(mailu) as client:
            client.login(RELAY, RELAY_PASSWORD)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                client.sendmail(RELAY, [target], _message("rejected", to=target).as_bytes())
        code, text = refused.value.recipients[target]
        assert code == 550
        assert b"5.1.1" in text

        mailu.set_recipient_rule(target, "451 4.3.0 Try again later")
        with _submission(mailu) as client:
            client.login(RELAY, RELAY_PASSWORD)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as deferred:
                client.sendmail(RELAY, [target], _message("deferred", to=target).as_bytes())
        code, text = deferred.value.recipients[target]
        assert code == 451
        assert b"4.3.0" in text

        mailu.clear_recipient_rule(target)
        with _submission(mailu) as client:
            client.login(RELAY, RELAY_PASSWORD)
            assert client.sendmail(RELAY, [target], _message("accepted", to=target).as_bytes()) == {}
    finally:
        mailu.clear_rules()


def test_non_local_recipient_is_accepted_and_stays_queued(mailu: MailuStandIn) -> None:
    recipient = f"someone-{uuid.uuid4().hex[:8]}@example.com"
    with _submission(mailu) as client:
        client.login(RELAY, RELAY_PASSWORD)
        assert client.sendmail(RELAY, [recipient], _message("outbound", to=recipient).as_bytes()) == {}
    entries = mailu.wait_for_queue(1)
    queued = [entry for entry in entries if any(r["address"] == recipient for r in entry["recipients"])]
    assert len(queued) == 1
    assert queued[0]["queue_id"] in mailu.queue_ids()
    assert queued[0]["sender"] == RELAY
    mailu.clear_queue()


def _message_id() -> str:
    """A Petrel-shaped message id (`msg_` + 26 Crockford base32 characters), as VERP addresses carry."""
    return "msg_" + "".join(secrets.choice(_CROCKFORD) for _ in range(26))


def _relay_with_verp(mailu: MailuStandIn, recipient: str, message_id: str, notify: str) -> EmailMessage:
    """Relay as Petrel does: AUTH, VERP envelope sender, ENVID = the message id, NOTIFY as given."""
    message = _message(f"verp {message_id}", to=recipient, sender="demo@petrel.test")
    with _submission(mailu) as client:
        client.login(RELAY, RELAY_PASSWORD)
        refused = client.sendmail(
            f"bounces+{message_id}@petrel.test",
            [recipient],
            message.as_bytes(),
            mail_options=["RET=HDRS", f"ENVID={message_id}"],
            rcpt_options=[f"NOTIFY={notify}"],
        )
    assert refused == {}, "the stand-in takes the recipient first (250); any refusal comes later, as a report"
    return message


def _wait_for_report(mailu: MailuStandIn, envelope_id: str, timeout: float = 20.0) -> tuple[bytes, DeliveryReports]:
    """The report in the bounce mailbox whose Original-Envelope-Id is ``envelope_id``, as raw bytes and as
    petrel.mail.reports reads it."""
    deadline = time.monotonic() + timeout
    while True:
        for raw in mailu.fetch_all(BOUNCES, BOUNCES_PASSWORD):
            found = classify_bytes(raw)
            if isinstance(found, DeliveryReports) and found.reports[0].original_envelope_id == envelope_id:
                return raw, found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no report for {envelope_id} in {BOUNCES} after {timeout}s\n{mailu.log_text(tail=30)}"
            )
        time.sleep(0.1)


def _only(found: DeliveryReports) -> DeliveryReport:
    assert found.format is ReportFormat.RFC3464
    assert len(found.reports) == 1
    return found.reports[0]


def test_refusing_next_hop_makes_postfix_bounce_to_the_verp_address(
    mailu: MailuStandIn, next_hop: RefusingNextHop
) -> None:
    message_id = _message_id()
    recipient = f"nobody-{uuid.uuid4().hex[:8]}@{REFUSING_DOMAIN}"
    sent = _relay_with_verp(mailu, recipient, message_id, "FAILURE")

    raw, found = _wait_for_report(mailu, message_id)
    assert recipient in next_hop.refused
    parsed = _parse(raw)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    # Delivered by the stand-in's virtual agent to bounces@ through plus-addressing.
    assert parsed["Delivered-To"].lower() == f"bounces+{message_id}@petrel.test".lower()
    report = _only(found)
    assert report.action is Action.FAILED
    assert report.status == "5.1.1"
    assert report.smtp_code == 550
    assert report.diagnostic is not None
    assert report.diagnostic.startswith(f"550 5.1.1 <{recipient}>: Recipient address rejected")
    assert report.recipient == recipient
    assert report.original_envelope_id == message_id
    assert report.verp_message_id == message_id
    assert report.original_message_id == sent["Message-ID"]
    assert report.remote_mta == "127.0.0.1"


def test_notify_success_gives_a_delivered_report(mailu: MailuStandIn) -> None:
    message_id = _message_id()
    before = len(mailu.fetch_all(INBOX, INBOX_PASSWORD))
    sent = _relay_with_verp(mailu, INBOX, message_id, "SUCCESS,FAILURE,DELAY")

    delivered = _find(mailu.wait_for_messages(INBOX, INBOX_PASSWORD, before + 1), sent["Subject"])
    assert delivered["Return-Path"] == f"<bounces+{message_id}@petrel.test>"
    _, found = _wait_for_report(mailu, message_id)
    report = _only(found)
    assert report.action is Action.DELIVERED
    assert report.status == "2.0.0"
    assert report.recipient == INBOX
    assert report.verp_message_id == message_id
    assert report.original_message_id == sent["Message-ID"]


def test_a_domain_is_either_delivered_here_or_routed_away(mailu: MailuStandIn, next_hop: RefusingNextHop) -> None:
    with pytest.raises(ValueError, match="delivered here"):
        mailu.route_domain("petrel.test", next_hop.host, next_hop.port)
    with pytest.raises(ValueError, match="routed"):
        mailu.add_domain(REFUSING_DOMAIN)


def test_users_added_and_changed_while_running_take_effect_at_once(mailu: MailuStandIn) -> None:
    late = f"late-{uuid.uuid4().hex[:8]}@petrel.test"
    mailu.add_user(late, "first-password")
    with _submission(mailu) as client:
        client.login(late, "first-password")
        assert client.sendmail(late, [late], _message("to myself", to=late, sender=late).as_bytes()) == {}
    assert len(mailu.wait_for_messages(late, "first-password", 1)) == 1

    mailu.set_password(late, "second-password")
    assert len(mailu.fetch_all(late, "second-password")) == 1
    with pytest.raises(imaplib.IMAP4.error):
        mailu.fetch_all(late, "first-password")


def test_plain_imap_login_on_loopback(mailu: MailuStandIn) -> None:
    with imaplib.IMAP4(mailu.host, mailu.imap_port, timeout=20) as imap:
        status, _ = imap.login(INBOX, INBOX_PASSWORD)
        assert status == "OK"


def test_second_instance_runs_alongside_and_stop_leaves_nothing(mailu: MailuStandIn) -> None:
    workdir = mail_workdir("petrel-mailu-test2-")
    other = MailuStandIn(workdir, domain="other.test")
    try:
        other.add_user("x@other.test", "pw")
        other.start()
        assert other.is_running() and mailu.is_running()
        pids = find_processes(workdir)
        assert pids, "the running stand-in should own some processes"
        assert other.fetch_all("x@other.test", "pw") == []
        other.stop()
        other.stop()  # idempotent
        assert not other.is_running()
        assert find_processes(workdir) == []
        for pid in pids:
            assert not _alive_non_zombie(pid), f"process {pid} survived stop()"
        assert not _processes_mentioning(workdir)
        assert mailu.is_running(), "stopping one instance must not touch another"
    finally:
        other.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _alive_non_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _processes_mentioning(workdir: Path) -> list[str]:
    needle = str(workdir).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        words = cmdline.replace(b"\0", b" ")
        if needle in cmdline and (b"postfix" in words or b"dovecot" in words or b"master" in words):
            found.append(f"{entry}: {words.decode(errors='replace')}")
    return found
