"""SmtplibRelay's sessions against a real SMTP server (aiosmtpd) on 127.0.0.1: the pool shared by threads,
PIPELINING, sessions kept across invocations and their idle limit.

Invariants, each with the test that breaks if it stops holding:
- A server never has more sessions open from one relay than its `shaping.concurrency`, and k threads
  relay on k sessions at once (`test_threads_share_at_most_k_sessions...`).
- Every message is accepted exactly once, with its own envelope, whatever the threads, drops and
  retries (`..._every_message_once...`, `test_a_dropped_idle_session_is_replaced...`).
- Pipelined commands go in one write only when the server offers PIPELINING (`test_pipelining_...`).
- No body is sent after a refused MAIL or RCPT, even when DATA is (wrongly) accepted
  (`test_a_refused_rcpt_under_pipelining...`, `test_a_354_after_a_refused_rcpt...`).
- A session that got a 421 is never reused (`test_a_421_closes_the_session`); one idle past the
  limit by the wall clock is never reused (`test_a_session_idle_past_the_limit...`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from local.tls import TlsFiles
from petrel.adapters.smtp import SmtplibRelay
from petrel.mail.smtp_reply import SmtpReply, Stage
from petrel.models.records import ServerShaping, SmtpSecurity, SmtpServer
from petrel.ports import Envelope
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer

pytestmark = pytest.mark.integration

IDLE_SECONDS = 30.0


class WallClock:
    """An injected wall clock: tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _server(running: RunningServer, tls: TlsFiles, *, concurrency: int = 4) -> SmtpServer:
    return SmtpServer(
        tenant_id="tn_a",
        server_id=f"srv_{running.port}",
        host="127.0.0.1",
        port=running.port,
        security=SmtpSecurity.STARTTLS,
        username=USERNAME,
        secret_name="unused",
        ca_bundle=tls.ca_pem,
        created_at=datetime.now(UTC),
        shaping=ServerShaping(concurrency=concurrency),
    )


def _envelope(recipient: str) -> Envelope:
    local = recipient.split("@", 1)[0]
    return Envelope(sender=f"bounces+{local}@bounce.example.com", recipient=recipient, envid=f"msg_{local}")


def _data(recipient: str) -> bytes:
    """A message that names its recipient, so each arrival can be matched to its own envelope."""
    return (
        f"From: sender@example.com\r\nTo: {recipient}\r\nSubject: for {recipient}\r\n"
        f"Message-ID: <{recipient}>\r\n\r\nhello {recipient}\r\n.leading dot\r\n"
    ).encode()


def _send(relay: SmtplibRelay, server: SmtpServer, recipient: str, deadline: float | None = None) -> SmtpReply:
    return relay.relay(server, PASSWORD, _envelope(recipient), _data(recipient), deadline=deadline)


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def relay(clock: WallClock) -> Iterator[SmtplibRelay]:
    relay = SmtplibRelay(
        timeout=5.0, transaction_seconds=30.0, local_hostname="petrel.test", idle_seconds=IDLE_SECONDS, wall_clock=clock
    )
    yield relay
    relay.close()


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def server(request: pytest.FixtureRequest, smtp_servers: Callable[..., RunningServer]) -> RunningServer:
    running: RunningServer = smtp_servers("starttls", pipelining=request.param)
    return running


def _pipelined_reads(running: RunningServer) -> list[bytes]:
    """The reads that held both a MAIL FROM and a RCPT TO (smtplib writes its commands in lower case)."""
    return [data for _, data in running.handler.reads if b"MAIL FROM:" in data.upper() and b"RCPT TO:" in data.upper()]


# --------------------------------------------------------------------------- PIPELINING


