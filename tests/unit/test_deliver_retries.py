"""services.deliver: the retry ladder on schedules, expiry, suppression, and servers that fail mid-batch."""

from __future__ import annotations

from datetime import timedelta

import pytest

from petrel.mail.smtp_reply import SmtpReply, SoftFail, Stage
from petrel.models.jobs import SendJob
from petrel.models.records import MessageRecord, MessageStatus, SmtpServer, Suppression
from petrel.models.retry import RetryLadder
from petrel.ports import Envelope, MessageKey
from petrel.services.deliver import Batch, JobResult, deliver_message
from tests.fakes import FakeWorld, Seeded, records
from tests.fakes.smtp import reply


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def _store(world: FakeWorld, seeded: Seeded, *recipients: str, **kwargs: object) -> list[tuple[MessageRecord, SendJob]]:
    email, messages = records.email(seeded.tenant.tenant_id, list(recipients or ["bob@example.org"]), **kwargs)  # type: ignore[arg-type]
    world.messages.create_email(email, messages, 0)
    return [
        (m, SendJob(tenant_id=m.tenant_id, email_id=m.email_id, message_id=m.message_id, pool=m.pool)) for m in messages
    ]


def _current(world: FakeWorld, message: MessageRecord) -> MessageRecord:
    found = world.messages.get_message(MessageKey.of(message))
    assert found is not None
    return found


def _run_until_final(world: FakeWorld, job: SendJob, ladder: RetryLadder | None = None) -> list[SendJob]:
    """Deliver, then keep firing the retry schedules at their time, as Scheduler would."""
    deps = world.deliver_deps(ladder=ladder)
    jobs = [job]
    while jobs:
        batch = Batch()  # each round is an invocation of its own
        for each in jobs:
            deliver_message(deps, each, batch=batch)
        if not world.scheduler.schedules:
            break
        world.clock.set(min(s.at for s in world.scheduler.schedules.values()))
        jobs = world.scheduler.fire_due(world.clock.now(), world.queue)
        world.queue.drain(job.pool)
    return jobs


