"""The sweeper (issue 7, defect 5): every non-final message has a way forward, and one that lost it
is put back on its queue, once, and then reaches a final state through the worker."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest

from petrel import resources
from petrel.ids import new_email_id
from petrel.mail.smtp_reply import Stage
from petrel.models.api import SendEmailRequest
from petrel.models.jobs import SendJob
from petrel.models.records import MessageRecord, MessageStatus
from petrel.ports import MessageKey, Transition, WriteConflict
from petrel.services.deliver import deliver_message
from petrel.services.release import send_job
from petrel.services.submit import store_email
from petrel.services.sweep import sweep
from tests.fakes import FakeWorld, Seeded
from tests.fakes.smtp import reply

GRACE = 900


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def _request(**fields: Any) -> SendEmailRequest:
    body: dict[str, Any] = {"from": "jane@example.com", "to": ["bob@example.org"], "subject": "Hi", "text": "Hello"}
    body.update(fields)
    return SendEmailRequest.model_validate(body)


def _stored_without_job(world: FakeWorld, seeded: Seeded, **fields: Any) -> MessageRecord:
    """What a crash between storing and enqueuing leaves: the message, and no job anywhere."""
    request = _request(**fields)
    now = world.clock.now()
    send_at = request.send_at
    _, [message] = store_email(
        world.submit_deps(),
        seeded.tenant,
        request,
        email_id=new_email_id(),
        from_domain="example.com",
        body=b"Subject: Hi\r\n\r\nHello\r\n",
        now=now,
        send_at=send_at,
    )
    assert world.queue.sent["transactional"] == [] and world.scheduler.schedules == {}
    return message


def _current(world: FakeWorld, message: MessageRecord) -> MessageRecord:
    found = world.messages.get_message(MessageKey.of(message))
    assert found is not None
    return found


def _key(message: MessageRecord) -> MessageKey:
    return MessageKey.of(message)


def _deliver_all(world: FakeWorld) -> None:
    deps = world.deliver_deps()
    for job in world.queue.drain("transactional"):
        deliver_message(deps, job)


def test_due_times_follow_the_waiting_statuses_and_stay_for_the_final_ones(world: FakeWorld, seeded: Seeded) -> None:
    world.relay.default = reply(451, "4.7.1 try later")
    message = _stored_without_job(world, seeded)
    assert _key(message) not in world.messages.due  # queued at its creation: its tenant's creation shard

    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 120)
    assert _key(message) not in world.messages.due  # sending: none still (the lease writes no index)
    world.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=1,
        change=_deferred(world, minutes=5),
        now=world.clock.now(),
    )
    assert world.messages.due[_key(message)] == now + 300  # deferred: its next attempt
    world.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.DEFERRED],
        attempt=1,
        change=_cancelled(),
        now=world.clock.now(),
    )
    assert world.messages.due[_key(message)] == now + 300  # final: left where it was, for the sweeper to pass


def _deferred(world: FakeWorld, *, minutes: int) -> Transition:
    return Transition(MessageStatus.DEFERRED, next_attempt_at=world.clock.now() + timedelta(minutes=minutes))


def _cancelled() -> Transition:
    return Transition(MessageStatus.CANCELLED)


def test_a_scheduled_message_is_due_at_its_send_time(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=2)
    message = _stored_without_job(world, seeded, send_at=when.isoformat())
    assert message.status is MessageStatus.SCHEDULED
    assert world.messages.due[_key(message)] == int(when.timestamp())


def test_a_queued_message_without_a_job_is_requeued_and_sent(world: FakeWorld, seeded: Seeded) -> None:
    message = _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.repaired == {MessageStatus.QUEUED: 1} and report.total == 1
    assert world.queue.sent["transactional"] == [
        SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id, attempt=0)
    ]
    _deliver_all(world)
    assert _current(world, message).status is MessageStatus.RELAYED
    world.clock.advance(GRACE + 1)  # its entry (moved to the repair's time) is due again: passed, final
    later = sweep(world.sweep_deps(grace_seconds=GRACE))
    assert (later.examined, later.passed, later.total) == (0, 1, 0)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).passed == 0  # behind the watermark now


def test_each_tenant_is_swept_through_its_own_creation_shard_even_one_added_since_the_last_run(
    world: FakeWorld, seeded: Seeded
) -> None:
    first = _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).repaired == {MessageStatus.QUEUED: 1}
    _deliver_all(world)
    newcomer = world.seed(domain="example.net")  # a tenant that did not exist at that run
    second = _stored_without_job(world, newcomer, **{"from": "jane@example.net"})
    late = _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.repaired == {MessageStatus.QUEUED: 2}
    jobs = world.queue.drain("transactional")
    assert sorted(j.message_id for j in jobs) == sorted(m.message_id for m in (second, late))
    assert _current(world, first).status is MessageStatus.RELAYED
    for tenant in (seeded.tenant.tenant_id, newcomer.tenant.tenant_id):
        assert world.messages.due_watermark(resources.creation_shard(tenant)) is not None


def test_nothing_within_its_grace_is_repaired(world: FakeWorld, seeded: Seeded) -> None:
    _stored_without_job(world, seeded)
    world.clock.advance(GRACE - 1)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.total == 0 and report.examined == 0 and world.queue.sent["transactional"] == []


def test_a_repair_is_made_once_then_again_only_a_grace_later(world: FakeWorld, seeded: Seeded) -> None:
    _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)

    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 1
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 0  # a repeated run
    world.clock.advance(GRACE - 1)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 0
    assert len(world.queue.sent["transactional"]) == 1
    world.queue.drain("transactional")  # that job was lost too
    world.clock.advance(2)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 1


def test_two_sweepers_seeing_the_same_message_repair_it_once(world: FakeWorld, seeded: Seeded) -> None:
    message = _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)
    shard = resources.creation_shard(message.tenant_id)
    [seen] = world.messages.find_due(shard, due_before=world.clock.timestamp(), limit=10, cursor=None).messages
    assert seen.due_at is None

    world.messages.claim_repair(seen, now=world.clock.timestamp())
    with pytest.raises(WriteConflict):
        world.messages.claim_repair(seen, now=world.clock.timestamp())


def test_a_message_that_moved_on_after_it_was_seen_is_left_alone(world: FakeWorld, seeded: Seeded) -> None:
    message = _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)
    shard = resources.creation_shard(message.tenant_id)
    [seen] = world.messages.find_due(shard, due_before=world.clock.timestamp(), limit=10, cursor=None).messages
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 120)

    with pytest.raises(WriteConflict):
        world.messages.claim_repair(seen, now=now)


def test_a_scheduled_message_past_due_is_released(world: FakeWorld, seeded: Seeded) -> None:
    when = world.clock.now() + timedelta(days=2)
    message = _stored_without_job(world, seeded, send_at=when.isoformat())  # its release schedule was lost
    world.clock.set(when + timedelta(seconds=GRACE - 1))
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 0
    world.clock.advance(2)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.repaired == {MessageStatus.SCHEDULED: 1}
    _deliver_all(world)
    assert _current(world, message).status is MessageStatus.RELAYED


def test_a_deferred_message_past_its_next_attempt_is_retried(world: FakeWorld, seeded: Seeded) -> None:
    message = _stored_without_job(world, seeded)
    world.queue.send_jobs("transactional", [send_job(message)])
    world.relay.default = reply(451, "4.7.1 try later", Stage.RCPT)
    _deliver_all(world)
    deferred = _current(world, message)
    assert deferred.status is MessageStatus.DEFERRED and deferred.next_attempt_at is not None
    world.scheduler.schedules.clear()  # the retry's schedule was lost
    world.clock.set(deferred.next_attempt_at + timedelta(seconds=GRACE + 1))
    world.relay.default = reply(250, "2.0.0 Ok", Stage.DATA)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.repaired == {MessageStatus.DEFERRED: 1}
    [job] = world.queue.sent["transactional"]
    assert isinstance(job, SendJob) and job.attempt == 1
    _deliver_all(world)
    relayed = _current(world, message)
    assert relayed.status is MessageStatus.RELAYED and relayed.attempt == 2


def test_a_sending_message_whose_lease_long_expired_is_taken_over(world: FakeWorld, seeded: Seeded) -> None:
    message = _stored_without_job(world, seeded)
    now = world.clock.timestamp()
    world.messages.lease(
        MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 120
    )  # then the worker died, and its job was acknowledged or lost
    world.clock.advance(120 + GRACE - 1)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 0  # the lease is expired, but within grace
    world.clock.advance(2)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.repaired == {MessageStatus.SENDING: 1}
    [job] = world.queue.sent["transactional"]
    assert isinstance(job, SendJob) and job.attempt == 0  # the job of the attempt in flight: a takeover
    _deliver_all(world)
    relayed = _current(world, message)
    assert relayed.status is MessageStatus.RELAYED and relayed.attempt == 1
    assert len(world.relay.calls) == 1


def test_a_live_lease_found_due_is_looked_at_again_at_its_end_and_only_then_repaired(
    world: FakeWorld, seeded: Seeded
) -> None:
    message = _stored_without_job(world, seeded)
    created = world.clock.timestamp()
    world.clock.advance(60)
    now = world.clock.timestamp()
    lease_until = now + 3 * GRACE  # a long lease, still held when the creation's due time is swept
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=lease_until)
    world.clock.advance(GRACE)

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.total == 0 and report.leased == 1 and world.queue.sent["transactional"] == []
    assert world.messages.due[_key(message)] == lease_until != created
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).examined == 0  # not due again before then
    world.clock.advance(lease_until + GRACE + 1 - world.clock.timestamp())  # the worker died: lease over

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.repaired == {MessageStatus.SENDING: 1} and report.leased == 0
    [job] = world.queue.sent["transactional"]
    assert isinstance(job, SendJob) and job.attempt == 0  # the takeover of the attempt in flight
    _deliver_all(world)
    assert _current(world, message).status is MessageStatus.RELAYED


def test_a_repair_the_queue_refuses_is_retried_a_grace_later(world: FakeWorld, seeded: Seeded) -> None:
    _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)
    world.queue.refuse_all = True

    report = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert report.total == 0 and report.requeue_failed == 1
    world.queue.refuse_all = False
    world.clock.advance(GRACE)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).total == 1


def test_a_run_is_bounded_and_the_rest_waits_for_the_next(world: FakeWorld, seeded: Seeded) -> None:
    for _ in range(25):
        _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)

    first = sweep(world.sweep_deps(grace_seconds=GRACE, max_messages=10))
    second = sweep(world.sweep_deps(grace_seconds=GRACE, max_messages=10))
    third = sweep(world.sweep_deps(grace_seconds=GRACE, max_messages=10))

    assert (first.total, second.total, third.total) == (10, 10, 5)
    assert first.truncated
    assert len({j.message_id for j in world.queue.drain("transactional")}) == 25


def _unrelated_jobs(world: FakeWorld, count: int) -> None:
    """Other messages' jobs waiting on the transactional queue: a backlog."""
    jobs = [SendJob(tenant_id="tn_other", email_id="em_other", message_id=f"msg_{n}") for n in range(count)]
    assert world.queue.send_jobs("transactional", jobs) == []


