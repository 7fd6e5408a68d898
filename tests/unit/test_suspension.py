"""Suspending and resuming a tenant, through the API app and the send worker's handler on the fakes.

Invariants:
- a suspended tenant's send (and attachment declaration) stores nothing (403); its reads still work;
- its queued and scheduled mail is held, never attempted: at every moment a held message has exactly
  one way forward (its hold schedule), also after the worker crashed at the hold step;
- resume releases every held message at once, and no message is relayed twice, whichever of the
  release's job and the hold schedule's job comes first;
- a held message still expires at its maximum age; the sweeper leaves it alone while its schedule lives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from local.lambda_runtime import LocalContext
from petrel.entrypoints.send_worker import create_worker
from petrel.errors import ConfigurationError
from petrel.models.jobs import Job, SendJob
from petrel.models.records import FINAL_STATUSES, MessageRecord, MessageStatus, Tenant
from petrel.models.retry import schedule_name
from petrel.observability import Telemetry, telemetry
from petrel.ports import JobQueue, MessageKey, Transition
from petrel.services import tenants
from petrel.services.deliver import DeliverDeps
from petrel.services.dispatch import DispatchDeps
from petrel.services.release import ReleaseDeps
from petrel.services.server_health import HealthDeps
from petrel.services.suspension import HELD_REASON, HOLD_SECONDS
from petrel.services.sweep import sweep
from petrel.settings import SendWorkerSettings
from tests.fakes import FakeWorld, Seeded
from tests.unit.api_fakes import Api, event

LEASE = 120
FUNCTION = "petrel-test-send-worker"


def _settings() -> SendWorkerSettings:
    return SendWorkerSettings(
        tenants_table="tenants",
        messages_table="messages",
        suppressions_table="suppressions",
        bodies_bucket="bodies",
        schedule_group="retries",
        scheduler_role_arn="arn:aws:iam::000000000000:role/scheduler",
        scheduler_dlq_arn="arn:aws:sqs:us-east-1:000000000000:schedules-dlq",
        send_transactional_queue_arn="arn:aws:sqs:us-east-1:000000000000:send-transactional",
        send_bulk_queue_arn="arn:aws:sqs:us-east-1:000000000000:send-bulk",
        send_transactional_queue_url="https://sqs.example/send-transactional",
        send_bulk_queue_url="https://sqs.example/send-bulk",
        secrets_prefix="petrel/tenants/",
        ingest_queue_url="https://sqs.example/ingest",
        buckets_table="buckets",
    )


@dataclass
class WorkerParts:
    settings: SendWorkerSettings
    telemetry: Telemetry
    deliver: DeliverDeps
    release: ReleaseDeps
    queue: JobQueue
    dispatch: DispatchDeps
    health: HealthDeps


def _record(job: Job, ident: str, receive_count: int) -> dict[str, Any]:
    body = job.model_dump_json()
    return {
        "messageId": ident,
        "receiptHandle": "handle",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1768469400000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1768469400001",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:send-transactional",
        "awsRegion": "us-east-1",
    }


class Crash(Exception):
    """The worker failed at the hold step (the batch processor reports the record; SQS redelivers it)."""


@dataclass
class Stack:
    world: FakeWorld
    seeded: Seeded
    api: Api
    worker: Any
    crash_holds: dict[str, int] = field(default_factory=dict)  # message id -> holds left to crash

    @property
    def tenant_id(self) -> str:
        return self.seeded.tenant.tenant_id

    def send(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        return self.api(event("POST", "/v1/emails", body, tenant_id=self.tenant_id, headers=headers))

    def view(self, email_id: str) -> dict[str, Any]:
        result = self.api(event("GET", f"/v1/emails/{email_id}", tenant_id=self.tenant_id))
        assert result["statusCode"] == 200, result["body"]
        body: dict[str, Any] = json.loads(result["body"])
        return body

    def message(self, message_id: str) -> MessageRecord:
        key = self.world.messages.find_message_key(self.tenant_id, message_id)
        assert key is not None
        found = self.world.messages.get_message(key)
        assert found is not None
        return found

    def suspend(self, reason: str | None = "unpaid invoice") -> Tenant:
        return tenants.suspend_tenant(self.world.admin_deps(), self.tenant_id, reason)

    def resume(self) -> tenants.Resumed:
        deps = self.world.admin_deps()
        return tenants.resume_tenant(deps, self.tenant_id, messages=self.world.messages, queue=self.world.queue)

    def fire(self) -> list[Job]:
        """EventBridge Scheduler: every schedule due now puts its job on its queue."""
        return self.world.scheduler.fire_due(self.world.clock.now(), self.world.queue)

    def run(self, jobs: list[Job], receive_count: int = 1) -> set[str]:
        """One invocation on `jobs`; the ids of the records it reported failed."""
        records = [_record(job, f"r{i}", receive_count) for i, job in enumerate(jobs)]
        try:
            result = self.worker({"Records": records}, LocalContext(FUNCTION))
        except BatchProcessingError:  # every record failed: Lambda fails the invocation, SQS redelivers all
            return {record["messageId"] for record in records}
        return {item["itemIdentifier"] for item in result["batchItemFailures"]}

    def pump(self) -> None:
        """Play SQS until the queues are empty: a failed record comes back once the visibility timeout
        (longer than the lease) has passed, its receive count one higher."""
        pending = [(job, 1) for pool in ("transactional", "bulk") for job in self.world.queue.drain_all(pool)]
        while pending:
            failed = set()
            for count in sorted({c for _, c in pending}):
                batch = [job for job, c in pending if c == count]
                failed |= {(batch[int(i[1:])], count) for i in self.run(batch, count)}
            if failed:
                self.world.clock.advance(LEASE + 1)
            again = [(job, count + 1) for job, count in failed]
            pending = again + [
                (job, 1) for pool in ("transactional", "bulk") for job in self.world.queue.drain_all(pool)
            ]

    def ways_forward(self, message: MessageRecord) -> int:
        """The jobs that would move `message` on: its attempt's schedules and queued jobs, and a live lease."""
        scheduled = [s.job for s in self.world.scheduler.schedules.values()]
        queued = [job for jobs in self.world.queue.sent.values() for job in jobs]
        mine = [
            job
            for job in scheduled + queued
            if isinstance(job, SendJob) and job.message_id == message.message_id and job.attempt == message.attempt
        ]
        now = self.world.clock.timestamp()
        leased = message.status is MessageStatus.SENDING and (message.lease_until or 0) >= now
        return len(mine) + int(leased)


