"""services.ingest on the fakes: reports, complaints and replies applied to the messages they are
about; idempotency; crashes at every step, more than once; local delivery end to end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from petrel import resources
from petrel.mail.raw import raw_message_id
from petrel.models.inbound import InboundKind, IngestJob, inbound_id
from petrel.models.jobs import SendJob
from petrel.models.records import EventName, Mailbox, MessageRecord, MessageStatus
from petrel.ports import MessageKey
from petrel.services.deliver import deliver_message
from petrel.services.ingest import BOUNCED, DELIVERED, EVENT, RECEIVED, SUPPRESSED, UNMATCHED, RetryLater, ingest
from tests.fakes import FakeWorld, Seeded, records

BODY = b"From: sender@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed(return_path="bounce.example.com")


def _relayed(world: FakeWorld, seeded: Seeded, recipient: str = "bob@example.org") -> MessageRecord:
    """A message sent through the fake relay: `relayed`, its VERP return path on bounce.example.com."""
    email, (message,) = records.email(seeded.tenant.tenant_id, [recipient], body=BODY, return_path=False)
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    deliver_message(world.deliver_deps(), job)
    return _current(world, message)


def _current(world: FakeWorld, message: MessageRecord) -> MessageRecord:
    found = world.messages.get_message(MessageKey.of(message))
    assert found is not None
    return found


def _header_id(world: FakeWorld, message: MessageRecord) -> str:
    email = world.messages.get_email_record(MessageKey.of(message).email)
    assert email is not None
    return email.header_message_id


def dsn(
    message: MessageRecord,
    *,
    action: str,
    status: str,
    diagnostic: str | None = None,
    verp: bool = True,
    envid: bool = True,
    original_message_id: str | None = None,
    recipient: str | None = None,
) -> bytes:
    """An RFC 3464 report about `message`, as Postfix writes one; each way of correlating optional."""
    to = f"bounces+{message.message_id}@bounce.example.com" if verp else "postmaster@bounce.example.com"
    rcpt = recipient or message.recipient
    fields = [f"Final-Recipient: rfc822; {rcpt}", f"Action: {action}", f"Status: {status}"]
    if diagnostic:
        fields.append(f"Diagnostic-Code: smtp; {diagnostic}")
    fields.append("Remote-MTA: dns; mx.example.org")
    envelope = f"Original-Envelope-Id: {message.message_id}\r\n" if envid else ""
    original = f"Message-ID: {original_message_id}\r\n" if original_message_id else ""
    return (
        "From: MAILER-DAEMON@mail.example.com (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <report-{message.message_id}-{action}-{status}@mail.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nThis is the mail system.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mail.example.com\r\n{envelope}\r\n" + "\r\n".join(fields) + "\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: sender@example.com\r\nSubject: hi\r\n{original}"
        "\r\n--B--\r\n"
    ).encode()


def arf(message: MessageRecord, header_message_id: str) -> bytes:
    return (
        "From: feedback@provider.example\r\nTo: abuse@example.com\r\nSubject: complaint\r\n"
        "Message-ID: <arf-1@provider.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
        "\r\n--F\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "\r\n--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: test/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {message.recipient}\r\n"
        "\r\n--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: sender@example.com\r\nTo: {message.recipient}\r\nMessage-ID: {header_message_id}\r\n"
        "Subject: hi\r\n\r\nhello\r\n"
        "\r\n--F--\r\n"
    ).encode()


def reply(message: MessageRecord, header_message_id: str, *, auto: bool = False) -> bytes:
    extra = "Auto-Submitted: auto-replied\r\n" if auto else ""
    body = "I am away until Monday." if auto else "Thanks, that works.\r\n\r\nOn Monday, sender wrote:\r\n> hello"
    return (
        f"From: {message.recipient}\r\nTo: sender@example.com\r\nSubject: Re: hi\r\n"
        f"Message-ID: <reply-{auto}@example.org>\r\nIn-Reply-To: {header_message_id}\r\n"
        f"References: {header_message_id}\r\n{extra}\r\n{body}\r\n"
    ).encode()


def _job(world: FakeWorld, seeded: Seeded, raw: bytes, **fields: Any) -> IngestJob:
    """The raw message in the bucket and its job, as the poller or POST /v1/inbound/raw make them."""
    tenant = seeded.tenant.tenant_id
    found = inbound_id(tenant, raw_message_id(raw), raw)
    key = resources.inbound_raw_key(tenant, found)
    world.blobs.put(key, raw)
    values: dict[str, Any] = {"source": "push", "received_at": world.clock.now()} | fields
    return IngestJob(tenant_id=tenant, inbound_id=found, raw_key=key, **values)


def _events(message: MessageRecord, kind: EventName) -> list[Any]:
    return [event for event in message.events if event.type is kind]


# ---------------------------------------------------------------------------------------- reports


def test_a_failed_report_bounces_the_relayed_message_and_suppresses_a_bad_mailbox(
    world: FakeWorld, seeded: Seeded
) -> None:
    message = _relayed(world, seeded)
    raw = dsn(message, action="failed", status="5.1.1", diagnostic="550 5.1.1 <bob@example.org>: User unknown")

    done = ingest(world.ingest_deps(), _job(world, seeded, raw))

    assert done.outcome == BOUNCED and done.created
    current = _current(world, message)
    assert current.status is MessageStatus.BOUNCED and current.bounce_class == "hard"
    [event] = _events(current, EventName.BOUNCED)
    assert event.reply is not None and event.reply.code == 550 and event.reply.enhanced == "5.1.1"
    suppression = world.suppressions.get(seeded.tenant.tenant_id, "bob@example.org")
    assert suppression is not None and suppression.reason == "hard-bounce"
    assert suppression.message_id == message.message_id
    assert suppression.detail == "550 5.1.1 <bob@example.org>: User unknown"
    record = done.record
    assert record.kind is InboundKind.DELIVERY_REPORT and record.outcome == BOUNCED
    assert record.related is not None and record.related.message_id == message.message_id
    assert record.report is not None and record.report.status == "5.1.1" and record.report.action == "failed"
    assert record.report.final_recipient == "bob@example.org"
    assert record.report.remote_mta == "mx.example.org"


@pytest.mark.parametrize(
    ("correlate", "kwargs"),
    [
        ("verp only", {"envid": False}),
        ("envid only", {"verp": False}),
        ("enclosed Message-ID only", {"verp": False, "envid": False}),
    ],
)
def test_each_way_of_correlating_finds_the_message(
    world: FakeWorld, seeded: Seeded, correlate: str, kwargs: dict[str, Any]
) -> None:
    message = _relayed(world, seeded)
    raw = dsn(message, action="delivered", status="2.0.0", original_message_id=_header_id(world, message), **kwargs)

    done = ingest(world.ingest_deps(), _job(world, seeded, raw))

    assert done.outcome == DELIVERED, correlate
    assert _current(world, message).status is MessageStatus.DELIVERED


def test_a_delivered_report_then_a_late_failure_keeps_delivered(world: FakeWorld, seeded: Seeded) -> None:
    message = _relayed(world, seeded)
    ingest(world.ingest_deps(), _job(world, seeded, dsn(message, action="delivered", status="2.0.0")))
    world.clock.advance(minutes=5)

    late = ingest(world.ingest_deps(), _job(world, seeded, dsn(message, action="failed", status="5.2.2")))

    assert late.outcome == EVENT
    current = _current(world, message)
    assert current.status is MessageStatus.DELIVERED
    assert len(_events(current, EventName.DELIVERED)) == 1 and len(_events(current, EventName.BOUNCED)) == 1


def test_relayed_action_means_delivered_and_a_delay_is_an_event(world: FakeWorld, seeded: Seeded) -> None:
    message = _relayed(world, seeded)
    delayed = ingest(world.ingest_deps(), _job(world, seeded, dsn(message, action="delayed", status="4.4.1")))
    assert delayed.outcome == EVENT and _current(world, message).status is MessageStatus.RELAYED
    assert len(_events(_current(world, message), EventName.DEFERRED)) == 1

    done = ingest(world.ingest_deps(), _job(world, seeded, dsn(message, action="relayed", status="2.0.0")))
    assert done.outcome == DELIVERED and _current(world, message).status is MessageStatus.DELIVERED


def test_a_report_for_a_message_still_sending_waits_then_becomes_an_event(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"], body=BODY)
    world.messages.create_email(email, [message], 0)
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=0, lease_until=10**10)
    job = _job(world, seeded, dsn(message, action="delivered", status="2.0.0"))

    with pytest.raises(RetryLater):
        ingest(world.ingest_deps(), job)
    assert world.inbound.get_inbound(job.tenant_id, job.inbound_id) is not None  # stored, not applied

    done = ingest(world.ingest_deps(), job, last_receive=True)
    assert done.outcome == EVENT
    current = _current(world, message)
    assert current.status is MessageStatus.SENDING and len(_events(current, EventName.DELIVERED)) == 1


def test_a_report_about_nothing_petrel_sent_is_stored_and_listed(world: FakeWorld, seeded: Seeded) -> None:
    stranger = _relayed(world, seeded).model_copy(update={"message_id": "msg_01J0000000000000000000000Z"})
    raw = dsn(stranger, action="failed", status="5.1.1")

    done = ingest(world.ingest_deps(), _job(world, seeded, raw))

    assert done.outcome == UNMATCHED and done.record.related is None
    page = world.inbound.list_inbound(seeded.tenant.tenant_id, kind=None, email_id=None, limit=10, cursor=None)
    assert [r.inbound_id for r in page.records] == [done.record.inbound_id]


def test_a_report_on_two_recipients_moves_both(world: FakeWorld, seeded: Seeded) -> None:
    email, messages = records.email(seeded.tenant.tenant_id, ["a@example.org", "b@example.org"], body=BODY)
    world.messages.create_email(email, messages, 0)
    for message in messages:
        job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
        deliver_message(world.deliver_deps(), job)
    a, b = messages
    raw = dsn(a, action="failed", status="5.1.1", verp=False, envid=False, original_message_id=email.header_message_id)
    raw = raw.replace(
        b"Remote-MTA: dns; mx.example.org\r\n",
        b"Remote-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: delivered\r\n"
        b"Status: 2.0.0\r\n",
    )

    done = ingest(world.ingest_deps(), _job(world, seeded, raw))

    assert done.record.reports == 2 and done.outcome == BOUNCED
    assert _current(world, a).status is MessageStatus.BOUNCED
    assert _current(world, b).status is MessageStatus.DELIVERED


# ------------------------------------------------------------------------- complaints and replies


def test_a_complaint_suppresses_the_complainant(world: FakeWorld, seeded: Seeded) -> None:
    message = _relayed(world, seeded)

    done = ingest(world.ingest_deps(), _job(world, seeded, arf(message, _header_id(world, message))))

    assert done.record.kind is InboundKind.COMPLAINT and done.outcome == SUPPRESSED
    current = _current(world, message)
    assert current.status is MessageStatus.RELAYED and len(_events(current, EventName.COMPLAINED)) == 1
    suppression = world.suppressions.get(seeded.tenant.tenant_id, message.recipient)
    assert suppression is not None and suppression.reason == "complaint"


def test_a_reply_is_an_event_with_its_own_text(world: FakeWorld, seeded: Seeded) -> None:
    message = _relayed(world, seeded)

    done = ingest(world.ingest_deps(), _job(world, seeded, reply(message, _header_id(world, message))))

    assert done.record.kind is InboundKind.REPLY and done.outcome == EVENT
    [event] = _events(_current(world, message), EventName.REPLIED)
    assert event.detail == f"inbound {done.record.inbound_id}"
    content = world.inbound.get_content(seeded.tenant.tenant_id, done.record.inbound_id)
    assert content is not None and content.reply_text is not None
    assert "Thanks, that works." in content.reply_text and "hello" not in content.reply_text


def test_an_automatic_reply_is_an_event(world: FakeWorld, seeded: Seeded) -> None:
    message = _relayed(world, seeded)

    done = ingest(world.ingest_deps(), _job(world, seeded, reply(message, _header_id(world, message), auto=True)))

    assert done.record.kind is InboundKind.AUTO_REPLY and done.outcome == EVENT
    assert len(_events(_current(world, message), EventName.AUTO_REPLIED)) == 1
    assert _current(world, message).status is MessageStatus.RELAYED


def test_other_mail_is_received_and_malformed_mail_is_kept_raw(world: FakeWorld, seeded: Seeded) -> None:
    plain = b"From: someone@example.net\r\nTo: sales@example.com\r\nSubject: hello\r\n\r\nA question.\r\n"
    done = ingest(world.ingest_deps(), _job(world, seeded, plain))
    assert done.record.kind is InboundKind.MESSAGE and done.outcome == RECEIVED and done.record.parse_error is None

    broken = (
        b'From: x@example.net\r\nSubject: \xff\xfe broken\r\nContent-Type: multipart/mixed; boundary="Q"\r\n\r\n'
        b"--Q\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\n\xe9t\xe9\r\n"
    )
    kept = ingest(world.ingest_deps(), _job(world, seeded, broken))
    assert kept.record.parse_error and kept.record.kind is InboundKind.MESSAGE
    assert world.blobs.get(kept.record.raw_key) == broken


# ------------------------------------------------------------------------------ idempotency, crashes


class Crash(Exception):
    """A crash injected into a port call."""


@dataclasses.dataclass
class Crashing:
    """Wraps a port: the first `times` calls of `method` raise Crash, before (or after) doing the work."""

    inner: Any
    method: str
    times: int
    after: bool = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.times > 0:
                self.times -= 1
                if self.after:
                    attribute(*args, **kwargs)
                raise Crash(f"{name} crashed")
            return attribute(*args, **kwargs)

        return call


STEPS = [
    ("blobs", "get", False),
    ("blobs", "put", True),  # an attachment stored, then the crash
    ("inbound", "create_inbound", False),
    ("inbound", "create_inbound", True),  # the record stored, then the crash
    ("messages", "transition", False),
    ("messages", "transition", True),  # bounced, then the crash
    ("suppressions", "add", True),
    ("inbound", "set_outcome", False),
    ("inbound", "set_outcome", True),
]


@pytest.mark.parametrize(("port", "method", "after"), STEPS, ids=str)
def test_crashes_at_every_step_twice_end_in_one_record_one_bounce_one_suppression(
    world: FakeWorld, seeded: Seeded, port: str, method: str, after: bool
) -> None:
    message = _relayed(world, seeded)
    raw = dsn(message, action="failed", status="5.1.1", diagnostic="550 5.1.1 user unknown")
    raw = raw.replace(b"--B--", b'--B\r\nContent-Type: application/pdf; name="a.pdf"\r\n\r\n%PDF\r\n--B--')
    job = _job(world, seeded, raw)
    deps = world.ingest_deps()
    deps = dataclasses.replace(deps, **{port: Crashing(getattr(deps, port), method, times=2, after=after)})

    crashes = 0  # a crash after the work is done is met once: the next run finds the work done
    for _ in range(5):
        try:
            done = ingest(deps, job)
            break
        except Crash:
            crashes += 1
    else:
        pytest.fail("ingest never finished")
    # and once more, as a redelivered job after success would
    again = ingest(deps, job)

    assert crashes >= 1 and again.outcome == done.outcome == BOUNCED and not again.created
    assert len(world.inbound.records) == 1
    record = world.inbound.get_inbound(job.tenant_id, job.inbound_id)
    assert record is not None and record.outcome == BOUNCED and len(record.attachments) >= 1
    current = _current(world, message)
    assert current.status is MessageStatus.BOUNCED and len(_events(current, EventName.BOUNCED)) == 1
    page = world.suppressions.list(seeded.tenant.tenant_id, limit=10, cursor=None)
    assert [s.email for s in page.suppressions] == [message.recipient]


def test_the_same_bytes_pushed_and_polled_are_one_record(world: FakeWorld, seeded: Seeded) -> None:
    message = _relayed(world, seeded)
    raw = reply(message, _header_id(world, message))
    pushed = _job(world, seeded, raw)
    polled = _job(world, seeded, raw, source="imap", mailbox_id="mbx_1", folder="INBOX", uid=7)

    first, second = ingest(world.ingest_deps(), pushed), ingest(world.ingest_deps(), polled)

    assert first.record.inbound_id == second.record.inbound_id and not second.created
    assert len(world.inbound.records) == 1 and len(_events(_current(world, message), EventName.REPLIED)) == 1


# ---------------------------------------------------------------------------------- local delivery


def _mailbox(seeded: Seeded, address: str) -> Mailbox:
    return Mailbox(
        tenant_id=seeded.tenant.tenant_id,
        mailbox_id="mbx_local",
        address=address,
        host="mail.example.com",
        port=993,
        username=address,
        secret_name="petrel-test/tenants/x/imap/mbx_local",
        created_at=records.DEFAULT_START,
    )


def _send(world: FakeWorld, seeded: Seeded, recipient: str) -> tuple[MessageRecord, Callable[[], Any]]:
    email, (message,) = records.email(seeded.tenant.tenant_id, [recipient], body=BODY, return_path=False)
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    return message, lambda: deliver_message(world.deliver_deps(), job)


def test_a_recipient_on_a_domain_the_tenant_receives_is_delivered_locally(world: FakeWorld, seeded: Seeded) -> None:
    world.mailboxes.create_mailbox(_mailbox(seeded, "support@example.com"))
    message, send = _send(world, seeded, "Sales@Example.com")

    delivery = send()

    assert delivery.status is MessageStatus.DELIVERED and world.relay.calls == []
    current = _current(world, message)
    assert current.status is MessageStatus.DELIVERED and current.attempts[0].outcome == "local"
    [job] = world.ingest_queue.jobs
    assert job.source == "local" and job.local_message_id == message.message_id and job.mailbox_id == "mbx_local"
    raw = world.blobs.get(job.raw_key)
    assert raw.startswith(b"Return-Path: <bounces+" + message.message_id.encode() + b"@bounce.example.com>\r\n")

    done = ingest(world.ingest_deps(), job)
    assert done.outcome == RECEIVED and done.record.source == "local" and done.record.mailbox == "support@example.com"
    assert done.record.related is not None and done.record.related.message_id == message.message_id


def test_a_crash_after_queueing_a_local_copy_delivers_it_once(world: FakeWorld, seeded: Seeded) -> None:
    world.mailboxes.create_mailbox(_mailbox(seeded, "support@example.com"))
    message, _ = _send(world, seeded, "sales@example.com")
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    deps = world.deliver_deps(lease_seconds=60)
    crashing = dataclasses.replace(deps, messages=Crashing(deps.messages, "transition", times=2))

    for _ in range(2):  # the copy is queued, then the worker dies before recording; its lease expires
        with pytest.raises(Crash):
            deliver_message(crashing, job)
        world.clock.advance(minutes=2)
    deliver_message(crashing, job)

    assert _current(world, message).status is MessageStatus.DELIVERED
    assert len({queued.inbound_id for queued in world.ingest_queue.jobs}) == 1
    for queued in world.ingest_queue.jobs:
        ingest(world.ingest_deps(), queued)
    assert len(world.inbound.records) == 1


def test_a_disabled_mailbox_or_another_domain_is_relayed(world: FakeWorld, seeded: Seeded) -> None:
    world.mailboxes.create_mailbox(_mailbox(seeded, "support@example.com").model_copy(update={"enabled": False}))
    _, send = _send(world, seeded, "sales@example.com")
    assert send().status is MessageStatus.RELAYED and world.ingest_queue.jobs == []


def test_the_record_stays_small_whatever_the_headers_say(world: FakeWorld, seeded: Seeded) -> None:
    many = ", ".join(f"r{n}@example.net" for n in range(2_000))
    raw = f"From: a@example.net\r\nTo: {many}\r\nSubject: {'s' * 50_000}\r\n\r\nbody\r\n".encode()

    record = ingest(world.ingest_deps(), _job(world, seeded, raw)).record

    assert len(record.to) == 50 and record.subject is not None and len(record.subject) == 998
    assert len(record.model_dump_json()) < 64_000