def test_waiting_messages_behind_a_backlog_are_left_alone_until_it_drains(world: FakeWorld, seeded: Seeded) -> None:
    """A backlog is not a lost job: repairing every waiting message each grace would feed the backlog."""
    message = _stored_without_job(world, seeded)
    assert _key(message) not in world.messages.due  # queued at its creation: its creation shard's
    _unrelated_jobs(world, 5)
    world.clock.advance(GRACE + 1)

    first = sweep(world.sweep_deps(grace_seconds=GRACE, backlog_limit=4))  # found in its creation shard
    assert first.total == 0 and first.backlogged == 1 and first.adopted == 1
    due = world.messages.due[_key(message)]  # given a due time, once: the due shards' from now on
    world.clock.advance(GRACE + 1)
    for _ in range(3):  # each run reads it again in its due shard, and writes nothing
        report = sweep(world.sweep_deps(grace_seconds=GRACE, backlog_limit=4))
        assert report.total == 0 and report.backlogged == 1 and report.backlogs == {"transactional": 5}
        assert report.adopted == 0  # its creation shard's watermark is past it
        assert len(world.queue.sent["transactional"]) == 5  # no job added
        assert world.messages.due[_key(message)] == due  # not moved: it holds the watermark
        world.clock.advance(GRACE)
    world.queue.drain("transactional")  # the workers caught up: the message's job was not among them

    report = sweep(world.sweep_deps(grace_seconds=GRACE, backlog_limit=4))

    assert report.repaired == {MessageStatus.QUEUED: 1} and report.backlogged == 0
    _deliver_all(world)
    assert _current(world, message).status is MessageStatus.RELAYED