def _stack(world: FakeWorld, tmp_path: Path, *, cache_seconds: float = 0) -> Stack:
    """The API and the send worker on `world`; the worker caches tenants `cache_seconds` as deployed."""
    seeded = world.seed()
    parts = WorkerParts(
        settings=_settings(),
        telemetry=telemetry("send-worker", metrics_file=tmp_path / "worker.emf.jsonl"),
        deliver=world.deliver_deps(lease_seconds=LEASE, cache_seconds=cache_seconds),
        release=world.release_deps(),
        queue=world.queue,
        dispatch=world.dispatch_deps(),
        health=world.health_deps(),
    )
    made = Stack(world, seeded, Api(world), create_worker(parts))  # type: ignore[arg-type]
    transition = world.messages.transition

    def crashing_transition(key: MessageKey, *, change: Transition, **kwargs: Any) -> None:
        left = made.crash_holds.get(key.message_id, 0)
        if change.failure_reason == HELD_REASON and left:
            made.crash_holds[key.message_id] = left - 1
            raise Crash("the worker failed while holding the message")
        transition(key, change=change, **kwargs)

    world.messages.transition = crashing_transition  # type: ignore[method-assign]
    return made


@pytest.fixture
def stack(world: FakeWorld, tmp_path: Path) -> Stack:
    return _stack(world, tmp_path)


