"""DKIM signing end to end: the send worker signs, the real Postfix of the MailU stand-in relays, the real
Dovecot stores, and `dkim.verify` checks what arrived against the keys the real Knot server serves.

Invariant: every message the worker relays from a domain Petrel signs arrives in the recipient's mailbox
with one DKIM-Signature per active key, each verifying against the DNS (Postfix's Received headers,
Dovecot's Return-Path and the IMAP round trip do not break relaxed/relaxed), also across a key rotation
with mail in flight (the retired selector stays published).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import TYPE_CHECKING

import dkim
import pytest

from local.mailu import MailuStandIn
from petrel.adapters.smtp import SmtplibRelay
from petrel.models.jobs import SendJob
from petrel.models.records import DomainKey, DomainStatus, MessageStatus, SendingDomain
from petrel.ports import MessageKey
from petrel.services.deliver import DeliverDeps, deliver_message
from tests.fakes import FakeWorld, records
from tests.fakes.clock import DEFAULT_START
from tests.integration.standin import running_standin
from tests.support_dkim import new_key, txt_value, verify_all
from tests.support_dns import dkim_dnsfunc, unique_zone

if TYPE_CHECKING:
    from local.knot import KnotServer

pytestmark = pytest.mark.integration

INBOX = "inbox@recipient.test"
INBOX_PASSWORD = "inbox-secret-dkim"
RELAY = "relay@petrel.test"
RELAY_PASSWORD = "relay-secret-dkim"
BOUNCES = "bounces@petrel.test"  # VERP return path and delivery reports
BOUNCES_PASSWORD = "bounces-secret-dkim"


@pytest.fixture(scope="module")
def mailu() -> Iterator[MailuStandIn]:
    with running_standin(
        "petrel-dkim-test-", {INBOX: INBOX_PASSWORD, RELAY: RELAY_PASSWORD, BOUNCES: BOUNCES_PASSWORD}
    ) as standin:
        yield standin


@dataclasses.dataclass
class Sender:
    """A tenant whose sending domain (a zone of its own on the Knot server) Petrel signs, relaying
    through the stand-in with the real SMTP adapter."""

    world: FakeWorld
    deps: DeliverDeps
    domain: SendingDomain
    dns: KnotServer

    @property
    def tenant_id(self) -> str:
        return self.domain.tenant_id

    def add_key(self, selector: str, **kwargs: object) -> DomainKey:
        key, _ = new_key(self.world.secrets, self.tenant_id, self.domain.domain, selector, at=DEFAULT_START, **kwargs)  # type: ignore[arg-type]
        self.dns.publish(f"{selector}._domainkey.{self.domain.domain}", "TXT", [txt_value(key)])
        return key

    def set_keys(self, *keys: DomainKey) -> None:
        self.domain = self.domain.model_copy(update={"keys": keys})
        self.world.tenants.put_domain(self.domain)

    def queue(self, subject: str) -> SendJob:
        """An email as submission stores it: a realistic multipart body, from the signed domain."""
        body = _mime(f"News <news@{self.domain.domain}>", subject)
        stored, (message,) = records.email(
            self.tenant_id, [INBOX], body=body, from_address=f"news@{self.domain.domain}"
        )
        self.world.messages.create_email(stored, [message], 0)
        return SendJob(tenant_id=self.tenant_id, email_id=message.email_id, message_id=message.message_id)

    def send(self, job: SendJob) -> None:
        delivery = deliver_message(self.deps, job)
        current = self.world.messages.get_message(MessageKey.of(job))
        assert current is not None and current.status is MessageStatus.RELAYED, (delivery, current)


def _mime(sender: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = INBOX
    msg["Subject"] = subject
    msg["Date"] = "Mon, 30 Nov 2026 12:00:00 +0000"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@petrel.test>"
    msg["List-Unsubscribe"] = "<https://petrel.test/u/1>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content("Grüße aus Petrel.\n\n" + "A line of text that goes on for a while. " * 40 + "\n")
    msg.add_alternative("<p>Grüße aus <b>Petrel</b>.</p>\n", subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def sender(mailu: MailuStandIn, dns_server: KnotServer) -> Iterator[Sender]:
    world = FakeWorld()
    zone = unique_zone("dkim")
    dns_server.add_zone(zone)
    tenant = records.tenant()
    world.tenants.put_tenant(tenant)
    domain = SendingDomain(
        tenant_id=tenant.tenant_id,
        domain=zone,
        return_path_domain="petrel.test",  # VERP reports come back to the stand-in's bounces mailbox
        created_at=DEFAULT_START,
        status=DomainStatus.VERIFIED,
    )
    world.tenants.put_domain(domain)
    server = records.server(
        tenant.tenant_id, host=mailu.host, port=mailu.submission_port, username=RELAY, ca_bundle=mailu.ca_pem
    )
    world.tenants.put_server(server)
    world.secrets.put_secret(server.secret_name, RELAY_PASSWORD)
    relay = SmtplibRelay(timeout=20, transaction_seconds=60)
    deps = dataclasses.replace(world.deliver_deps(), relay=relay)
    try:
        yield Sender(world, deps, domain, dns_server)
    finally:
        relay.close()


def _arrived(mailu: MailuStandIn, subjects: list[str], timeout: float = 30.0) -> dict[str, bytes]:
    """The raw message (as IMAP serves it) of each subject, once all have arrived."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, bytes] = {}
        for raw in mailu.fetch_all(INBOX, INBOX_PASSWORD):
            subject = str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
            if subject in subjects:
                found[subject] = raw
        if len(found) == len(subjects):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"arrived {sorted(found)} of {subjects}\n{mailu.log_text(tail=40)}")
        time.sleep(0.2)


