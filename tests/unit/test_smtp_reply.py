"""petrel.mail.smtp_reply: parsing replies and the classification table of DESIGN §2."""

from __future__ import annotations

import pytest

from petrel.mail.smtp_reply import (
    BounceClass,
    HardFail,
    PermanentFail,
    Relayed,
    SmtpReply,
    SoftFail,
    Stage,
    classify,
)


def _reply(code: int, text: str, stage: Stage = Stage.RCPT) -> SmtpReply:
    return SmtpReply.parse(code, text, stage)


def test_parse_extracts_the_enhanced_code() -> None:
    reply = _reply(550, b"5.1.1 <nobody@example.org>: Recipient address rejected")  # type: ignore[arg-type]
    assert reply.code == 550 and reply.enhanced == "5.1.1" and reply.stage is Stage.RCPT
    assert reply.text == "5.1.1 <nobody@example.org>: Recipient address rejected"


def test_parse_ignores_an_enhanced_code_of_another_class() -> None:
    assert _reply(550, "2.0.0 confused server").enhanced is None
    assert _reply(250, "Ok").enhanced is None
    assert _reply(550, "5.1.10 null MX").enhanced == "5.1.10"


def test_parse_flattens_multiline_and_truncates() -> None:
    reply = _reply(451, "4.3.0 first line\n4.3.0 second   line")
    assert reply.text == "4.3.0 first line 4.3.0 second line"
    assert len(_reply(554, "5.7.1 " + "x" * 2000).text) == 500


def test_parse_survives_bad_utf8() -> None:
    assert _reply(550, b"5.1.1 caf\xe9").text.startswith("5.1.1 caf")  # type: ignore[arg-type]


def test_network_failure_has_code_zero() -> None:
    reply = SmtpReply.network(Stage.CONNECT, "connection refused")
    assert reply.code == 0 and not reply.is_positive
    assert str(reply) == "(connect) connection refused"
    assert str(_reply(250, "2.0.0 Ok")) == "250 2.0.0 Ok"


@pytest.mark.parametrize("code", [250, 251])
def test_positive_is_relayed(code: int) -> None:
    reply = _reply(code, "2.0.0 Ok: queued as ABC", Stage.DATA)
    assert classify(reply) == Relayed(reply)


@pytest.mark.parametrize(
    ("code", "text", "stage"),
    [
        (421, "4.7.0 mail.example.com closing connection", Stage.MAIL),
        (450, "4.2.1 mailbox busy", Stage.RCPT),
        (451, "4.3.0 Temporary lookup failure", Stage.RCPT),
        (452, "4.5.3 too many recipients", Stage.RCPT),
        (451, "local error in processing", Stage.DATA),
        (450, "4.7.1 greylisted", Stage.MAIL),
    ],
)
def test_temporary_replies_soft_fail(code: int, text: str, stage: Stage) -> None:
    outcome = classify(_reply(code, text, stage))
    assert isinstance(outcome, SoftFail)
    assert outcome.reason == "temporary-failure"


@pytest.mark.parametrize("stage", [Stage.CONNECT, Stage.TLS, Stage.AUTH, Stage.MAIL, Stage.RCPT, Stage.DATA])
def test_network_failures_soft_fail(stage: Stage) -> None:
    outcome = classify(SmtpReply.network(stage, "connection reset by the server"))
    assert isinstance(outcome, SoftFail)
    assert outcome.reason == f"{stage}-failure"


@pytest.mark.parametrize("enhanced", ["5.1.1", "5.1.2", "5.1.3", "5.1.10", "5.5.0"])
def test_bad_mailbox_or_domain_bounces_hard_and_suppresses(enhanced: str) -> None:
    outcome = classify(_reply(550, f"{enhanced} no such user"))
    assert isinstance(outcome, HardFail)
    assert outcome.bounce_class is BounceClass.HARD and outcome.suppress is True


@pytest.mark.parametrize(("code", "enhanced"), [(554, "5.7.1"), (550, "5.7.1"), (550, "5.7.26"), (554, "5.7.0")])
def test_policy_refusal_is_a_block_without_suppression(code: int, enhanced: str) -> None:
    outcome = classify(_reply(code, f"{enhanced} rejected by policy"))
    assert isinstance(outcome, HardFail)
    assert outcome.bounce_class is BounceClass.BLOCK and outcome.suppress is False