def test_a_backlog_holds_the_watermark_without_hiding_a_dead_lease_behind_it(world: FakeWorld, seeded: Seeded) -> None:
    """A waiting message held behind a backlog does not stop the run: a dead worker's lease due after it
    is still repaired, and once the queue drains the held message is repaired too."""
    waiting = _stored_without_job(world, seeded)
    world.clock.advance(1)
    leased = _stored_without_job(world, seeded)
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(leased), after_attempt=0, now=now, lease_until=now + 1)
    _unrelated_jobs(world, 5)
    world.clock.advance(GRACE + 2)

    report = sweep(world.sweep_deps(grace_seconds=GRACE, backlog_limit=4))

    assert report.repaired == {MessageStatus.SENDING: 1} and report.backlogged == 1 and report.adopted == 1
    world.queue.drain("transactional")
    world.clock.advance(GRACE + 1)  # the held message was given a due time (now): looked at a grace later
    report = sweep(world.sweep_deps(grace_seconds=GRACE, backlog_limit=4))
    # the drain took the lease's repair job too (no worker ran it): that one is repaired again
    assert report.repaired == {MessageStatus.QUEUED: 1, MessageStatus.SENDING: 1} and report.backlogged == 0
    _deliver_all(world)
    assert _current(world, waiting).status is MessageStatus.RELAYED
    assert _current(world, leased).status is MessageStatus.RELAYED