def _email(to: str, **fields: Any) -> dict[str, Any]:
    return {"from": "jane@example.com", "to": [to], "subject": "Hi", "text": "Hello", **fields}


def _accepted(result: dict[str, Any]) -> tuple[str, str]:
    assert result["statusCode"] == 202, result["body"]
    body = json.loads(result["body"])
    return body["id"], body["recipients"][0]["id"]


def test_a_suspended_tenant_cannot_send_but_can_read(stack: Stack) -> None:
    email_id, _ = _accepted(stack.send(_email("bob@example.org")))
    stack.suspend("unpaid invoice")
    stored = dict(stack.world.messages.messages)

    single = stack.send(_email("carol@example.org"))
    batch = stack.api(
        event("POST", "/v1/emails/batch", {"emails": [_email("carol@example.org")]}, tenant_id=stack.tenant_id)
    )
    declared = stack.api(
        event(
            "POST",
            "/v1/attachments",
            {"filename": "a.pdf", "content_type": "application/pdf", "size": 10},
            tenant_id=stack.tenant_id,
        )
    )

    for refused in (single, batch, declared):
        problem = json.loads(refused["body"])
        assert refused["statusCode"] == 403
        assert problem["type"] == "urn:petrel:problem:tenant-suspended"
        assert "unpaid invoice" in problem["detail"]
    assert stack.world.messages.messages == stored  # nothing stored
    assert not [key for key in stack.world.blobs.blobs if key.startswith("attachments/")]
    assert stack.view(email_id)["id"] == email_id  # reads still work
    listed = stack.api(event("GET", "/v1/emails", tenant_id=stack.tenant_id))
    assert listed["statusCode"] == 200 and len(json.loads(listed["body"])["data"]) == 1


def test_a_refusal_for_suspension_does_not_keep_the_idempotency_key(stack: Stack) -> None:
    stack.suspend()
    assert stack.send(_email("bob@example.org"), **{"Idempotency-Key": "order-7"})["statusCode"] == 403

    stack.resume()

    again = stack.send(_email("bob@example.org"), **{"Idempotency-Key": "order-7"})
    assert again["statusCode"] == 202 and "Idempotent-Replayed" not in again["headers"]


def test_queued_and_scheduled_mail_waits_and_goes_exactly_once_on_resume(stack: Stack) -> None:
    world = stack.world
    send_at = world.clock.now() + timedelta(hours=1)
    queued_email, queued_id = _accepted(stack.send(_email("bob@example.org")))
    scheduled_email, scheduled_id = _accepted(stack.send(_email("carol@example.org", send_at=send_at.isoformat())))
    stack.suspend()

    # The queued message's job runs: held, not attempted.
    stack.pump()
    held = stack.message(queued_id)
    assert (held.status, held.failure_reason, held.attempts) == (MessageStatus.DEFERRED, HELD_REASON, ())
    assert held.next_attempt_at == world.clock.now() + timedelta(seconds=HOLD_SECONDS)
    assert world.relay.calls == [] and stack.ways_forward(held) == 1
    view = stack.view(queued_email)["recipients"][0]
    assert (view["status"], view["attempts"], view["failure_reason"]) == ("deferred", 0, HELD_REASON)

    # The scheduled email's time comes while still suspended; the worker crashes twice holding it.
    world.clock.set(send_at)
    stack.crash_holds[scheduled_id] = 2
    stack.fire()  # its release, and the queued message's hold retry
    stack.pump()
    for message_id in (queued_id, scheduled_id):
        current = stack.message(message_id)
        assert (current.status, current.failure_reason) == (MessageStatus.DEFERRED, HELD_REASON)
        assert current.attempts == () and stack.ways_forward(current) == 1
        assert [e.detail for e in current.events if e.type == "email.deferred"] == [HELD_REASON]  # one event
    assert stack.message(scheduled_id).takeovers == 2 and stack.crash_holds[scheduled_id] == 0
    assert world.relay.calls == []

    # Resume: both go at once, each exactly once, even when the holds' retries fire afterwards.
    resumed = stack.resume()
    assert resumed.released == 2 and not resumed.tenant.suspended
    stack.pump()
    world.clock.advance(HOLD_SECONDS + 1)
    assert len(stack.fire()) == 2  # the hold schedules: stale jobs now
    stack.pump()

    assert sorted(call.envelope.recipient for call in world.relay.calls) == ["bob@example.org", "carol@example.org"]
    for email_id in (queued_email, scheduled_email):
        [recipient] = stack.view(email_id)["recipients"]
        assert (recipient["status"], recipient["attempts"], recipient["failure_reason"]) == ("relayed", 1, None)
    assert world.scheduler.schedules == {}
    assert all(not jobs for jobs in world.queue.sent.values())


