"""SmtplibRelay's pooled, pipelined sessions against the real Postfix of the MailU stand-in (which offers
PIPELINING), through to Dovecot's mailbox.

Invariants: threads relaying to one server never hold more sessions to it than its concurrency (counted
from Postfix's own log), and every message arrives in the mailbox exactly once, intact. (Sessions the
server drops while idle are tested against aiosmtpd, in test_smtp_relay_pool.py: a Postfix that is
restarted, or whose smtpd is killed, under an open session cannot take new ones at once: the old smtpd
keeps the listening socket until its session times out, and a killed one throttles the service.)
"""

from __future__ import annotations

import email
import email.policy
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from local.mailu import MailuStandIn
from petrel.adapters.smtp import SmtplibRelay
from petrel.mail.smtp_reply import Stage
from petrel.models.records import ServerShaping, SmtpSecurity, SmtpServer
from petrel.ports import Envelope
from tests.integration.standin import running_standin

pytestmark = pytest.mark.integration

INBOX = "pool@recipient.test"
INBOX_PASSWORD = "inbox-secret-pool"
RELAY = "relay-pool@petrel.test"
RELAY_PASSWORD = "relay-secret-pool"
CONCURRENCY = 3


@pytest.fixture(scope="module")
def mailu() -> Iterator[MailuStandIn]:
    with running_standin("petrel-pool-test-", {INBOX: INBOX_PASSWORD, RELAY: RELAY_PASSWORD}) as standin:
        yield standin


@pytest.fixture
def relay() -> Iterator[SmtplibRelay]:
    relay = SmtplibRelay(timeout=20, transaction_seconds=60)
    yield relay
    relay.close()


def _server(mailu: MailuStandIn) -> SmtpServer:
    return SmtpServer(
        tenant_id="tn_pool",
        server_id="srv_pool",
        host=mailu.host,
        port=mailu.submission_port,
        security=SmtpSecurity.STARTTLS,
        username=RELAY,
        secret_name="unused",
        ca_bundle=mailu.ca_pem,
        created_at=datetime.now(UTC),
        shaping=ServerShaping(concurrency=CONCURRENCY),
    )


def _send(relay: SmtplibRelay, server: SmtpServer, subject: str) -> int:
    data = (
        f"From: {RELAY}\r\nTo: {INBOX}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@petrel.test>\r\n\r\n"
        f"body of {subject}\r\n.a line with a leading dot\r\n"
    ).encode()
    envelope = Envelope(sender=RELAY, recipient=INBOX, envid=uuid.uuid4().hex)
    reply = relay.relay(server, RELAY_PASSWORD, envelope, data)
    assert reply.stage is Stage.DATA, reply
    return reply.code


def _arrived(mailu: MailuStandIn, subjects: list[str], timeout: float = 30.0) -> Counter[str]:
    """How many times each subject is in the mailbox, once all have arrived (and bodies intact)."""
    deadline = time.monotonic() + timeout
    while True:
        counts: Counter[str] = Counter()
        for raw in mailu.fetch_all(INBOX, INBOX_PASSWORD):
            message = email.message_from_bytes(raw, policy=email.policy.default)
            subject = str(message["Subject"])
            if subject in subjects:
                assert raw.rstrip().endswith(f"body of {subject}\r\n.a line with a leading dot".encode()), raw
                counts[subject] += 1
        if set(counts) == set(subjects):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"arrived {sorted(counts)} of {subjects}\n{mailu.log_text(tail=40)}")
        time.sleep(0.2)


def _submission_connects(mailu: MailuStandIn, since: int) -> int:
    """Sessions Postfix's submission service accepted, from the log's byte offset `since`."""
    text = mailu.postfix_log.read_bytes()[since:].decode(errors="replace")
    return len(re.findall(r"/submission/smtpd\[\d+\]: connect from", text))


def test_threads_share_at_most_k_sessions_and_every_message_arrives_once(
    mailu: MailuStandIn, relay: SmtplibRelay
) -> None:
    server = _server(mailu)
    tag = uuid.uuid4().hex[:8]
    subjects = [f"pool {tag} {i}" for i in range(24)]
    since = mailu.postfix_log.stat().st_size

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda s: _send(relay, server, s), subjects))

    assert codes == [250] * len(subjects)
    assert _arrived(mailu, subjects) == Counter({s: 1 for s in subjects})
    assert 1 <= _submission_connects(mailu, since) <= CONCURRENCY
