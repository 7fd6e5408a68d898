"""One schedule per email for a future `send_at` (issue 7, defect 5), its release, its cancel, and
retention counted from the due time (defect 6)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from petrel.models.api import SendEmailRequest
from petrel.models.jobs import ReleaseJob, SendJob, parse_job
from petrel.models.records import MessageStatus
from petrel.ports import EmailKey, MessageKey, Transition
from petrel.services.cancel import cancel_email
from petrel.services.deliver import deliver_message
from petrel.services.release import ReleaseIncomplete, release_email, release_schedule_name
from petrel.services.submit import submit_email
from tests.fakes import FakeWorld, Seeded


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def _request(**fields: Any) -> SendEmailRequest:
    body: dict[str, Any] = {
        "from": "jane@example.com",
        "to": ["bob@example.org", "carol@example.org", "dan@example.org"],
        "subject": "Later",
        "text": "Hello",
    }
    body.update(fields)
    return SendEmailRequest.model_validate(body)


def test_a_batch_of_100_emails_of_50_recipients_two_days_ahead_makes_100_schedules(
    world: FakeWorld, seeded: Seeded
) -> None:
    when = (world.clock.now() + timedelta(days=2)).isoformat()
    deps = world.submit_deps()

    sent = [
        submit_email(deps, seeded.tenant, _request(to=[f"r{i}-{j}@example.org" for j in range(50)], send_at=when))
        for i in range(100)
    ]

    assert world.scheduler.created == 100
    assert set(world.scheduler.schedules) == {release_schedule_name(s.id) for s in sent}
    assert world.queue.batches == 0
    assert all(r.status is MessageStatus.SCHEDULED for s in sent for r in s.recipients)


def test_a_release_queues_every_scheduled_recipient_and_only_them(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=1)
    sent = submit_email(world.submit_deps(), seeded.tenant, _request(send_at=when.isoformat()))
    bob, carol, dan = sent.recipients
    tenant_id = seeded.tenant.tenant_id
    # carol was cancelled on her own, dan was already released (leased by a worker)
    world.messages.transition(
        MessageKey(tenant_id, sent.id, carol.id),
        expected=[MessageStatus.SCHEDULED],
        attempt=0,
        change=Transition(MessageStatus.CANCELLED),
        now=world.clock.now(),
    )
    now = world.clock.timestamp()
    world.messages.lease(MessageKey(tenant_id, sent.id, dan.id), after_attempt=0, now=now, lease_until=now + 60)
    world.clock.set(when)
    [release] = world.scheduler.fire_due(when, world.queue)

    assert isinstance(release, ReleaseJob)
    assert release_email(world.release_deps(), release).queued == 1
    assert world.queue.drain("transactional") == [
        SendJob(tenant_id=tenant_id, email_id=sent.id, message_id=bob.id, domain="example.org")
    ]


def test_a_release_that_fires_twice_sends_each_recipient_once(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=1)
    sent = submit_email(world.submit_deps(), seeded.tenant, _request(send_at=when.isoformat()))
    world.clock.set(when)
    release = ReleaseJob(tenant_id=seeded.tenant.tenant_id, email_id=sent.id)

    assert release_email(world.release_deps(), release).queued == 3
    assert release_email(world.release_deps(), release).queued == 3  # before any job was taken
    deps = world.deliver_deps()
    for job in world.queue.drain("transactional"):
        deliver_message(deps, job)

    assert len(world.relay.calls) == 3
    assert release_email(world.release_deps(), release).note == "nothing scheduled"  # late: harmless
    assert world.queue.sent["transactional"] == []


def test_a_release_the_queue_refuses_comes_back(world: FakeWorld, seeded: Seeded) -> None:
    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(send_at=(world.clock.now() + timedelta(days=1)).isoformat())
    )
    world.queue.refuse_all = True

    with pytest.raises(ReleaseIncomplete):
        release_email(world.release_deps(), ReleaseJob(tenant_id=seeded.tenant.tenant_id, email_id=sent.id))


def test_a_release_for_an_email_that_is_gone_does_nothing(world: FakeWorld, seeded: Seeded) -> None:
    gone = ReleaseJob(tenant_id=seeded.tenant.tenant_id, email_id="em_01KAAAAAAAAAAAAAAAAAAAAAAA")
    assert release_email(world.release_deps(), gone).note == "no such email"


def test_scheduling_failure_fails_every_recipient(world: FakeWorld, seeded: Seeded) -> None:
    world.scheduler.down = True

    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(send_at=(world.clock.now() + timedelta(days=1)).isoformat())
    )

    assert {r.status for r in sent.recipients} == {MessageStatus.FAILED}
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, sent.id))
    assert found is not None and {m.failure_reason for m in found[1]} == {"enqueue-failed"}
    # failed is final: nothing for the sweeper (the entries stay, and a sweep passes them)
    assert all(world.messages.messages[key].status is MessageStatus.FAILED for key in world.messages.due)


def test_cancel_deletes_the_release_schedule(world: FakeWorld, seeded: Seeded) -> None:
    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(send_at=(world.clock.now() + timedelta(days=1)).isoformat())
    )
    assert list(world.scheduler.schedules) == [release_schedule_name(sent.id)]

    answer = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)

    assert len(answer.cancelled) == 3 and answer.not_cancelled == []
    assert world.scheduler.schedules == {}


def test_cancel_stands_when_the_scheduler_is_down(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=1)
    sent = submit_email(world.submit_deps(), seeded.tenant, _request(send_at=when.isoformat()))
    world.scheduler.down = True

    answer = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)

    assert len(answer.cancelled) == 3
    world.scheduler.down = False
    [release] = world.scheduler.fire_due(when, world.queue)
    assert isinstance(release, ReleaseJob)
    assert release_email(world.release_deps(), release).queued == 0  # fires, and finds nothing to send


def test_a_scheduled_email_is_kept_until_after_its_last_retry(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=30)

    sent = submit_email(world.submit_deps(retention_days=7), seeded.tenant, _request(send_at=when.isoformat()))

    expires = world.messages.expires_at[EmailKey(seeded.tenant.tenant_id, sent.id)]
    last_try = when + timedelta(hours=seeded.tenant.max_age_hours)
    assert expires == int((last_try + timedelta(days=7)).timestamp())
    assert expires > int(last_try.timestamp())  # never gone before it is due, or while it is retried


def test_parse_job_tells_the_kinds_apart() -> None:
    send = SendJob(tenant_id="tn_a", email_id="em_a", message_id="msg_a", attempt=2, pool="bulk")
    release = ReleaseJob(tenant_id="tn_a", email_id="em_a", pool="bulk")

    assert parse_job(send.model_dump_json()) == send
    assert parse_job(release.model_dump_json()) == release
    with pytest.raises(ValueError):
        parse_job('{"kind": "release", "email_id": "em_a"}')
    with pytest.raises(ValueError):
        parse_job("not json")