def test_a_dead_workers_lease_is_repaired_whatever_the_backlog(world: FakeWorld, seeded: Seeded) -> None:
    message = _stored_without_job(world, seeded)
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 120)
    _unrelated_jobs(world, 5)
    world.clock.advance(120 + GRACE + 1)

    report = sweep(world.sweep_deps(grace_seconds=GRACE, backlog_limit=0))

    assert report.repaired == {MessageStatus.SENDING: 1} and report.backlogged == 0
    assert report.backlogs == {}  # the queue was not even asked


# -- the watermark: entries stay (a lease and a final status write no index); each is looked at once,
# and the watermark never passes an entry that was not looked at or that must be looked at again.
# A creation shard's entries are a tenant's messages, queued or not: each is looked at once too.


def test_relayed_messages_are_passed_once_and_the_watermark_moves_past_them(world: FakeWorld, seeded: Seeded) -> None:
    messages = [_stored_without_job(world, seeded) for _ in range(12)]
    for message in messages:  # relayed on their first try, through the worker
        world.queue.send_jobs("transactional", [send_job(message)])
    _deliver_all(world)
    assert all(_current(world, m).status is MessageStatus.RELAYED for m in messages)
    assert not any(_key(m) in world.messages.due for m in messages)  # in their tenant's creation shard only
    world.clock.advance(GRACE + 1)

    first = sweep(world.sweep_deps(grace_seconds=GRACE))
    second = sweep(world.sweep_deps(grace_seconds=GRACE))

    assert (first.passed, first.examined, first.total) == (12, 0, 0)
    assert (second.passed, second.examined) == (0, 0)
    assert world.queue.sent["transactional"] == []


def _lease_before_the_claim(world: FakeWorld, message: MessageRecord) -> Any:
    """The race: the sweep reads a waiting message, its job's lease lands before the claim (which then
    loses), and the worker dies. Returns the sweep's report."""
    real_claim = world.messages.claim_repair

    def lease_first(seen: Any, *, now: int) -> None:
        world.messages.lease(_key(message), after_attempt=0, now=now, lease_until=now + 120)
        real_claim(seen, now=now)

    setattr(world.messages, "claim_repair", lease_first)  # noqa: B010
    try:
        return sweep(world.sweep_deps(grace_seconds=GRACE))
    finally:
        setattr(world.messages, "claim_repair", real_claim)  # noqa: B010