def test_pipelining_sends_mail_rcpt_and_data_in_one_write_when_offered(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    running = smtp_servers("starttls", pipelining=True)
    target = _server(running, tls_files)

    replies = [_send(relay, target, f"user{i}@example.org") for i in range(3)]

    assert [(r.code, r.stage) for r in replies] == [(250, Stage.DATA)] * 3
    batches = _pipelined_reads(running)
    assert len(batches) == 3  # one read per message held all three commands
    assert all(batch.endswith(b"DATA\r\n") for batch in batches)
    received = running.handler.received
    assert [r.rcpt_to for r in received] == [(f"user{i}@example.org",) for i in range(3)]
    assert [r.data for r in received] == [_data(f"user{i}@example.org") for i in range(3)]  # dots unstuffed
    assert running.handler.connections == 1


def test_no_pipelining_when_the_server_does_not_offer_it(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    running = smtp_servers("starttls", pipelining=False)

    assert _send(relay, _server(running, tls_files), "bob@example.org").code == 250

    assert _pipelined_reads(running) == []
    commands = [
        data.upper() for _, data in running.handler.reads if data.upper().startswith((b"MAIL", b"RCPT", b"DATA"))
    ]
    assert [c.split(b":")[0].split(b"\r")[0] for c in commands] == [b"MAIL FROM", b"RCPT TO", b"DATA"]


def test_dsn_options_are_pipelined_too(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    running = smtp_servers("starttls", dsn=True, pipelining=True)

    assert _send(relay, _server(running, tls_files), "bob@example.org").code == 250

    [received] = running.handler.received
    assert "ENVID=MSG_BOB" in received.mail_options
    assert "NOTIFY=SUCCESS,FAILURE,DELAY" in received.rcpt_options
    assert len(_pipelined_reads(running)) == 1


@pytest.mark.parametrize(
    ("stage", "scripted", "reply_stage"),
    [
        ("rcpt", "550 5.1.1 <nobody@example.org>: user unknown", Stage.RCPT),
        ("rcpt", "451 4.3.0 Temporary lookup failure", Stage.RCPT),
        ("data", "552 5.3.4 Message size exceeds fixed limit", Stage.DATA),
    ],
)
def test_a_refused_rcpt_under_pipelining_sends_no_body_and_the_session_carries_on(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, stage: str, scripted: str, reply_stage: Stage
) -> None:
    server.handler.script["nobody@example.org"] = (stage, scripted)
    target = _server(server, tls_files)

    reply = _send(relay, target, "nobody@example.org")

    assert (reply.code, reply.stage, reply.text) == (int(scripted[:3]), reply_stage, scripted[4:])
    assert server.handler.received == []
    if stage == "rcpt":  # DATA was refused (503): not a byte of the body reached the server
        assert not any(b"hello nobody" in data for _, data in server.handler.reads)
    assert _send(relay, target, "ok@example.org").code == 250
    assert [r.rcpt_to for r in server.handler.received] == [("ok@example.org",)]
    assert server.handler.connections == 1


def test_a_354_after_a_refused_rcpt_gets_an_empty_message_and_the_refusal_is_the_answer(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    """RFC 2920 §3.1: the client may not assume DATA is refused after every RCPT was; if it got 354 it
    ends the message at once with a lone dot, so nothing of the body reaches a recipient."""
    running = smtp_servers("starttls", pipelining=True)
    running.handler.script["nobody@example.org"] = ("lax", "550 5.1.1 <nobody@example.org>: user unknown")
    target = _server(running, tls_files)

    reply = _send(relay, target, "nobody@example.org")

    assert (reply.code, reply.stage, reply.enhanced) == (550, Stage.RCPT, "5.1.1")
    assert running.handler.lax_bodies == [b""]  # the server got the empty message, and refused it
    assert not any(b"hello nobody" in data for _, data in running.handler.reads)
    assert _send(relay, target, "ok@example.org").code == 250  # after RSET, the session carries on
    assert [r.rcpt_to for r in running.handler.received] == [("ok@example.org",)]
    assert running.handler.connections == 1


def test_a_421_closes_the_session(server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay) -> None:
    server.handler.script["busy@example.org"] = ("rcpt", "421 4.7.0 Too many connections, closing")
    target = _server(server, tls_files)
    assert _send(relay, target, "first@example.org").code == 250

    reply = _send(relay, target, "busy@example.org")

    assert (reply.code, reply.stage) == (421, Stage.RCPT)
    assert server.handler.protocols[0].closed.wait(5), "the relay kept a session that got a 421"  # type: ignore[attr-defined]
    assert _send(relay, target, "after@example.org").code == 250
    assert server.handler.connections == 2
    assert [r.rcpt_to for r in server.handler.received] == [("first@example.org",), ("after@example.org",)]


def test_a_421_to_a_pipelined_rcpt_is_the_answer_when_the_server_then_hangs_up(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    # Postfix answers 421 and closes at once: the reply to the pipelined DATA never comes.
    server.handler.script["busy@example.org"] = ("rcpt-close", "421 4.3.2 Service shutting down")
    target = _server(server, tls_files)

    reply = _send(relay, target, "busy@example.org")

    assert (reply.code, reply.enhanced, reply.stage) == (421, "4.3.2", Stage.RCPT)
    assert _send(relay, target, "after@example.org").code == 250  # on a new session
    assert server.handler.connections == 2
    assert [r.rcpt_to for r in server.handler.received] == [("after@example.org",)]


# --------------------------------------------------------------------------- threads and the pool


@pytest.mark.parametrize("concurrency", [1, 3])
def test_threads_share_at_most_k_sessions_and_every_message_arrives_once_with_its_envelope(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, concurrency: int
) -> None:
    server.handler.gate = concurrency  # the first DATA waits until k sessions are in DATA at once
    target = _server(server, tls_files, concurrency=concurrency)
    recipients = [f"user{i}@example.org" for i in range(40)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda r: _send(relay, target, r), recipients))

    assert [r.code for r in replies] == [250] * len(recipients)  # the gate opened: k ran concurrently
    assert server.handler.connections == concurrency
    assert server.handler.most_open == concurrency
    received = server.handler.received
    assert Counter(r.rcpt_to for r in received) == Counter((r,) for r in recipients)  # each exactly once
    for arrival in received:
        [recipient] = arrival.rcpt_to
        assert arrival.data == _data(recipient)  # each body with its own envelope
        assert arrival.mail_from == _envelope(recipient).sender
    assert len(server.handler.logins) == concurrency


def test_a_thread_that_finds_every_session_busy_waits_no_longer_than_its_deadline(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    running = smtp_servers("starttls", pipelining=True)
    running.handler.script["slow@example.org"] = ("stall", "3")
    target = _server(running, tls_files, concurrency=1)
    holder = threading.Thread(target=_send, args=(relay, target, "slow@example.org"))
    holder.start()
    try:
        _wait_for(lambda: any(b"hello slow" in data for _, data in running.handler.reads))  # the one session is busy

        reply = _send(relay, target, "waiting@example.org", deadline=time.monotonic() + 0.5)
    finally:
        holder.join()

    assert reply == SmtpReply.deadline_exceeded(Stage.CONNECT)
    assert running.handler.connections == 1  # it did not open a second session
    assert [r.rcpt_to for r in running.handler.received] == [("slow@example.org",)]


def test_close_while_a_session_is_in_use_closes_it_when_its_transaction_ends(
    smtp_servers: Callable[..., RunningServer], tls_files: TlsFiles, relay: SmtplibRelay
) -> None:
    running = smtp_servers("starttls", pipelining=True)
    running.handler.script["slow@example.org"] = ("stall", "1")
    target = _server(running, tls_files, concurrency=1)
    replies: list[SmtpReply] = []
    holder = threading.Thread(target=lambda: replies.append(_send(relay, target, "slow@example.org")))
    holder.start()
    _wait_for(lambda: any(b"hello slow" in data for _, data in running.handler.reads))

    relay.close()  # another invocation's end: the busy session is not cut, but not kept either
    holder.join()

    assert [r.code for r in replies] == [250]
    assert running.handler.protocols[0].closed.wait(5)  # type: ignore[attr-defined]
    assert _send(relay, target, "next@example.org").code == 250
    assert running.handler.connections == 2


# --------------------------------------------------------------------------- sessions across invocations


def test_a_session_is_kept_across_invocations_and_close_idle_keeps_a_recent_one(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, clock: WallClock
) -> None:
    target = _server(server, tls_files)
    assert _send(relay, target, "first@example.org").code == 250
    relay.close_idle()  # the invocation ends
    clock.advance(IDLE_SECONDS - 1)  # the container is frozen, then thawed for the next one

    assert _send(relay, target, "second@example.org").code == 250
    assert server.handler.connections == 1


def test_a_session_idle_past_the_limit_is_closed_when_taken_and_replaced(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, clock: WallClock
) -> None:
    target = _server(server, tls_files)
    assert _send(relay, target, "first@example.org").code == 250
    clock.advance(IDLE_SECONDS + 1)

    assert _send(relay, target, "second@example.org").code == 250

    assert server.handler.connections == 2
    assert server.handler.protocols[0].closed.wait(5)  # type: ignore[attr-defined]
    assert [r.rcpt_to for r in server.handler.received] == [("first@example.org",), ("second@example.org",)]


def test_close_idle_closes_only_sessions_idle_past_the_limit(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, clock: WallClock
) -> None:
    target = _server(server, tls_files)
    assert _send(relay, target, "a@example.org").code == 250
    clock.advance(IDLE_SECONDS - 1)
    relay.close_idle()  # not past the limit yet: kept
    assert _send(relay, target, "b@example.org").code == 250
    assert server.handler.connections == 1

    clock.advance(IDLE_SECONDS + 1)  # idle past the limit since b
    relay.close_idle()

    assert server.handler.protocols[0].closed.wait(5)  # type: ignore[attr-defined]
    assert _send(relay, target, "c@example.org").code == 250
    assert server.handler.connections == 2


@pytest.mark.parametrize("drops", [1, 2])
def test_a_dropped_idle_session_is_replaced_without_losing_or_duplicating_the_message(
    server: RunningServer, tls_files: TlsFiles, relay: SmtplibRelay, drops: int
) -> None:
    """The server drops every idle session (an idle timeout, a restart), `drops` times over: each next
    message goes on a new session, once."""
    server.handler.gate = 2
    target = _server(server, tls_files, concurrency=2)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two sessions open, both idle after
        assert [r.code for r in pool.map(lambda r: _send(relay, target, r), ["a@example.org", "b@example.org"])] == [
            250,
            250,
        ]
    server.handler.gate = 0
    expected = [("a@example.org",), ("b@example.org",)]
    for i in range(drops):
        server.drop_connections()
        reply = _send(relay, target, f"after{i}@example.org")
        assert (reply.code, reply.stage) == (250, Stage.DATA)
        expected.append((f"after{i}@example.org",))

    assert Counter(r.rcpt_to for r in server.handler.received) == Counter(expected)
    assert server.handler.connections == 2 + drops  # one new session each time, not one per dead one
    _wait_for(lambda: server.handler.open_now == 1)  # the dead ones closed, the new one kept


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.01)
