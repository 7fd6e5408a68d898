"""SmtpRelay contract: the fake relay (tests/fakes/smtp.py) and SmtplibRelay against a real SMTP
server (aiosmtpd, STARTTLS and AUTH on 127.0.0.1) give the same replies for the same situations.

What the worker makes of a reply is `classify` (petrel.mail.smtp_reply): each test states the
outcome too, so a fake that drifts from the real relay fails here, not in a deliver test that
trusts it. Every outcome is a value; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from local.tls import TlsFiles
from petrel.adapters.smtp import SmtplibRelay
from petrel.mail.smtp_reply import BounceClass, HardFail, Relayed, SmtpReply, SoftFail, Stage, classify
from petrel.models.records import SmtpSecurity, SmtpServer
from petrel.ports import Envelope, SmtpRelay
from tests.fakes.smtp import FakeSmtpRelay
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer, free_port

DATA = b"From: sender@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nhi\r\n"


@dataclass
class RelayBackend:
    """A relay and the server behind it, driven the same way whichever they are."""

    kind: str
    relay: SmtpRelay
    server: SmtpServer  # reachable, accepts `PASSWORD`
    unreachable: SmtpServer  # nothing listens there
    # The server answers this reply ("550 5.1.1 ...") to this recipient at RCPT or at DATA.
    refuse: Callable[[str, Stage, str], None]
    rotate_password: Callable[[str], None]  # the server accepts only this password from now on
    accepted: Callable[[], list[str]]  # the recipients whose message the server took, in order
    sessions: Callable[[], int]  # sessions that got past AUTH
    expire_idle: Callable[[], None]  # every open session has now been idle past the relay's limit


def _record(port: int, tls: TlsFiles | None, server_id: str) -> SmtpServer:
    return SmtpServer(
        tenant_id="tn_a",
        server_id=server_id,
        host="127.0.0.1",
        port=port,
        security=SmtpSecurity.STARTTLS,
        username=USERNAME,
        secret_name="unused",
        ca_bundle=tls.ca_pem if tls else None,
        created_at=datetime.now(UTC),
    )


def _fake_backend() -> RelayBackend:
    relay = FakeSmtpRelay()
    server, down = _record(587, None, "srv_fake"), _record(588, None, "srv_down")
    relay.passwords[server.server_id] = PASSWORD
    relay.unreachable.add(down.server_id)

    def refuse(recipient: str, stage: Stage, reply: str) -> None:
        code, text = reply.split(" ", 1)
        relay.script[recipient] = SmtpReply.parse(int(code), text, stage)

    def rotate(password: str) -> None:
        relay.passwords[server.server_id] = password

    return RelayBackend(
        "fake",
        relay,
        server,
        down,
        refuse,
        rotate,
        lambda: [call.envelope.recipient for call in relay.relayed],
        lambda: relay.sessions_opened,
        relay.expire_idle,
    )


class _WallClock:
    """The real relay's injected wall clock: idle time passes without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


IDLE_SECONDS = 30.0


def _real_backend(running: RunningServer, tls: TlsFiles, relay: SmtplibRelay, clock: _WallClock) -> RelayBackend:
    handler = running.handler

    def expire_idle() -> None:
        clock.now += IDLE_SECONDS + 1

    def refuse(recipient: str, stage: Stage, reply: str) -> None:
        handler.script[recipient.lower()] = (str(stage), reply)

    def rotate(password: str) -> None:
        handler.password = password

    return RelayBackend(
        "aiosmtpd",
        relay,
        _record(running.port, tls, "srv_real"),
        _record(free_port(), tls, "srv_down"),
        refuse,
        rotate,
        lambda: [rcpt for received in handler.received for rcpt in received.rcpt_to],
        lambda: sum(1 for _, ok in handler.logins if ok),
        expire_idle,
    )


@pytest.fixture(params=["fake", pytest.param("aiosmtpd", marks=pytest.mark.integration)])
def relay_backend(request: pytest.FixtureRequest) -> Iterator[RelayBackend]:
    if request.param == "fake":
        yield _fake_backend()
        return
    clock = _WallClock()
    relay = SmtplibRelay(
        timeout=5.0, transaction_seconds=30.0, local_hostname="petrel.test", idle_seconds=IDLE_SECONDS, wall_clock=clock
    )
    try:
        running, tls = request.getfixturevalue("submission_server"), request.getfixturevalue("tls_files")
        yield _real_backend(running, tls, relay, clock)
    finally:
        relay.close()


def _envelope(recipient: str) -> Envelope:
    return Envelope(sender="bounces+msg_1@bounce.example.com", recipient=recipient, envid="msg_1")


def _send(backend: RelayBackend, recipient: str, *, password: str = PASSWORD) -> SmtpReply:
    return backend.relay.relay(backend.server, password, _envelope(recipient), DATA)


def test_an_accepted_message_is_relayed_with_the_servers_250(relay_backend: RelayBackend) -> None:
    reply = _send(relay_backend, "bob@example.org")

    assert (reply.code, reply.stage, reply.enhanced) == (250, Stage.DATA, "2.0.0")
    assert classify(reply) == Relayed(reply)
    assert relay_backend.accepted() == ["bob@example.org"]


