"""The same job crashing again and again (issue 7, defect 1): its message always ends in a known state.

SQS is played by `_receive`: each receive of the job is one run of `deliver_message`, on its last
allowed receive with `last_receive=True`; a run that raises (or dies) leaves the job on the queue,
and after `MAX_RECEIVE_COUNT` failed receives it is in the DLQ. A death (the process killed, Lambda's
timeout) runs no exception handler at all. Between receives the clock passes the lease, as SQS's
visibility timeout (longer than the lease) would.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from petrel.models.jobs import SendJob
from petrel.models.records import MessageRecord, MessageStatus
from petrel.ports import MessageKey, WriteConflict
from petrel.services.deliver import WORKER_ERROR, DeliverDeps, InvocationBudget, JobResult, deliver_message
from petrel.services.redrive import RedriveDeps, reopen_for_redrive
from tests.fakes import FakeWorld, Seeded, records

MAX_RECEIVE_COUNT = 3
LEASE = 120


class Crash(Exception):
    """An unexpected error: the batch processor's handler runs."""


class Died(BaseException):  # not an Exception: the worker may not catch it, the process is gone
    """The invocation died (killed, timed out): no handler of the worker runs."""


@dataclass
class Faults:
    """Makes the first `left` calls at `point` crash (`kind` "error") or die (`kind` "death")."""

    point: str
    kind: str
    left: int

    def trip(self, point: str) -> None:
        if point != self.point or self.left == 0:
            return
        self.left -= 1
        raise Died(point) if self.kind == "death" else Crash(point)


def _faulty(world: FakeWorld, faults: Faults) -> None:
    lease, transition, relay = world.messages.lease, world.messages.transition, world.relay.relay

    def faulty_lease(*args: object, **kwargs: object) -> MessageRecord | None:
        faults.trip("lease")
        return lease(*args, **kwargs)  # type: ignore[arg-type]

    def faulty_transition(*args: object, **kwargs: object) -> bool:
        faults.trip("record")
        return transition(*args, **kwargs)  # type: ignore[arg-type]

    def faulty_relay(*args: object, **kwargs: object) -> object:
        reply = relay(*args, **kwargs)  # type: ignore[arg-type]
        faults.trip("relay")  # after DATA was accepted, before the outcome is recorded
        return reply

    world.messages.lease = faulty_lease  # type: ignore[method-assign]
    world.messages.transition = faulty_transition  # type: ignore[method-assign]
    world.relay.relay = faulty_relay  # type: ignore[method-assign]


def _receive(deps: DeliverDeps, world: FakeWorld, job: SendJob, receive: int) -> str:
    """One receive of the job: "ack", "retry" (batch item failure) or "failed" (raised or died)."""
    try:
        delivery = deliver_message(deps, job, last_receive=receive >= MAX_RECEIVE_COUNT)
    except (Crash, Died):
        result = "failed"
    else:
        result = "retry" if delivery.result is JobResult.RETRY else "ack"
    world.clock.advance(LEASE + 1)  # the visibility timeout outlasts the lease
    return result


def _current(world: FakeWorld, message: MessageRecord) -> MessageRecord:
    found = world.messages.get_message(MessageKey.of(message))
    assert found is not None
    return found


def _sweep_until_final(deps: DeliverDeps, world: FakeWorld, message: MessageRecord) -> int:
    """What the sweeper does for a non-final message whose job is gone: a job for its current attempt
    (a `sending` one: the job of the attempt it holds, which takes the dead lease over). Returns runs."""
    runs = 0
    while (current := _current(world, message)).status not in (MessageStatus.RELAYED, MessageStatus.FAILED):
        attempt = current.attempt - 1 if current.status is MessageStatus.SENDING else current.attempt
        job = SendJob(
            tenant_id=current.tenant_id, email_id=current.email_id, message_id=current.message_id, attempt=attempt
        )
        _receive(deps, world, job, receive=1)
        runs += 1
        assert runs <= 10, f"the sweeper cannot finish {current.status} (takeovers {current.takeovers})"
    return runs


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


@pytest.mark.parametrize("crashes", [1, 2, 3, 6])
@pytest.mark.parametrize(
    ("point", "kind"), [("lease", "error"), ("relay", "death"), ("relay", "error"), ("record", "error")]
)
def test_the_same_job_crashing_again_and_again_ends_in_a_known_state(
    world: FakeWorld, seeded: Seeded, point: str, kind: str, crashes: int
) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    faults = Faults(point, kind, crashes)
    _faulty(world, faults)
    deps = world.deliver_deps(lease_seconds=LEASE, max_receive_count=MAX_RECEIVE_COUNT)

    results = []
    for receive in range(1, MAX_RECEIVE_COUNT + 1):
        results.append(_receive(deps, world, job, receive))
        if results[-1] == "ack":
            break
    in_dlq = results[-1] == "failed"  # the last allowed receive failed too: SQS moves the job to the DLQ

    if crashes < MAX_RECEIVE_COUNT:
        assert results == ["failed"] * crashes + ["ack"] and not in_dlq
        current = _current(world, message)
        assert current.status is MessageStatus.RELAYED and current.attempt == 1
        assert [a.number for a in current.attempts] == [1]
        died_holding_the_lease = point in ("relay", "record")
        assert current.takeovers == (crashes if died_holding_the_lease else 0)
        return

    assert in_dlq and results == ["failed"] * MAX_RECEIVE_COUNT
    _sweep_until_final(deps, world, message)  # a death runs no handler: the sweeper ends it
    failed = _current(world, message)
    assert failed.status is MessageStatus.FAILED and failed.failure_reason == WORKER_ERROR
    [event] = [e for e in failed.events if e.type == "email.failed"]
    assert event.detail is not None and event.detail.startswith(f"{WORKER_ERROR}: ")
    assert "bob@example.org" not in event.detail and "Hello" not in event.detail
    relays_before = len(world.relay.calls)

    # The cause is fixed and the operator redrives the DLQ: the message is reopened and its job runs.
    faults.left = 0
    redriven = reopen_for_redrive(RedriveDeps(world.messages, world.clock), job)
    reopened = _current(world, message)
    assert reopened.status is MessageStatus.QUEUED and reopened.failure_reason is None
    assert reopened.events[-1].type == "email.queued" and reopened.events[-1].detail == "redriven"
    assert redriven.attempt == reopened.attempt
    assert _receive(deps, world, redriven, receive=1) == "ack"
    relayed = _current(world, message)
    assert relayed.status is MessageStatus.RELAYED and relayed.attempt == reopened.attempt + 1
    assert len(world.relay.calls) == relays_before + 1
    # An SQS duplicate of the original job, or a second redrive of it, does nothing now.
    assert deliver_message(deps, job).result is JobResult.DONE and len(world.relay.calls) == relays_before + 1
    assert reopen_for_redrive(RedriveDeps(world.messages, world.clock), job) == job