def test_each_deferral_schedules_the_next_step_of_the_ladder(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(451, "4.3.0 try later")
    [(message, job)] = _store(world, seeded)
    deps = world.deliver_deps(ladder=RetryLadder(jitter=0))
    expected_steps = [60, 300, 900, 3600]

    for attempt, step in enumerate(expected_steps, start=1):
        started = world.clock.now()
        deliver_message(deps, job)
        current = _current(world, message)
        assert current.status == MessageStatus.DEFERRED and current.attempt == attempt
        schedule = world.scheduler.schedules[f"{message.message_id}-{attempt}"]
        assert schedule.at == started + timedelta(seconds=step) == current.next_attempt_at
        assert schedule.job.attempt == attempt and schedule.job.pool == "transactional"
        world.clock.set(schedule.at)
        [job] = world.scheduler.fire_due(world.clock.now(), world.queue)

    shown = _current(world, message)
    assert [a.number for a in shown.attempts] == [1, 2, 3, 4]
    assert all(a.reply is not None and a.reply.code == 451 for a in shown.attempts)


def test_the_servers_own_delay_wins_when_longer(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(450, "4.7.1 Greylisted, try again in 600 seconds")
    [(message, job)] = _store(world, seeded)

    deliver_message(world.deliver_deps(), job)

    assert _current(world, message).next_attempt_at == world.clock.now() + timedelta(seconds=600)


def test_a_message_deferred_until_its_maximum_age_fails_as_expired(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(451, "4.3.0 try later")
    [(message, job)] = _store(world, seeded)

    _run_until_final(world, job)

    current = _current(world, message)
    assert current.status == MessageStatus.FAILED and current.failure_reason == "expired"
    assert current.events[-1].type == "email.failed" and current.events[-1].detail == "expired"
    assert current.attempt == 9 and len(world.relay.calls) == 9
    assert current.next_attempt_at is None and world.scheduler.schedules == {}
    assert world.clock.now() - message.created_at < timedelta(hours=24)


def test_the_maximum_age_is_the_tenants(world: FakeWorld, seeded: Seeded) -> None:
    world.tenants.put_tenant(seeded.tenant.model_copy(update={"max_age_hours": 1}))
    world.relay.script["bob@example.org"] = reply(451, "4.3.0 try later")
    [(message, job)] = _store(world, seeded)

    _run_until_final(world, job, RetryLadder(jitter=0))

    current = _current(world, message)
    assert current.failure_reason == "expired" and current.attempt == 4  # 0, +1 m, +5 m, +15 m; +1 h is too late


def test_a_job_that_arrives_after_the_maximum_age_fails_without_sending(world: FakeWorld, seeded: Seeded) -> None:
    [(message, job)] = _store(world, seeded)
    world.clock.advance(hours=24, seconds=1)  # e.g. redriven from a DLQ a day later

    delivery = deliver_message(world.deliver_deps(), job)

    assert delivery.result is JobResult.DONE and world.relay.calls == []
    current = _current(world, message)
    assert current.status == MessageStatus.FAILED and current.failure_reason == "expired"
    assert current.events[-1].type == "email.failed" and current.attempts == ()


def test_a_suppressed_recipient_is_never_relayed(world: FakeWorld, seeded: Seeded) -> None:
    world.suppressions.add(
        Suppression(
            tenant_id=seeded.tenant.tenant_id, email="bob@example.org", reason="manual", created_at=world.clock.now()
        )
    )
    [(message, job)] = _store(world, seeded, "Bob@Example.org")

    deliver_message(world.deliver_deps(), job)

    assert world.relay.calls == []
    current = _current(world, message)
    assert current.status == MessageStatus.SUPPRESSED
    assert (current.events[-1].type, current.events[-1].detail) == ("email.suppressed", "manual")


def test_a_suppression_of_another_tenant_does_not_apply(world: FakeWorld, seeded: Seeded) -> None:
    world.suppressions.add(
        Suppression(tenant_id="tn_other", email="bob@example.org", reason="manual", created_at=world.clock.now())
    )
    [(message, job)] = _store(world, seeded)

    deliver_message(world.deliver_deps(), job)

    assert _current(world, message).status == MessageStatus.RELAYED


@pytest.mark.parametrize("code", ["5.1.1", "5.1.2", "5.1.3", "5.1.10", "5.5.0"])
def test_a_mailbox_hard_bounce_suppresses_the_address(world: FakeWorld, seeded: Seeded, code: str) -> None:
    world.relay.script["bob@example.org"] = reply(550, f"{code} Recipient address rejected")
    [(message, job), (_, other_job)] = _store(world, seeded, "bob@example.org", "ann@example.org")
    deps = world.deliver_deps()

    deliver_message(deps, job)
    deliver_message(deps, other_job)

    current = _current(world, message)
    assert current.status == MessageStatus.BOUNCED and current.bounce_class == "hard"
    suppression = world.suppressions.get(seeded.tenant.tenant_id, "BOB@example.org")
    assert suppression is not None and suppression.reason == "hard-bounce"
    assert suppression.message_id == message.message_id and code in (suppression.detail or "")
    assert world.suppressions.get(seeded.tenant.tenant_id, "ann@example.org") is None

    # The next email to that address is not sent at all.
    [(again, again_job)] = _store(world, seeded, "bob@example.org")
    deliver_message(deps, again_job)
    assert _current(world, again).status == MessageStatus.SUPPRESSED
    assert len(world.relay.calls) == 2


@pytest.mark.parametrize(
    ("text", "bounce_class"),
    [("5.7.1 Service unavailable; client host blocked", "block"), ("5.2.2 Mailbox full", "hard")],
)
def test_other_bounces_do_not_suppress(world: FakeWorld, seeded: Seeded, text: str, bounce_class: str) -> None:
    world.relay.script["bob@example.org"] = reply(554 if text.startswith("5.7") else 552, text)
    [(message, job)] = _store(world, seeded)

    deliver_message(world.deliver_deps(), job)

    current = _current(world, message)
    assert current.status == MessageStatus.BOUNCED and current.bounce_class == bounce_class
    assert world.suppressions.items == {}


def test_a_message_too_big_bounces_as_message_class(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(552, "5.3.4 Message size exceeds fixed limit", Stage.DATA)
    [(message, job)] = _store(world, seeded)

    deliver_message(world.deliver_deps(), job)

    current = _current(world, message)
    assert (current.status, current.bounce_class) == (MessageStatus.BOUNCED, "message")
    assert world.suppressions.items == {}


def test_a_stale_job_does_nothing_while_the_retry_waits(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = [reply(451, "4.3.0 later"), reply(250, "2.0.0 Ok", Stage.DATA)]
    [(message, job)] = _store(world, seeded)
    deps = world.deliver_deps()
    deliver_message(deps, job)

    again = deliver_message(deps, job)  # the first job, delivered a second time by SQS

    assert again.note == "attempt 0 is done already" and len(world.relay.calls) == 1
    assert _current(world, message).status == MessageStatus.DEFERRED


def test_a_retry_schedule_that_fires_twice_relays_once(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = [reply(451, "4.3.0 later"), reply(250, "2.0.0 Ok", Stage.DATA)]
    [(message, job)] = _store(world, seeded)
    deps = world.deliver_deps()
    deliver_message(deps, job)
    retry = job.model_copy(update={"attempt": 1})

    deliver_message(deps, retry)
    deliver_message(deps, retry)

    assert len(world.relay.calls) == 2 and _current(world, message).status == MessageStatus.RELAYED


def test_a_duplicate_schedule_create_collides(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(451, "4.3.0 later")
    [(message, job)] = _store(world, seeded)
    retry = job.model_copy(update={"attempt": 1})
    world.scheduler.schedule(f"{message.message_id}-1", world.clock.now() + timedelta(minutes=1), retry)

    deliver_message(world.deliver_deps(), job)

    assert world.scheduler.created == 1 and _current(world, message).status == MessageStatus.DEFERRED


def test_the_scheduler_failing_leaves_the_message_to_its_lease(world: FakeWorld, seeded: Seeded) -> None:
    """No schedule, no deferral: the error reaches SQS, which brings the job back after the lease."""
    world.relay.script["bob@example.org"] = [reply(451, "4.3.0 later"), reply(250, "2.0.0 Ok", Stage.DATA)]
    [(message, job)] = _store(world, seeded)
    world.scheduler.down = True

    with pytest.raises(RuntimeError, match="scheduler unreachable"):
        deliver_message(world.deliver_deps(lease_seconds=60), job)

    assert _current(world, message).status == MessageStatus.SENDING
    world.scheduler.down = False
    world.clock.advance(61)
    deliver_message(world.deliver_deps(), job)
    assert _current(world, message).status == MessageStatus.RELAYED


@pytest.mark.parametrize(
    "failure",
    [
        SmtpReply.network(Stage.CONNECT, "connection refused"),
        SmtpReply.network(Stage.DATA, "timed out waiting for the server"),
        SmtpReply.parse(421, "4.3.2 Service shutting down", Stage.MAIL),
    ],
    ids=["refused", "timeout", "421"],
)
def test_a_server_that_fails_mid_batch_defers_the_rest_and_keeps_the_sent(
    world: FakeWorld, seeded: Seeded, failure: SmtpReply
) -> None:
    pairs = _store(world, seeded, "a@example.org", "b@example.org", "c@example.org", "d@example.org")
    world.relay.script["b@example.org"] = failure
    deps = world.deliver_deps()
    batch = Batch()

    for _, job in pairs:
        deliver_message(deps, job, batch=batch)

    statuses = [_current(world, m).status for m, _ in pairs]
    assert statuses == [MessageStatus.RELAYED] + [MessageStatus.DEFERRED] * 3
    assert [c.envelope.recipient for c in world.relay.calls] == ["a@example.org", "b@example.org"]
    later = _current(world, pairs[2][0])
    assert later.events[-1].detail == "server-unavailable" and later.last_reply is not None
    assert later.last_reply.text == failure.text  # the server's problem, visible on every deferred message
    assert len(world.scheduler.schedules) == 3

    deliver_message(deps, pairs[2][1].model_copy(update={"attempt": 1}), batch=Batch())  # the next batch tries it

    assert _current(world, pairs[2][0]).status == MessageStatus.RELAYED


def test_a_recipient_refusal_does_not_stop_the_batch(world: FakeWorld, seeded: Seeded) -> None:
    pairs = _store(world, seeded, "a@example.org", "b@example.org", "c@example.org")
    world.relay.script["a@example.org"] = reply(450, "4.2.1 mailbox busy")
    deps = world.deliver_deps()
    batch = Batch()

    for _, job in pairs:
        deliver_message(deps, job, batch=batch)

    assert [_current(world, m).status for m, _ in pairs] == [
        MessageStatus.DEFERRED,
        MessageStatus.RELAYED,
        MessageStatus.RELAYED,
    ]


def test_traffic_fails_over_to_another_server_of_the_pool(world: FakeWorld, seeded: Seeded) -> None:
    backup = records.server(seeded.tenant.tenant_id, host="backup.example.com")
    world.tenants.put_server(backup)
    world.secrets.put_secret(backup.secret_name, "pw-backup")
    pairs = _store(world, seeded, *(f"r{i}@example.org" for i in range(12)))
    down = SmtpReply.network(Stage.CONNECT, "connection refused")
    relay = world.relay.relay
    tried: list[str] = []

    def primary_down(
        server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
    ) -> SmtpReply:
        tried.append(server.host)
        return down if server.host == "mail.example.com" else relay(server, password, envelope, data, deadline=deadline)

    world.relay.relay = primary_down  # type: ignore[method-assign]
    deps = world.deliver_deps(seed=3)
    batch = Batch()

    for _, job in pairs:
        deliver_message(deps, job, batch=batch)

    statuses = [_current(world, m).status for m, _ in pairs]
    assert tried.count("mail.example.com") <= 1  # once found down, it is not tried again in this batch
    assert statuses.count(MessageStatus.DEFERRED) == tried.count("mail.example.com")
    assert statuses.count(MessageStatus.RELAYED) == 12 - tried.count("mail.example.com")


def test_a_scheduled_message_is_released_by_its_job(world: FakeWorld, seeded: Seeded) -> None:
    [(message, job)] = _store(world, seeded, status=MessageStatus.SCHEDULED)

    delivery = deliver_message(world.deliver_deps(), job)

    assert delivery.result is JobResult.DONE
    assert _current(world, message).status == MessageStatus.RELAYED


def test_a_deferral_is_acknowledged_not_redelivered(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(451, "4.3.0 later")
    [(_, job)] = _store(world, seeded)

    delivery = deliver_message(world.deliver_deps(), job)

    assert isinstance(delivery.outcome, SoftFail) and delivery.result is JobResult.DONE