def test_a_worker_that_cached_the_suspension_does_not_hold_mail_after_resume(world: FakeWorld, tmp_path: Path) -> None:
    stack = _stack(world, tmp_path, cache_seconds=3600)  # the worker keeps tenants for an hour
    _, message_id = _accepted(stack.send(_email("bob@example.org")))
    stack.suspend()
    stack.pump()  # held: the worker has the suspended tenant in its cache now
    assert stack.message(message_id).status is MessageStatus.DEFERRED

    assert stack.resume().released == 1
    stack.pump()

    assert stack.message(message_id).status is MessageStatus.RELAYED  # confirmed afresh, not held again


def test_resume_racing_the_hold_retry_relays_once(stack: Stack) -> None:
    _, message_id = _accepted(stack.send(_email("bob@example.org")))
    stack.suspend()
    stack.pump()
    held = stack.message(message_id)
    [hold] = [s for s in stack.world.scheduler.schedules.values() if s.name == schedule_name(message_id, held.attempt)]

    stack.resume()
    [released] = stack.world.queue.drain_all("transactional")
    failed = stack.run([hold.job, released])  # the hold's retry and the release's job in one batch

    assert failed == set() and released == hold.job
    assert [c.envelope.recipient for c in stack.world.relay.calls] == ["bob@example.org"]
    assert stack.message(message_id).status is MessageStatus.RELAYED


def test_a_held_message_expires_at_its_maximum_age(stack: Stack) -> None:
    stack.world.tenants.put_tenant(stack.seeded.tenant.model_copy(update={"max_age_hours": 1}))
    _, message_id = _accepted(stack.send(_email("bob@example.org")))
    created = stack.world.clock.now()
    stack.suspend()

    stack.pump()
    for _ in range(20):  # hold after hold, until the maximum age is reached
        stack.world.clock.advance(HOLD_SECONDS)
        stack.fire()
        stack.pump()

    current = stack.message(message_id)
    assert (current.status, current.failure_reason) == (MessageStatus.FAILED, "expired")
    assert current.status in FINAL_STATUSES and stack.world.relay.calls == []
    holds = [e for e in current.events if e.type == "email.deferred"]
    assert len(holds) == 1 and current.updated_at == created + timedelta(hours=1)  # failed at its expiry exactly
    assert stack.world.scheduler.schedules == {}


def test_the_sweeper_leaves_a_held_message_to_its_schedule_and_replaces_a_lost_one(stack: Stack) -> None:
    world = stack.world
    _, message_id = _accepted(stack.send(_email("bob@example.org")))
    stack.suspend()
    stack.pump()
    deps = world.sweep_deps(grace_seconds=900)

    world.clock.advance(HOLD_SECONDS + 899)  # due, but within the grace: its schedule is its way forward
    assert sweep(deps).total == 0

    world.scheduler.schedules.clear()  # the schedule is lost
    world.clock.advance(2)
    assert sweep(deps).total == 1  # repaired: back on its queue
    stack.pump()

    current = stack.message(message_id)
    assert (current.status, current.failure_reason) == (MessageStatus.DEFERRED, HELD_REASON)  # held again
    assert stack.ways_forward(current) == 1 and world.relay.calls == []