@pytest.mark.parametrize(("code", "enhanced"), [(552, "5.3.4"), (554, "5.6.0"), (552, "5.3.0")])
def test_message_refusal(code: int, enhanced: str) -> None:
    outcome = classify(_reply(code, f"{enhanced} message too big", Stage.DATA))
    assert isinstance(outcome, HardFail)
    assert outcome.bounce_class is BounceClass.MESSAGE and outcome.suppress is False


def test_552_at_data_without_enhanced_code_is_the_message() -> None:
    outcome = classify(_reply(552, "Message size exceeds fixed limit", Stage.DATA))
    assert isinstance(outcome, HardFail) and outcome.bounce_class is BounceClass.MESSAGE


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.2.2 mailbox full"),
        (550, "Mailbox unavailable"),
        (553, "mailbox name not allowed"),
        (552, "5.2.2 quota"),
    ],
)
def test_other_permanent_replies_bounce_hard_without_suppression(code: int, text: str) -> None:
    outcome = classify(_reply(code, text, Stage.RCPT))
    assert isinstance(outcome, HardFail)
    assert outcome.bounce_class is BounceClass.HARD and outcome.suppress is False


def test_auth_refusal_is_the_servers_setup_not_the_recipient() -> None:
    outcome = classify(_reply(535, "5.7.8 Authentication credentials invalid", Stage.AUTH))
    assert isinstance(outcome, SoftFail)
    assert outcome.reason == "auth-refused"


@pytest.mark.parametrize(("stage", "code"), [(Stage.CONNECT, 554), (Stage.TLS, 454), (Stage.AUTH, 530)])
def test_refusals_before_the_transaction_soft_fail(stage: Stage, code: int) -> None:
    outcome = classify(_reply(code, "refused", stage))
    assert isinstance(outcome, SoftFail) and outcome.reason == f"{stage}-refused"


@pytest.mark.parametrize(
    ("code", "text"), [(550, "5.7.1 sender rejected"), (553, "5.1.8 bad sender domain"), (501, "x")]
)
def test_sender_refused_at_mail_is_a_permanent_failure(code: int, text: str) -> None:
    outcome = classify(_reply(code, text, Stage.MAIL))
    assert isinstance(outcome, PermanentFail)
    assert outcome.reason == "sender-refused"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4.7.0 try again in 300 seconds", 300),
        ("4.7.1 Please try again in 5 minutes", 300),
        ("4.3.2 Service busy, retry in 2 hours", 7200),
        ("4.7.0 Try again later in 45s", 45),
        ("4.2.0 wait 10 min", 600),
        ("4.3.0 Temporary lookup failure", None),
        ("4.7.0 try again later", None),
    ],
)
def test_retry_after(text: str, seconds: int | None) -> None:
    reply = _reply(451, text)
    assert reply.retry_after_seconds() == seconds
    outcome = classify(reply)
    assert isinstance(outcome, SoftFail) and outcome.retry_after == seconds


def test_a_message_refused_at_mail_for_its_size_bounces_as_message() -> None:
    """With SIZE declared, Postfix refuses an oversized message at MAIL FROM: the enhanced code decides."""
    outcome = classify(SmtpReply.parse(552, "5.3.4 Message size exceeds fixed limit", Stage.MAIL))

    assert isinstance(outcome, HardFail) and outcome.bounce_class == "message" and not outcome.suppress


def test_other_refusals_at_mail_are_about_the_sender() -> None:
    outcome = classify(SmtpReply.parse(553, "5.7.1 <x@y>: Sender address rejected: not owned by user", Stage.MAIL))

    assert isinstance(outcome, PermanentFail) and outcome.reason == "sender-refused"


@pytest.mark.parametrize("stage", [Stage.CONNECT, Stage.TLS, Stage.DATA])
def test_a_deadline_exceeded_is_deferred_as_such(stage: Stage) -> None:
    reply = SmtpReply.deadline_exceeded(stage)
    assert (reply.code, reply.stage, reply.exceeded_deadline) == (0, stage, True)
    assert "exceeded its deadline" in reply.text
    assert classify(reply) == SoftFail(reply, reason="deadline-exceeded")  # after DATA too: sent again


def test_only_a_network_reply_says_deadline_exceeded() -> None:
    assert not SmtpReply.network(Stage.DATA, "timed out waiting for the server").exceeded_deadline
    assert not _reply(451, SmtpReply.deadline_exceeded(Stage.DATA).text, Stage.DATA).exceeded_deadline