def test_a_takeover_keeps_the_attempt_and_counts(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    key = MessageKey.of(message)
    now = world.clock.timestamp()

    first = world.messages.lease(key, after_attempt=0, now=now, lease_until=now + 10)
    taken = [
        world.messages.lease(key, after_attempt=0, now=now + 11 * n, lease_until=now + 11 * n + 10) for n in (1, 2, 3)
    ]

    assert first.attempt == 1 and first.takeovers == 0
    assert [(t.attempt, t.takeovers) for t in taken] == [(1, 1), (1, 2), (1, 3)]
    # A live lease is not taken over, and a job of another attempt never takes it.
    with pytest.raises(WriteConflict):
        world.messages.lease(key, after_attempt=0, now=now + 34, lease_until=now + 99)
    with pytest.raises(WriteConflict):
        world.messages.lease(key, after_attempt=1, now=now + 99, lease_until=now + 199)


def test_a_stale_job_after_a_takeover_does_nothing(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    now = world.clock.timestamp()
    world.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 5)
    world.clock.advance(6)
    deps = world.deliver_deps()

    assert deliver_message(deps, job).result is JobResult.DONE  # took over and relayed
    again = deliver_message(deps, job)  # the same job, once more

    assert again.result is JobResult.DONE and again.outcome is None and "already relayed" in again.note
    assert len(world.relay.calls) == 1 and _current(world, message).takeovers == 1


def test_a_takeover_past_the_receive_count_ends_the_message(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    key = MessageKey.of(message)
    now = world.clock.timestamp()
    for n in range(3):  # three workers died holding attempt 1
        world.messages.lease(key, after_attempt=0, now=now + 11 * n, lease_until=now + 11 * n + 10)
    world.clock.advance(40)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)

    delivery = deliver_message(world.deliver_deps(max_receive_count=3), job)

    assert delivery.result is JobResult.DONE and world.relay.calls == []
    current = _current(world, message)
    assert current.status is MessageStatus.FAILED and current.failure_reason == WORKER_ERROR
    assert current.takeovers == 3 and current.events[-1].detail == f"{WORKER_ERROR}: the lease expired 3 times"


def test_an_error_before_the_last_receive_leaves_the_message_for_the_next(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    _faulty(world, Faults("relay", "error", 1))

    with pytest.raises(Crash):
        deliver_message(world.deliver_deps(), job, last_receive=False)

    current = _current(world, message)
    assert current.status is MessageStatus.SENDING and current.failure_reason is None


def test_worker_error_does_not_overwrite_a_newer_outcome(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    deps = world.deliver_deps()
    deliver_message(deps, job)  # relayed by another receive of the same job
    lease = world.messages.lease

    def broken(*args: object, **kwargs: object) -> MessageRecord | None:
        raise Crash("the store is down")

    world.messages.lease = broken  # type: ignore[method-assign]
    with pytest.raises(Crash):
        deliver_message(deps, job, last_receive=True)
    world.messages.lease = lease  # type: ignore[method-assign]

    assert _current(world, message).status is MessageStatus.RELAYED


def test_the_relay_deadline_is_the_invocations_end_less_the_margin(world: FakeWorld, seeded: Seeded) -> None:
    email, (message,) = records.email(seeded.tenant.tenant_id, ["bob@example.org"])
    world.messages.create_email(email, [message], 0)
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    clock = [1000.0]
    budget = InvocationBudget.from_remaining(60_000, record_seconds=45, margin_seconds=5, monotonic=lambda: clock[0])

    deliver_message(world.deliver_deps(), job, deadline=budget.relay_deadline)

    assert world.relay.deadlines == [1055.0]


def test_the_budget_admits_a_record_while_a_transaction_fits() -> None:
    clock = [0.0]
    budget = InvocationBudget.from_remaining(60_000, record_seconds=45, margin_seconds=5, monotonic=lambda: clock[0])

    assert budget.admit()
    clock[0] = 10.0  # 50 s left: one more transaction and the margin still fit
    assert budget.admit()
    clock[0] = 10.5
    assert not budget.admit() and budget.admitted == 2


def test_the_first_record_of_an_invocation_always_starts() -> None:
    budget = InvocationBudget.from_remaining(20_000, record_seconds=45, margin_seconds=5, monotonic=lambda: 0.0)

    assert budget.admit()  # a budget larger than the timeout slows the queue down, never stalls it
    assert not budget.admit()