def test_a_job_the_queue_refuses_on_resume_stays_held_and_a_second_resume_releases_it(stack: Stack) -> None:
    _accepted(stack.send(_email("bob@example.org")))
    _, second = _accepted(stack.send(_email("carol@example.org")))
    stack.suspend()
    stack.pump()
    stack.world.queue.refuse_when = lambda job: isinstance(job, SendJob) and job.message_id == second

    assert stack.resume().released == 1
    assert stack.ways_forward(stack.message(second)) == 1  # its hold schedule

    stack.world.queue.refuse_when = lambda job: False
    # Still held, both: `second`, and `first` whose released job has not run yet (a second job for it,
    # which its lease makes a no-op).
    assert stack.resume().released == 2
    stack.pump()
    assert sorted(c.envelope.recipient for c in stack.world.relay.calls) == ["bob@example.org", "carol@example.org"]


def test_suspending_twice_keeps_the_first_time_and_resuming_clears_it(stack: Stack) -> None:
    first = stack.suspend("abuse report")
    stack.world.clock.advance(60)

    again = stack.suspend("abuse report, confirmed")
    kept = stack.suspend(None)

    assert (
        first.suspended_at == again.suspended_at == kept.suspended_at == stack.world.clock.now() - timedelta(seconds=60)
    )
    assert kept.suspended_reason == "abuse report, confirmed"
    resumed = stack.resume().tenant
    assert (resumed.suspended_at, resumed.suspended_reason) == (None, None)
    assert stack.world.tenants.get_tenant(stack.tenant_id) == resumed
    with pytest.raises(ConfigurationError):
        tenants.suspend_tenant(stack.world.admin_deps(), "tn_missing")
    with pytest.raises(ConfigurationError):
        stack.suspend("x" * 501)


def test_quota_and_flag_settings_distinguish_remove_from_unchanged(world: FakeWorld) -> None:
    deps = world.admin_deps()
    tenant = tenants.create_tenant(deps, "Acme", daily_quota=1000, per_second_quota=10)
    assert (tenant.daily_quota, tenant.per_second_quota, tenant.allow_unverified_domains) == (1000, 10, False)

    changed = tenants.update_tenant(
        deps, tenant.tenant_id, tenants.TenantSettings(daily_quota=None, allow_unverified_domains=True)
    )
    assert (changed.daily_quota, changed.per_second_quota, changed.allow_unverified_domains) == (None, 10, True)

    renamed = tenants.update_tenant(deps, tenant.tenant_id, tenants.TenantSettings(name="Acme Corp"))
    assert (renamed.daily_quota, renamed.per_second_quota, renamed.allow_unverified_domains) == (None, 10, True)
    with pytest.raises(ConfigurationError):
        tenants.update_tenant(deps, tenant.tenant_id, tenants.TenantSettings())


@pytest.mark.parametrize("value", [0, -5, True])
def test_a_quota_is_a_positive_whole_number(world: FakeWorld, value: int) -> None:
    deps = world.admin_deps()
    tenant = tenants.create_tenant(deps, "Acme")
    with pytest.raises(ConfigurationError):
        tenants.update_tenant(deps, tenant.tenant_id, tenants.TenantSettings(per_second_quota=value))
    with pytest.raises(ConfigurationError):
        tenants.create_tenant(deps, "Other", daily_quota=value)
    assert world.tenants.get_tenant(tenant.tenant_id) == tenant


def test_a_held_message_can_be_cancelled_and_resume_then_leaves_it(stack: Stack) -> None:
    email_id, message_id = _accepted(stack.send(_email("bob@example.org")))
    stack.suspend()
    stack.pump()

    cancelled = stack.api(event("DELETE", f"/v1/emails/{email_id}", tenant_id=stack.tenant_id))

    assert cancelled["statusCode"] == 200 and stack.message(message_id).status is MessageStatus.CANCELLED
    assert stack.world.scheduler.schedules == {}  # its hold schedule went with it
    assert stack.resume().released == 0
    stack.pump()
    assert stack.world.relay.calls == []