def test_rsa_and_ed25519_signatures_survive_postfix_and_dovecot(
    mailu: MailuStandIn, dns_server: KnotServer, sender: Sender
) -> None:
    sender.set_keys(sender.add_key("rsa2026"), sender.add_key("ed2026", algorithm="ed25519"))
    subject = f"signed {uuid.uuid4().hex}"

    sender.send(sender.queue(subject))

    raw = _arrived(mailu, [subject])[subject]
    assert b"Received:" in raw  # it went through Postfix
    lookup = dkim_dnsfunc(dns_server.host, dns_server.port)
    assert dkim.verify(raw, dnsfunc=lookup)
    verdicts = verify_all(raw, lookup)
    assert [(v.algorithm, v.selector, v.domain, v.valid) for v in verdicts] == [
        ("rsa-sha256", "rsa2026", sender.domain.domain, True),
        ("ed25519-sha256", "ed2026", sender.domain.domain, True),
    ]
    # The key the DNS serves is what verifies: with the record gone the signature no longer does.
    dns_server.remove(f"rsa2026._domainkey.{sender.domain.domain}", "TXT")
    assert not dkim.verify(raw, dnsfunc=lookup)


def test_rotation_with_mail_in_flight_every_arrival_verifies(
    mailu: MailuStandIn, dns_server: KnotServer, sender: Sender
) -> None:
    """Four emails queued; two relayed with the first key; a `next` key is added and published, then
    promoted once the DNS serves it (the old one retired, still published); the other two relayed."""
    old = sender.add_key("s1")
    sender.set_keys(old)
    tag = uuid.uuid4().hex[:8]
    subjects = [f"rotation {tag} {i}" for i in range(4)]
    jobs = [sender.queue(subject) for subject in subjects]
    for job in jobs[:2]:
        sender.send(job)

    upcoming = sender.add_key("s2", state="next")
    sender.set_keys(old, upcoming)
    lookup = dkim_dnsfunc(dns_server.host, dns_server.port)
    assert lookup(f"s2._domainkey.{sender.domain.domain}") == txt_value(upcoming).encode()  # "verified"
    sender.set_keys(old.model_copy(update={"state": "retired"}), upcoming.model_copy(update={"state": "active"}))
    for job in jobs[2:]:
        sender.send(job)

    arrived = _arrived(mailu, subjects)
    selectors = []
    for subject in subjects:
        [verdict] = verify_all(arrived[subject], lookup)  # signed once, never unsigned
        assert verdict.valid and verdict.domain == sender.domain.domain, subject
        assert dkim.verify(arrived[subject], dnsfunc=lookup)
        selectors.append(verdict.selector)
    assert selectors == ["s1", "s1", "s2", "s2"]
