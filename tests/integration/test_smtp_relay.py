"""SmtplibRelay against a real SMTP server (aiosmtpd) on 127.0.0.1: TLS, AUTH, DSN, replies, sessions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from local.tls import TlsFiles
from petrel.adapters.smtp import SmtplibRelay, xtext
from petrel.mail.smtp_reply import SmtpReply, SoftFail, Stage, classify
from petrel.models.records import SmtpSecurity, SmtpServer
from petrel.ports import Envelope
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer, free_port
from tests.integration.tarpit import Tarpit

pytestmark = [
    pytest.mark.integration,
    # the implicit-TLS server needs no STARTTLS before AUTH; aiosmtpd warns about that setting
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

DATA = (
    b"From: sender@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nhello\r\n"
)
MESSAGE_ID = "msg_01KF0FV2E05JW2ZEWDNTNKMXKG"


def _server(
    running: RunningServer | None, tls: TlsFiles | None, *, port: int | None = None, **fields: object
) -> SmtpServer:
    values: dict[str, object] = {
        "tenant_id": "tn_a",
        "server_id": f"srv_{running.port if running else port}",
        "host": "127.0.0.1",
        "port": running.port if running else port,
        "security": SmtpSecurity(running.security) if running else SmtpSecurity.STARTTLS,
        "username": USERNAME,
        "secret_name": "unused",
        "ca_bundle": tls.ca_pem if tls else None,
        "created_at": datetime.now(UTC),
    }
    values.update(fields)
    return SmtpServer.model_validate(values)


def _envelope(recipient: str = "bob@example.org", message_id: str = MESSAGE_ID) -> Envelope:
    return Envelope(sender=f"bounces+{message_id}@bounce.example.com", recipient=recipient, envid=message_id)


@pytest.fixture
def relay() -> Iterator[SmtplibRelay]:
    relay = SmtplibRelay(timeout=5.0, transaction_seconds=30.0, local_hostname="petrel.test")
    yield relay
    relay.close()


def test_relayed_over_starttls_with_auth(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    reply = relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope(), DATA)

    assert reply.code == 250 and reply.stage is Stage.DATA and reply.enhanced == "2.0.0"
    [received] = submission_server.handler.received
    assert received.mail_from == f"bounces+{MESSAGE_ID}@bounce.example.com"
    assert received.rcpt_to == ("bob@example.org",)
    assert received.data.rstrip(b"\r\n") == DATA.rstrip(b"\r\n")
    assert submission_server.handler.logins == [("PLAIN", True)]


def test_relayed_over_implicit_tls(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    server = smtp_servers("tls")

    reply = relay.relay(_server(server, tls_files), PASSWORD, _envelope(), DATA)

    assert reply.code == 250
    assert [r.rcpt_to for r in server.handler.received] == [("bob@example.org",)]
    assert server.handler.ehlos == 1  # no STARTTLS round


def test_no_dsn_options_when_the_server_does_not_offer_dsn(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope(), DATA)

    [received] = submission_server.handler.received
    assert received.mail_options == (f"SIZE={len(DATA)}",)  # aiosmtpd offers SIZE, and nothing of DSN
    assert received.rcpt_options == ()


def test_dsn_requested_when_the_server_offers_it(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    server = smtp_servers("starttls", dsn=True)

    reply = relay.relay(_server(server, tls_files), PASSWORD, _envelope(), DATA)

    assert reply.code == 250
    [received] = server.handler.received
    assert "RET=HDRS" in received.mail_options
    assert f"ENVID={MESSAGE_ID}".upper() in received.mail_options  # aiosmtpd upper-cases parameters
    assert "NOTIFY=SUCCESS,FAILURE,DELAY" in received.rcpt_options
    assert "ORCPT=RFC822;BOB@EXAMPLE.ORG" in received.rcpt_options


def test_xtext() -> None:
    assert xtext("msg_01ABC") == "msg_01ABC"
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"


def test_one_session_for_several_messages(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    server = _server(submission_server, tls_files)
    replies = [relay.relay(server, PASSWORD, _envelope(f"user{i}@example.org"), DATA) for i in range(4)]

    assert [r.code for r in replies] == [250] * 4
    assert [r.rcpt_to for r in submission_server.handler.received] == [(f"user{i}@example.org",) for i in range(4)]
    assert submission_server.handler.connections == 1
    assert submission_server.handler.ehlos == 2  # before and after STARTTLS, once
    assert len(submission_server.handler.logins) == 1


def test_close_ends_the_session(submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay) -> None:
    server = _server(submission_server, tls_files)
    relay.relay(server, PASSWORD, _envelope(), DATA)
    relay.close()
    relay.relay(server, PASSWORD, _envelope(), DATA)

    assert submission_server.handler.connections == 2


def test_a_changed_password_opens_a_new_session(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    server = _server(submission_server, tls_files)
    relay.relay(server, PASSWORD, _envelope(), DATA)
    submission_server.handler.password = "rotated"

    reply = relay.relay(server, "rotated", _envelope(), DATA)

    assert reply.code == 250
    assert submission_server.handler.connections == 2
    assert submission_server.handler.logins == [("PLAIN", True), ("PLAIN", True)]


@pytest.mark.parametrize(
    ("recipient", "stage", "scripted", "code", "enhanced", "reply_stage"),
    [
        ("soft@example.org", "rcpt", "451 4.3.0 Temporary lookup failure", 451, "4.3.0", Stage.RCPT),
        ("nobody@example.org", "rcpt", "550 5.1.1 <nobody@example.org>: user unknown", 550, "5.1.1", Stage.RCPT),
        ("big@example.org", "data", "552 5.3.4 Message size exceeds fixed limit", 552, "5.3.4", Stage.DATA),
        ("later@example.org", "data", "451 4.7.1 try again in 300 seconds", 451, "4.7.1", Stage.DATA),
        ("plain@example.org", "rcpt", "550 mailbox unavailable", 550, None, Stage.RCPT),
    ],
)
def test_refusals_come_back_as_replies(
    submission_server: RunningServer,
    tls_files: TlsFiles,
    relay: SmtplibRelay,
    recipient: str,
    stage: str,
    scripted: str,
    code: int,
    enhanced: str | None,
    reply_stage: Stage,
) -> None:
    submission_server.handler.script[recipient] = (stage, scripted)
    server = _server(submission_server, tls_files)

    reply = relay.relay(server, PASSWORD, _envelope(recipient), DATA)

    assert (reply.code, reply.enhanced, reply.stage) == (code, enhanced, reply_stage)
    assert reply.text == scripted.split(" ", 1)[1]
    assert submission_server.handler.received == []
    # the session survives a refused transaction and carries the next message
    assert relay.relay(server, PASSWORD, _envelope("ok@example.org"), DATA).code == 250
    assert submission_server.handler.connections == 1


def test_retry_after_is_read_from_the_reply(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    submission_server.handler.script["later@example.org"] = ("rcpt", "450 4.7.1 Greylisted, try again in 5 minutes")

    reply = relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope("later@example.org"), DATA)

    assert reply.retry_after_seconds() == 300


def test_a_wrong_password_is_an_auth_reply(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    reply = relay.relay(_server(submission_server, tls_files), "wrong", _envelope(), DATA)

    assert (reply.code, reply.stage, reply.enhanced) == (535, Stage.AUTH, "5.7.8")
    assert submission_server.handler.received == []
    assert not any(ok for _, ok in submission_server.handler.logins)


def test_an_untrusted_certificate_is_a_tls_failure(submission_server: RunningServer, relay: SmtplibRelay) -> None:
    reply = relay.relay(_server(submission_server, None), PASSWORD, _envelope(), DATA)  # no CA bundle

    assert (reply.code, reply.stage) == (0, Stage.TLS)
    assert "certificate" in reply.text.lower()
    assert submission_server.handler.logins == []  # the password never left


def test_an_untrusted_certificate_on_implicit_tls(
    smtp_servers: Callable[..., RunningServer], relay: SmtplibRelay
) -> None:
    server = smtp_servers("tls")

    reply = relay.relay(_server(server, None), PASSWORD, _envelope(), DATA)

    assert (reply.code, reply.stage) == (0, Stage.TLS)
    assert server.handler.logins == []


def test_a_certificate_for_another_name_is_refused(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    server = _server(submission_server, tls_files, host="localhost")  # the certificate names 127.0.0.1 only
    reply = relay.relay(server, PASSWORD, _envelope(), DATA)

    assert (reply.code, reply.stage) == (0, Stage.TLS)
    assert "certificate" in reply.text.lower()
    assert submission_server.handler.logins == []


def test_a_closed_port_is_a_connect_failure(tls_files: TlsFiles, relay: SmtplibRelay) -> None:
    reply = relay.relay(_server(None, tls_files, port=free_port()), PASSWORD, _envelope(), DATA)

    assert reply == SmtpReply.network(Stage.CONNECT, "connection refused")


def test_a_dropped_session_is_reopened_transparently(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    server = _server(submission_server, tls_files)
    assert relay.relay(server, PASSWORD, _envelope("first@example.org"), DATA).code == 250

    submission_server.drop_connections()  # e.g. the server's idle timeout
    reply = relay.relay(server, PASSWORD, _envelope("second@example.org"), DATA)

    assert reply.code == 250
    assert [r.rcpt_to for r in submission_server.handler.received] == [("first@example.org",), ("second@example.org",)]
    assert submission_server.handler.connections == 2


def test_a_server_that_stalls_after_data_times_out(submission_server: RunningServer, tls_files: TlsFiles) -> None:
    submission_server.handler.script["slow@example.org"] = ("stall", "3")
    relay = SmtplibRelay(timeout=1.0, transaction_seconds=30.0)
    try:
        reply = relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope("slow@example.org"), DATA)
    finally:
        relay.close()

    assert (reply.code, reply.stage) == (0, Stage.DATA)
    assert reply.text == "timed out waiting for the server"


def test_a_session_dropped_before_the_reply_is_a_network_failure_at_data(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    submission_server.handler.script["gone@example.org"] = ("drop", "")

    reply = relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope("gone@example.org"), DATA)

    assert (reply.code, reply.stage) == (0, Stage.DATA)  # deferred: the server may have it (at-least-once)
    assert len(submission_server.handler.received) == 1
    after = relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope("bob@example.org"), DATA)
    assert after.code == 250  # the next message opens a new session


# --------------------------------------------------------------------------- the transaction's deadline
# Each relay below has a per-read timeout the server never trips (it sends a byte more often), so only
# the overall deadline can end the transaction. The tarpit stands for a server that gives up after
# SERVER_GIVES_UP seconds, far beyond each deadline: had the deadline not acted, the tarpit would end
# the session itself (`hung_up`), and a deadline that is the caller's would not be reported as reached.
# What each test asserts is who ended the session and why, never how long it took.
SERVER_GIVES_UP = 15.0


def test_a_greeting_trickled_a_byte_at_a_time_ends_at_the_relays_limit(
    submission_server: RunningServer, tls_files: TlsFiles
) -> None:
    relay = SmtplibRelay(timeout=1.0, transaction_seconds=2.0)
    with Tarpit(submission_server.port, interval=0.5, hang_up_after=SERVER_GIVES_UP) as tarpit:
        try:
            reply = relay.relay(_server(None, tls_files, port=tarpit.port), PASSWORD, _envelope(), DATA)
        finally:
            relay.close()
        assert tarpit.wait_released(1, timeout=5), "the relay kept the tarpit's connection open"

    assert reply == SmtpReply.deadline_exceeded(Stage.CONNECT)  # not the per-read timeout's reply
    assert reply.text == "the SMTP transaction exceeded its deadline"
    assert tarpit.hung_up == 0  # the relay cut the session mid-greeting; the server did not give up first
    assert submission_server.handler.logins == []
    outcome = classify(reply)
    assert isinstance(outcome, SoftFail) and outcome.reason == "deadline-exceeded"


def test_a_trickled_tls_handshake_ends_at_the_callers_deadline(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = smtp_servers("tls")
    # ssl bounds a whole handshake by the socket timeout: make that one long, so only the deadline can act;
    # the relay's own limit is longer than the server's patience, so only the caller's deadline can.
    relay = SmtplibRelay(timeout=30.0, transaction_seconds=2 * SERVER_GIVES_UP)
    # A certificate is ~1 KB: minutes at this pace.
    with Tarpit(server.port, interval=0.2, hang_up_after=SERVER_GIVES_UP) as tarpit:
        try:
            reply = relay.relay(
                _server(None, tls_files, port=tarpit.port, security=SmtpSecurity.TLS),
                PASSWORD,
                _envelope(),
                DATA,
                deadline=time.monotonic() + 2.0,
            )
        finally:
            relay.close()

    assert reply == SmtpReply.deadline_exceeded(Stage.TLS)
    assert tarpit.hung_up == 0  # the caller's deadline cut the handshake, not the server's patience
    assert server.handler.logins == []


def test_a_trickled_reply_to_data_ends_at_the_callers_deadline_and_the_session_is_not_reused(
    submission_server: RunningServer, tls_files: TlsFiles
) -> None:
    # The caller's deadline is the shorter: the relay's own limit is longer than the server's patience.
    relay = SmtplibRelay(timeout=1.0, transaction_seconds=2 * SERVER_GIVES_UP)
    submission_server.handler.script["trickled@example.org"] = ("trickle", "0.3")
    # A tarpit that passes every byte at once: it only tells who ended each session.
    with Tarpit(submission_server.port, interval=0.0, hang_up_after=SERVER_GIVES_UP) as tarpit:
        server = _server(None, tls_files, port=tarpit.port)
        try:
            assert relay.relay(server, PASSWORD, _envelope("first@example.org"), DATA).code == 250  # pooled
            deadline = time.monotonic() + 2.0
            reply = relay.relay(server, PASSWORD, _envelope("trickled@example.org"), DATA, deadline=deadline)

            assert reply == SmtpReply.deadline_exceeded(Stage.DATA)  # deferred: the server has it (at-least-once)
            assert tarpit.hung_up == 0  # the caller's deadline cut the reply, not the server's patience
            assert [r.rcpt_to for r in submission_server.handler.received][-1] == ("trickled@example.org",)
            # the next call on the same relay opens a new session and works
            after = relay.relay(server, PASSWORD, _envelope("after@example.org"), DATA)
        finally:
            relay.close()

    assert after.code == 250
    assert submission_server.handler.connections == tarpit.connections == 2
    assert [r.rcpt_to for r in submission_server.handler.received][-1] == ("after@example.org",)


def test_a_server_that_stops_reading_mid_data_ends_at_the_deadline(
    submission_server: RunningServer, tls_files: TlsFiles
) -> None:
    # The write timeout is longer than the server's patience: only the deadline can end the blocked write.
    relay = SmtplibRelay(timeout=2 * SERVER_GIVES_UP, transaction_seconds=2.0)
    payload = DATA + b"x" * 76 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 16_000  # ~16 MB: more than any buffer
    with Tarpit(submission_server.port, interval=0.0, stall_after=64 * 1024, hang_up_after=SERVER_GIVES_UP) as tarpit:
        try:
            reply = relay.relay(_server(None, tls_files, port=tarpit.port), PASSWORD, _envelope(), payload)
        finally:
            relay.close()

    assert reply == SmtpReply.deadline_exceeded(Stage.DATA)
    assert tarpit.hung_up == 0  # the relay's deadline ended the blocked write, not the server hanging up
    assert submission_server.handler.received == []


def test_a_deadline_already_past_makes_no_connection(submission_server: RunningServer, tls_files: TlsFiles) -> None:
    relay = SmtplibRelay(timeout=1.0, transaction_seconds=30.0)
    reply = relay.relay(
        _server(submission_server, tls_files), PASSWORD, _envelope(), DATA, deadline=time.monotonic() - 1
    )

    assert reply == SmtpReply.deadline_exceeded(Stage.CONNECT)
    assert submission_server.handler.connections == 0


def test_a_transaction_within_its_deadline_is_untouched(submission_server: RunningServer, tls_files: TlsFiles) -> None:
    relay = SmtplibRelay(timeout=5.0, transaction_seconds=1.5)  # each call has its own limit
    server = _server(submission_server, tls_files)
    try:
        replies = []
        for i in range(2):
            replies.append(relay.relay(server, PASSWORD, _envelope(f"user{i}@example.org"), DATA))
            time.sleep(1.6)  # the session outlives the call's deadline: the next call still reuses it
    finally:
        relay.close()

    assert [r.code for r in replies] == [250, 250]
    assert submission_server.handler.connections == 1


# --------------------------------------------------------------------------- every failure a value


@pytest.mark.parametrize(
    ("username", "password"),
    [(USERNAME, "pässwörd-ü"), ("relä@example.com", PASSWORD)],
    ids=["password", "username"],
)
def test_a_non_ascii_credential_is_an_auth_failure_not_an_exception(
    submission_server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, username: str, password: str
) -> None:
    reply = relay.relay(_server(submission_server, tls_files, username=username), password, _envelope(), DATA)

    assert (reply.code, reply.stage) == (0, Stage.AUTH)
    assert "not ASCII" in reply.text
    assert not any(c in reply.text for c in "äöü")  # never a piece of the secret
    assert submission_server.handler.received == []
    assert relay.relay(_server(submission_server, tls_files), PASSWORD, _envelope(), DATA).code == 250


def test_a_host_name_that_cannot_be_encoded_is_a_connect_failure(tls_files: TlsFiles, relay: SmtplibRelay) -> None:
    server = _server(None, tls_files, port=free_port(), host="bad..name.example")  # IDNA refuses an empty label

    reply = relay.relay(server, PASSWORD, _envelope(), DATA)

    assert (reply.code, reply.stage) == (0, Stage.CONNECT)
