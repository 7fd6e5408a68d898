"""services.deliver with fakes: lease, relay, classify, record; retries and concurrency."""

from __future__ import annotations

from collections import Counter

import pytest

from petrel.mail.smtp_reply import HardFail, PermanentFail, Relayed, SmtpReply, SoftFail, Stage
from petrel.models.jobs import SendJob
from petrel.models.records import EmailRecord, MessageRecord, MessageStatus
from petrel.ports import Envelope, MessageKey
from petrel.services.deliver import Batch, DeliverDeps, JobResult, choose_server, deliver_message
from tests.fakes import FakeWorld, Seeded, records
from tests.fakes.smtp import reply

BODY = b"From: sender@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed(return_path="bounce.example.com", password="pw-1")


def _store(
    world: FakeWorld, seeded: Seeded, recipient: str = "bob@example.org", **kwargs: object
) -> tuple[EmailRecord, MessageRecord, SendJob]:
    email, (message,) = records.email(seeded.tenant.tenant_id, [recipient], body=BODY, **kwargs)  # type: ignore[arg-type]
    world.messages.create_email(email, [message], 0)
    return (
        email,
        message,
        SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id),
    )


def _current(world: FakeWorld, message: MessageRecord) -> MessageRecord:
    found = world.messages.get_message(MessageKey.of(message))
    assert found is not None
    return found


def _deps(world: FakeWorld, **kwargs: object) -> DeliverDeps:
    return world.deliver_deps(**kwargs)  # type: ignore[arg-type]


def test_relayed(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded)

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE and isinstance(delivery.outcome, Relayed)
    current = _current(world, message)
    assert current.status == MessageStatus.RELAYED and current.attempt == 1 and current.lease_until is None
    assert current.last_reply is not None and current.last_reply.code == 250
    assert current.last_reply.enhanced == "2.0.0" and current.last_reply.stage == "data"
    [attempt] = current.attempts
    assert attempt.number == 1 and attempt.outcome == "relayed" and attempt.server_id == seeded.server.server_id
    assert attempt.started_at == attempt.finished_at == world.clock.now()
    assert attempt.reply == current.last_reply
    assert [e.type for e in current.events] == ["email.queued", "email.sent"]
    assert current.events[-1].reply == current.last_reply


def test_envelope_uses_a_verp_return_path_and_the_message_id_as_envid(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded, return_path=False)  # made from the sending domain's settings

    deliver_message(_deps(world), job)

    [call] = world.relay.calls
    assert call.envelope == Envelope(
        sender=f"bounces+{message.message_id}@bounce.example.com",
        recipient="bob@example.org",
        envid=message.message_id,
    )
    assert call.data == BODY
    assert call.server == seeded.server and call.password == "pw-1"


def test_return_path_falls_back_to_the_from_domain(world: FakeWorld, seeded: Seeded) -> None:
    # Mail from a domain the tenant does not have goes out only while it allows unverified domains.
    world.tenants.put_tenant(seeded.tenant.model_copy(update={"allow_unverified_domains": True}))
    _, message, job = _store(world, seeded, from_address="Jane <jane@unregistered.example>")

    deliver_message(_deps(world), job)

    assert world.relay.calls[0].envelope.sender == f"bounces+{message.message_id}@unregistered.example"


def test_body_from_the_blob_store_read_once_per_email(world: FakeWorld, seeded: Seeded) -> None:
    world.blobs.put("bodies/x.eml", b"big body\r\n")
    email, messages = records.email(
        seeded.tenant.tenant_id, ["a@example.org", "b@example.org"], body_key="bodies/x.eml"
    )
    world.messages.create_email(email, messages, 0)
    deps = _deps(world)

    for message in messages:
        deliver_message(
            deps, SendJob(tenant_id=email.tenant_id, email_id=email.email_id, message_id=message.message_id)
        )

    assert [c.data for c in world.relay.calls] == [b"big body\r\n"] * 2
    assert world.blobs.gets == 1  # the worker keeps a body for the batch's other recipients