def _the_dead_workers_lease_is_taken_over(world: FakeWorld, message: MessageRecord) -> None:
    world.clock.advance(120 + GRACE + 1)  # the worker died
    last = sweep(world.sweep_deps(grace_seconds=GRACE))
    assert last.repaired == {MessageStatus.SENDING: 1}
    _deliver_all(world)
    assert _current(world, message).status is MessageStatus.RELAYED and len(world.relay.calls) == 1


def test_a_message_leased_after_it_was_read_holds_a_due_shards_watermark_and_is_looked_at_again(
    world: FakeWorld, seeded: Seeded
) -> None:
    """A lease moves no entry, so a watermark that passed the message would never see it again."""
    when = world.clock.now() + timedelta(minutes=1)
    message = _stored_without_job(world, seeded, send_at=when.isoformat())  # its release schedule was lost
    world.clock.set(when + timedelta(seconds=GRACE + 1))

    report = _lease_before_the_claim(world, message)

    assert report.claim_lost == 1 and report.total == 0 and report.adopted == 0
    assert world.messages.due[_key(message)] == int(when.timestamp())  # unmoved, and not passed:
    again = sweep(world.sweep_deps(grace_seconds=GRACE))
    assert again.leased == 1  # seen again: a live lease, due at its end
    _the_dead_workers_lease_is_taken_over(world, message)


def test_a_message_leased_after_it_was_read_in_its_creation_shard_is_given_a_due_time(
    world: FakeWorld, seeded: Seeded
) -> None:
    """A creation shard's entries never move: rather than hold its watermark (and re-read every entry
    after it on every run), the message gets a due time, and the due shards look at it a grace later."""
    message = _stored_without_job(world, seeded)
    world.clock.advance(GRACE + 1)
    now = world.clock.timestamp()

    report = _lease_before_the_claim(world, message)

    assert report.claim_lost == 1 and report.total == 0 and report.adopted == 1
    assert world.messages.due[_key(message)] == now
    again = sweep(world.sweep_deps(grace_seconds=GRACE))
    assert (again.examined, again.passed) == (0, 0)  # the creation shard's watermark passed it
    world.clock.advance(GRACE + 1)
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).leased == 1  # the due shard: a live lease
    _the_dead_workers_lease_is_taken_over(world, message)


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["find_due", "claim_repair", "send_jobs", "set_due_watermark"])
def test_a_sweep_that_crashes_at_a_step_twice_still_repairs_each_lost_message_once(
    world: FakeWorld, seeded: Seeded, step: str
) -> None:
    lost = [_stored_without_job(world, seeded) for _ in range(6)]
    done = _stored_without_job(world, seeded)
    world.queue.send_jobs("transactional", [send_job(done)])
    _deliver_all(world)  # relayed: its entry stays, to be passed
    world.clock.advance(GRACE + 1)
    owner = world.queue if step == "send_jobs" else world.messages
    real = getattr(owner, step)
    crashes = {"left": 2}

    def crashing(*args: Any, **kwargs: Any) -> Any:
        if crashes["left"]:
            crashes["left"] -= 1
            raise Crash(step)
        return real(*args, **kwargs)

    setattr(owner, step, crashing)
    jobs: list[Any] = []

    def workers_run() -> None:  # between two sweeps, the workers take what is queued
        for job in world.queue.drain("transactional"):
            jobs.append(job)
            deliver_message(world.deliver_deps(), job)

    runs = 0
    while crashes["left"]:  # a grace apart, so a step that a run does not reach crashes a later one
        runs += 1
        assert runs < 10
        with contextlib.suppress(Crash):
            sweep(world.sweep_deps(grace_seconds=GRACE))
        workers_run()
        world.clock.advance(GRACE + 1)
    setattr(owner, step, real)
    for _ in range(2):
        sweep(world.sweep_deps(grace_seconds=GRACE))
        workers_run()
        world.clock.advance(GRACE + 1)

    assert sorted(j.message_id for j in jobs) == sorted(m.message_id for m in lost)  # each once, no other
    assert all(_current(world, m).status is MessageStatus.RELAYED for m in [*lost, done])
    assert len(world.relay.calls) == len(lost) + 1
    assert sweep(world.sweep_deps(grace_seconds=GRACE)).examined == 0
