"""`send_at` (scheduled sending) and `DELETE /v1/emails/{id}` (cancel) at the service level, with fakes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from petrel.errors import InvalidRequest, NotFound
from petrel.mail.smtp_reply import Stage
from petrel.models.api import SendEmailRequest
from petrel.models.jobs import ReleaseJob
from petrel.models.records import MessageStatus
from petrel.ports import EmailKey, MessageKey
from petrel.services.cancel import cancel_email
from petrel.services.deliver import deliver_message
from petrel.services.release import release_email
from petrel.services.submit import submit_email
from tests.fakes import FakeWorld, Seeded
from tests.fakes.smtp import reply


def _request(**fields: Any) -> SendEmailRequest:
    body: dict[str, Any] = {
        "from": "jane@example.com",
        "to": ["bob@example.org", "carol@example.org"],
        "subject": "Later",
        "text": "Hello",
    }
    body.update(fields)
    return SendEmailRequest.model_validate(body)


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def _statuses(world: FakeWorld, tenant_id: str, email_id: str) -> dict[str, MessageStatus]:
    found = world.messages.get_email(EmailKey(tenant_id, email_id))
    assert found is not None
    return {m.recipient: m.status for m in found[1]}


def test_send_at_days_ahead_is_one_release_schedule_per_email(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=3)

    sent = submit_email(world.submit_deps(), seeded.tenant, _request(send_at=when.isoformat()))

    assert [r.status for r in sent.recipients] == [MessageStatus.SCHEDULED] * 2
    assert world.queue.sent["transactional"] == []
    assert list(world.scheduler.schedules) == [f"{sent.id}-release"]
    [schedule] = world.scheduler.schedules.values()
    assert schedule.at == when
    assert schedule.job == ReleaseJob(tenant_id=seeded.tenant.tenant_id, email_id=sent.id, pool="transactional")
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, sent.id))
    assert found is not None
    assert all(m.next_attempt_at == when and m.events[0].type == "email.scheduled" for m in found[1])

    # At its time Scheduler puts the release on the queue; the worker queues each recipient, then sends.
    world.clock.set(when)
    [release] = world.scheduler.fire_due(when, world.queue)
    assert isinstance(release, ReleaseJob)
    assert release_email(world.release_deps(), release).queued == 2
    deps = world.deliver_deps()
    for job in world.queue.drain("transactional"):
        deliver_message(deps, job)
    assert set(_statuses(world, seeded.tenant.tenant_id, sent.id).values()) == {MessageStatus.RELAYED}


def test_send_at_minutes_ahead_waits_in_the_queue(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(minutes=10, milliseconds=300)

    sent = submit_email(world.submit_deps(), seeded.tenant, _request(send_at=when.isoformat()))

    assert [r.status for r in sent.recipients] == [MessageStatus.SCHEDULED] * 2
    assert world.scheduler.schedules == {}
    assert {world.queue.delays[r.id] for r in sent.recipients} == {601}


def test_send_at_in_the_past_sends_now(world: FakeWorld, seeded: Seeded) -> None:
    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(send_at=(world.clock.now() - timedelta(hours=1)).isoformat())
    )

    assert [r.status for r in sent.recipients] == [MessageStatus.QUEUED] * 2
    assert {world.queue.delays[r.id] for r in sent.recipients} == {0}


def test_send_at_more_than_30_days_ahead_is_refused(world: FakeWorld, seeded: Seeded) -> None:
    with pytest.raises(InvalidRequest) as caught:
        submit_email(
            world.submit_deps(),
            seeded.tenant,
            _request(send_at=(world.clock.now() + timedelta(days=30, minutes=1)).isoformat()),
        )
    assert caught.value.extra["errors"][0]["pointer"] == "/send_at"
    assert world.messages.emails == {}


def test_send_at_needs_an_offset() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        _request(send_at="2026-12-01T10:00:00")


def test_a_scheduler_failure_fails_the_message_instead_of_losing_it(world: FakeWorld, seeded: Seeded) -> None:
    world.scheduler.down = True

    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(send_at=(world.clock.now() + timedelta(days=1)).isoformat())
    )

    assert [r.status for r in sent.recipients] == [MessageStatus.FAILED] * 2
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, sent.id))
    assert found is not None and {m.failure_reason for m in found[1]} == {"enqueue-failed"}


def test_cancel_a_scheduled_email_deletes_its_schedules(world: FakeWorld, seeded: Seeded) -> None:
    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(send_at=(world.clock.now() + timedelta(days=1)).isoformat())
    )

    answer = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)

    assert {c.email for c in answer.cancelled} == {"bob@example.org", "carol@example.org"}
    assert answer.not_cancelled == []
    assert world.scheduler.schedules == {}
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, sent.id))
    assert found is not None
    assert all(m.status == MessageStatus.CANCELLED and m.events[-1].type == "email.cancelled" for m in found[1])


def test_cancel_reports_what_had_already_gone(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.script["carol@example.org"] = reply(451, "4.3.0 later")
    world.relay.default = reply(250, "2.0.0 Ok", Stage.DATA)
    sent = submit_email(
        world.submit_deps(), seeded.tenant, _request(to=["bob@example.org", "carol@example.org", "dan@example.org"])
    )
    jobs = {j.message_id: j for j in world.queue.drain("transactional")}
    ids = {r.email: r.id for r in sent.recipients}
    deps = world.deliver_deps()
    deliver_message(deps, jobs[ids["bob@example.org"]])  # relayed
    deliver_message(deps, jobs[ids["carol@example.org"]])  # deferred, a retry scheduled
    assert len(world.scheduler.schedules) == 1

    answer = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)

    assert sorted(c.email for c in answer.cancelled) == ["carol@example.org", "dan@example.org"]
    assert [(c.email, c.status) for c in answer.not_cancelled] == [("bob@example.org", MessageStatus.RELAYED)]
    assert world.scheduler.schedules == {}  # the retry will not fire
    # The queued job of dan arrives later and does nothing.
    delivery = deliver_message(deps, jobs[ids["dan@example.org"]])
    assert delivery.note == "already cancelled" and len(world.relay.calls) == 2

    again = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)  # a repeated DELETE
    assert sorted(c.email for c in again.cancelled) == ["carol@example.org", "dan@example.org"]


def test_cancel_never_overtakes_a_worker(world: FakeWorld, seeded: Seeded) -> None:
    sent = submit_email(world.submit_deps(), seeded.tenant, _request(to=["bob@example.org"]))
    [job] = world.queue.drain("transactional")
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(job), after_attempt=0, now=now, lease_until=now + 60)

    answer = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)

    assert answer.cancelled == [] and [c.status for c in answer.not_cancelled] == [MessageStatus.SENDING]


def test_cancel_of_an_unknown_or_foreign_email_is_not_found(world: FakeWorld, seeded: Seeded) -> None:
    sent = submit_email(world.submit_deps(), seeded.tenant, _request())
    other = world.seed(domain="other.example")

    with pytest.raises(NotFound):
        cancel_email(world.cancel_deps(), other.tenant.tenant_id, sent.id)
    with pytest.raises(NotFound):
        cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, "em_nope")


def test_cancel_of_deferred_messages_stands_when_the_scheduler_is_down(world: FakeWorld, seeded: Seeded) -> None:
    """Each deferred message is cancelled, then its retry schedule deleted: Scheduler failing at that
    second step must not fail the request after the first message was cancelled (nor leave the others
    uncancelled). The retry left in place fires a job that finds the message cancelled."""
    world.relay.default = reply(451, "4.3.0 later")
    sent = submit_email(world.submit_deps(), seeded.tenant, _request())
    deps = world.deliver_deps()
    for job in world.queue.drain("transactional"):
        deliver_message(deps, job)
    assert set(_statuses(world, seeded.tenant.tenant_id, sent.id).values()) == {MessageStatus.DEFERRED}
    world.scheduler.down = True

    answer = cancel_email(world.cancel_deps(), seeded.tenant.tenant_id, sent.id)

    assert sorted(c.email for c in answer.cancelled) == ["bob@example.org", "carol@example.org"]
    assert set(_statuses(world, seeded.tenant.tenant_id, sent.id).values()) == {MessageStatus.CANCELLED}
    world.scheduler.down = False
    fired = world.scheduler.fire_due(world.clock.now() + timedelta(days=1), world.queue)
    assert len(fired) == 2
    calls = len(world.relay.calls)
    assert all(deliver_message(deps, job).note == "already cancelled" for job in world.queue.drain("transactional"))
    assert len(world.relay.calls) == calls