def test_unknown_mailbox_bounces_hard(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(550, "5.1.1 <bob@example.org>: Recipient address rejected")
    _, message, job = _store(world, seeded)

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE
    assert isinstance(delivery.outcome, HardFail) and delivery.outcome.suppress
    current = _current(world, message)
    assert current.status == MessageStatus.BOUNCED and current.bounce_class == "hard"
    assert current.last_reply is not None and current.last_reply.enhanced == "5.1.1"
    assert current.last_reply.stage == "rcpt"
    assert [(e.type, e.detail) for e in current.events][-1] == ("email.bounced", "hard")
    assert current.attempts[0].outcome == "hardfail"


def test_sender_refused_fails_the_message(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = reply(553, "5.7.1 sender not owned by user", Stage.MAIL)
    _, message, job = _store(world, seeded)

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE and isinstance(delivery.outcome, PermanentFail)
    current = _current(world, message)
    assert current.status == MessageStatus.FAILED and current.failure_reason == "sender-refused"
    assert current.events[-1].type == "email.failed"


def test_temporary_failure_defers_then_a_later_delivery_relays(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = [
        reply(451, "4.3.0 Temporary lookup failure"),
        reply(250, "2.0.0 Ok: queued", Stage.DATA),
    ]
    _, message, job = _store(world, seeded)
    deps = _deps(world)

    first = deliver_message(deps, job)

    # Acknowledged: the next attempt is a schedule, not an SQS redelivery.
    assert first.result is JobResult.DONE and isinstance(first.outcome, SoftFail)
    deferred = _current(world, message)
    assert deferred.status == MessageStatus.DEFERRED and deferred.attempt == 1 and deferred.lease_until is None
    assert deferred.last_reply is not None and deferred.last_reply.code == 451
    assert deferred.events[-1].type == "email.deferred" and deferred.events[-1].detail == "temporary-failure"
    [schedule] = world.scheduler.schedules.values()
    assert schedule.name == f"{message.message_id}-1" and schedule.at == deferred.next_attempt_at
    assert schedule.job == job.model_copy(update={"attempt": 1, "domain": message.recipient.rpartition("@")[2]})

    assert deliver_message(deps, job).note == "attempt 0 is done already"  # SQS redelivered the first job
    world.clock.advance(minutes=2)
    [retry] = world.scheduler.fire_due(world.clock.now(), world.queue)
    second = deliver_message(deps, retry)

    assert second.result is JobResult.DONE and isinstance(second.outcome, Relayed)
    current = _current(world, message)
    assert current.status == MessageStatus.RELAYED and current.attempt == 2
    assert [(a.number, a.outcome) for a in current.attempts] == [(1, "softfail"), (2, "relayed")]
    assert [e.type for e in current.events] == ["email.queued", "email.deferred", "email.sent"]
    assert len(world.relay.calls) == 2


def test_a_job_for_a_relayed_message_does_nothing(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded)
    deliver_message(_deps(world), job)
    before = _current(world, message)

    again = deliver_message(_deps(world), job)  # SQS delivered the job twice

    assert again.result is JobResult.DONE and again.outcome is None and "already relayed" in again.note
    assert len(world.relay.calls) == 1
    assert _current(world, message) == before


@pytest.mark.parametrize("status", [MessageStatus.BOUNCED, MessageStatus.CANCELLED, MessageStatus.FAILED])
def test_finished_messages_are_not_relayed(world: FakeWorld, seeded: Seeded, status: MessageStatus) -> None:
    _, _, job = _store(world, seeded, status=status)

    assert deliver_message(_deps(world), job).result is JobResult.DONE
    assert world.relay.calls == []


def test_a_job_for_an_unknown_message_is_acknowledged(world: FakeWorld, seeded: Seeded) -> None:
    job = SendJob(tenant_id=seeded.tenant.tenant_id, email_id="em_x", message_id="msg_x")

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE and delivery.note == "no such message"
    assert world.relay.calls == []


def test_a_message_leased_by_another_worker_is_retried_later(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded)
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 120)
    world.clock.advance(60)

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.RETRY and delivery.note == "leased by another worker"
    assert world.relay.calls == []
    current = _current(world, message)
    assert current.status == MessageStatus.SENDING and current.attempt == 1 and current.lease_until == now + 120


def test_an_expired_lease_is_taken_over(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded)
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 120)
    world.clock.advance(121)  # that worker died

    delivery = deliver_message(_deps(world), job)

    assert isinstance(delivery.outcome, Relayed)
    current = _current(world, message)
    # The same attempt, taken over and counted: a takeover is not a new attempt.
    assert current.status == MessageStatus.RELAYED and current.attempt == 1 and current.takeovers == 1
    assert [a.number for a in current.attempts] == [1]


def test_the_lease_lasts_lease_seconds(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded)
    seen: list[int | None] = []
    relay = world.relay.relay

    def spy(*args: object, **kwargs: object) -> SmtpReply:
        seen.append(_current(world, message).lease_until)
        return relay(*args, **kwargs)  # type: ignore[arg-type]

    world.relay.relay = spy  # type: ignore[method-assign]
    deliver_message(_deps(world, lease_seconds=45), job)

    assert seen == [world.clock.timestamp() + 45]


def test_a_lease_lost_during_the_relay_is_not_overwritten(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded)
    relay = world.relay.relay

    def slow_relay(*args: object, **kwargs: object) -> SmtpReply:
        later = world.clock.timestamp() + 500  # the lease expired and another worker took the message
        world.messages.lease(MessageKey.of(message), after_attempt=0, now=later, lease_until=later + 120)
        return relay(*args, **kwargs)  # type: ignore[arg-type]

    world.relay.relay = slow_relay  # type: ignore[method-assign]
    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE and "lease lost" in delivery.note
    current = _current(world, message)
    # Same attempt, but the lease is the other worker's: this worker's outcome is not written over it.
    assert current.status == MessageStatus.SENDING and current.attempt == 1 and current.attempts == ()
    assert current.takeovers == 1 and current.lease_until is not None and current.lease_until > world.clock.timestamp()


def test_no_server_in_the_pool_defers(world: FakeWorld, seeded: Seeded) -> None:
    _, message, job = _store(world, seeded, pool="bulk")  # the tenant has only a transactional server

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE
    assert isinstance(delivery.outcome, SoftFail) and delivery.outcome.reason == "no-server"
    assert world.relay.calls == []
    current = _current(world, message)
    assert current.status == MessageStatus.DEFERRED
    assert current.events[-1].type == "email.deferred" and current.events[-1].detail == "no-server"
    assert current.last_reply is not None and current.last_reply.code == 0
    assert current.attempts[0].server_id is None


def test_disabled_servers_are_not_used(world: FakeWorld, seeded: Seeded) -> None:
    world.tenants.put_server(seeded.server.model_copy(update={"enabled": False}))
    _, _, job = _store(world, seeded)

    delivery = deliver_message(_deps(world), job)

    assert isinstance(delivery.outcome, SoftFail) and delivery.outcome.reason == "no-server"
    assert world.relay.calls == []


def test_secret_store_failure_defers(world: FakeWorld, seeded: Seeded) -> None:
    world.secrets.down = True
    _, message, job = _store(world, seeded)

    delivery = deliver_message(_deps(world), job)

    assert delivery.result is JobResult.DONE
    assert isinstance(delivery.outcome, SoftFail) and delivery.outcome.reason == "secret-unavailable"
    assert world.relay.calls == []
    current = _current(world, message)
    assert current.status == MessageStatus.DEFERRED
    assert current.attempts[0].server_id == seeded.server.server_id
    assert "SecretStoreDown" in (current.last_reply.text if current.last_reply else "")
    assert "pw-1" not in current.model_dump_json()


def test_a_refused_password_is_read_again_on_the_next_attempt(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["bob@example.org"] = [
        reply(535, "5.7.8 Authentication credentials invalid", Stage.AUTH),
        reply(250, "2.0.0 Ok", Stage.DATA),
    ]
    _, message, job = _store(world, seeded)
    deps = _deps(world, cache_seconds=3600)  # even with a long cache

    first = deliver_message(deps, job)
    assert isinstance(first.outcome, SoftFail) and first.outcome.reason == "auth-refused"
    assert _current(world, message).status == MessageStatus.DEFERRED

    world.secrets.put_secret(seeded.server.secret_name, "pw-2")  # the operator fixed the password (on the store)
    deliver_message(deps, job.model_copy(update={"attempt": 1}))

    assert [c.password for c in world.relay.calls] == ["pw-1", "pw-2"]
    assert world.secrets.reads == 2  # the cache forgot the refused password
    assert _current(world, message).status == MessageStatus.RELAYED


def test_weighted_choice_uses_only_enabled_servers_of_the_pool(world: FakeWorld, seeded: Seeded) -> None:
    tenant_id = seeded.tenant.tenant_id
    world.tenants.delete_server(tenant_id, seeded.server.server_id)
    light = records.server(tenant_id, weight=1, host="light.example.com")
    heavy = records.server(tenant_id, weight=3, host="heavy.example.com")
    disabled = records.server(tenant_id, weight=1000, enabled=False, host="off.example.com")
    bulk = records.server(tenant_id, weight=1000, pool="bulk", host="bulk.example.com")
    for server in (light, heavy, disabled, bulk):
        world.tenants.put_server(server)
    deps = _deps(world, seed=1234)

    picks = Counter(choose_server(deps, Batch(), tenant_id, "transactional").host for _ in range(4000))  # type: ignore[union-attr]

    assert set(picks) == {"light.example.com", "heavy.example.com"}
    assert 2.6 < picks["heavy.example.com"] / picks["light.example.com"] < 3.4
    chosen = choose_server(deps, Batch(), tenant_id, "bulk")
    assert chosen is not None and chosen.host == "bulk.example.com"


def test_messages_relay_through_their_pools_servers(world: FakeWorld, seeded: Seeded) -> None:
    bulk = records.server(seeded.tenant.tenant_id, pool="bulk", host="bulk.example.com")
    world.tenants.put_server(bulk)
    world.secrets.put_secret(bulk.secret_name, "bulk-pw")
    _, _, bulk_job = _store(world, seeded, "a@example.org", pool="bulk")
    _, _, transactional_job = _store(world, seeded, "b@example.org")
    deps = _deps(world)

    deliver_message(deps, bulk_job)
    deliver_message(deps, transactional_job)

    assert [(c.server.host, c.password) for c in world.relay.calls] == [
        ("bulk.example.com", "bulk-pw"),
        ("mail.example.com", "pw-1"),
    ]