@pytest.mark.parametrize(
    ("stage", "scripted", "bounce_class", "suppress"),
    [
        (Stage.RCPT, "550 5.1.1 <nobody@example.org>: user unknown", BounceClass.HARD, True),
        (Stage.RCPT, "554 5.7.1 <nobody@example.org>: Relay access denied", BounceClass.BLOCK, False),
        (Stage.DATA, "552 5.3.4 Message size exceeds fixed limit", BounceClass.MESSAGE, False),
    ],
)
def test_a_5xx_is_a_hard_failure(
    relay_backend: RelayBackend, stage: Stage, scripted: str, bounce_class: BounceClass, suppress: bool
) -> None:
    relay_backend.refuse("nobody@example.org", stage, scripted)

    reply = _send(relay_backend, "nobody@example.org")

    assert (reply.code, reply.enhanced, reply.stage, reply.text) == (
        int(scripted[:3]),
        scripted[4:9],
        stage,
        scripted[4:],
    )
    assert classify(reply) == HardFail(reply, bounce_class, suppress)
    assert relay_backend.accepted() == []


@pytest.mark.parametrize(
    ("stage", "scripted", "retry_after"),
    [
        (Stage.RCPT, "451 4.3.0 Temporary lookup failure", None),
        (Stage.RCPT, "450 4.7.1 Greylisted, try again in 5 minutes", 300),
        (Stage.DATA, "451 4.7.1 try again in 300 seconds", 300),
    ],
)
def test_a_4xx_is_a_soft_failure(
    relay_backend: RelayBackend, stage: Stage, scripted: str, retry_after: int | None
) -> None:
    relay_backend.refuse("later@example.org", stage, scripted)

    reply = _send(relay_backend, "later@example.org")

    assert (reply.code, reply.stage) == (int(scripted[:3]), stage)
    assert classify(reply) == SoftFail(reply, "temporary-failure", retry_after)
    assert relay_backend.accepted() == []


def test_a_server_that_is_down_is_a_soft_failure_value(relay_backend: RelayBackend) -> None:
    reply = relay_backend.relay.relay(relay_backend.unreachable, PASSWORD, _envelope("bob@example.org"), DATA)

    assert reply == SmtpReply.network(Stage.CONNECT, "connection refused")
    assert classify(reply) == SoftFail(reply, "connect-failure")


def test_a_refused_password_is_a_soft_failure_at_auth_and_opens_no_session(relay_backend: RelayBackend) -> None:
    reply = _send(relay_backend, "bob@example.org", password="wrong")

    assert (reply.code, reply.stage, reply.enhanced) == (535, Stage.AUTH, "5.7.8")
    assert classify(reply) == SoftFail(reply, "auth-refused")
    assert relay_backend.accepted() == [] and relay_backend.sessions() == 0


def test_one_session_carries_a_batch_and_survives_a_refusal(relay_backend: RelayBackend) -> None:
    relay_backend.refuse("nobody@example.org", Stage.RCPT, "550 5.1.1 <nobody@example.org>: user unknown")

    codes = [_send(relay_backend, r).code for r in ("a@example.org", "nobody@example.org", "b@example.org")]

    assert codes == [250, 550, 250]
    assert relay_backend.accepted() == ["a@example.org", "b@example.org"]
    assert relay_backend.sessions() == 1


def test_close_ends_the_session(relay_backend: RelayBackend) -> None:
    _send(relay_backend, "a@example.org")
    relay_backend.relay.close()

    assert _send(relay_backend, "b@example.org").code == 250
    assert relay_backend.sessions() == 2


def test_a_rotated_password_opens_a_new_session(relay_backend: RelayBackend) -> None:
    assert _send(relay_backend, "a@example.org").code == 250
    relay_backend.rotate_password("rotated")

    assert _send(relay_backend, "b@example.org", password="rotated").code == 250
    assert relay_backend.sessions() == 2
    assert relay_backend.accepted() == ["a@example.org", "b@example.org"]


def test_close_idle_keeps_a_recent_session_for_the_next_invocation(relay_backend: RelayBackend) -> None:
    assert _send(relay_backend, "a@example.org").code == 250
    relay_backend.relay.close_idle()  # the end of an invocation

    assert _send(relay_backend, "b@example.org").code == 250
    assert relay_backend.sessions() == 1


def test_a_session_idle_past_the_limit_is_replaced(relay_backend: RelayBackend) -> None:
    assert _send(relay_backend, "a@example.org").code == 250
    relay_backend.expire_idle()

    assert _send(relay_backend, "b@example.org").code == 250
    assert relay_backend.sessions() == 2
    assert relay_backend.accepted() == ["a@example.org", "b@example.org"]


def test_close_idle_closes_a_session_idle_past_the_limit(relay_backend: RelayBackend) -> None:
    assert _send(relay_backend, "a@example.org").code == 250
    relay_backend.expire_idle()
    relay_backend.relay.close_idle()

    assert _send(relay_backend, "b@example.org").code == 250
    assert relay_backend.sessions() == 2
