"""The local schedule firer (local/scheduler.py) against moto's EventBridge Scheduler and SQS.

moto stores schedules and never runs them; the firer must run them as Scheduler does: once, when
due, into the target queue, deleted afterwards (ActionAfterCompletion=DELETE), failures to the
schedule's dead-letter queue with Scheduler's attributes, cancelled ones never.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.server import ThreadedMotoServer

from local.provision import provision
from local.scheduler import ScheduleFirer, due_time
from petrel import resources
from petrel.adapters.scheduler import EventBridgeRetryScheduler
from petrel.models.jobs import SendJob
from petrel.ports import RecordNotFound
from petrel.settings import ApiSettings, SendWorkerSettings
from tests.integration.aws_env import REGION, clean_aws_environment

pytestmark = pytest.mark.integration

GROUP = "petrel-test-schedules"
ROLE = "arn:aws:iam::123456789012:role/petrel-test-schedules-role"
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)  # the tests' "now": schedules are due relative to it


def _at(moment: datetime) -> str:
    return f"at({moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})"


@dataclass
class Aws:
    scheduler: Any
    sqs: Any
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str

    def queue(self, name: str) -> tuple[str, str]:
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def create(
        self,
        name: str,
        at: datetime,
        body: str,
        *,
        target: str | None = None,
        after: str = "DELETE",
        expression: str | None = None,
        **target_extra: Any,
    ) -> None:
        self.scheduler.create_schedule(
            Name=name,
            GroupName=GROUP,
            ScheduleExpression=expression or _at(at),
            ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"},
            ActionAfterCompletion=after,
            State="ENABLED",
            Target={
                "Arn": target or self.queue_arn,
                "RoleArn": ROLE,
                "Input": body,
                "DeadLetterConfig": {"Arn": self.dlq_arn},
                "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
                **target_extra,
            },
        )

    def names(self) -> set[str]:
        found: set[str] = set()
        for page in self.scheduler.get_paginator("list_schedules").paginate(GroupName=GROUP):
            found |= {s["Name"] for s in page["Schedules"]}
        return found

    def drain(self, url: str | None = None) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=url or self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            messages += batch
            self.sqs.delete_message_batch(
                QueueUrl=url or self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        return messages


def _aws(session: boto3.session.Session, **client_args: Any) -> Aws:
    scheduler = session.client("scheduler", **client_args)
    sqs = session.client("sqs", **client_args)
    scheduler.create_schedule_group(Name=GROUP)
    aws = Aws(scheduler, sqs, "", "", "", "")
    aws.queue_url, aws.queue_arn = aws.queue("petrel-test-send")
    aws.dlq_url, aws.dlq_arn = aws.queue("petrel-test-schedules-dlq")
    return aws


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session) -> Iterator[Aws]:
    clean_aws_environment(monkeypatch)
    with mock_aws():
        yield _aws(boto_session)


def _firer(aws: Aws, **options: Any) -> ScheduleFirer:
    return ScheduleFirer(aws.scheduler, aws.sqs, GROUP, clock=lambda: T0, **options)


def test_a_due_schedule_fires_once_with_its_input_and_is_deleted(aws: Aws) -> None:
    body = json.dumps({"message_id": "m1", "attempt": 1, "text": "é ✓"})
    aws.create("m1-1", T0 - timedelta(seconds=5), body)
    firer = _firer(aws)

    assert firer.fire_due(T0) == 1
    assert firer.fire_due(T0 + timedelta(minutes=5)) == 0

    [message] = aws.drain()
    assert message["Body"] == body
    assert aws.names() == set()
    assert (firer.fired, firer.failed, firer.pending) == (1, 0, 0)


def test_a_future_schedule_waits_for_its_time(aws: Aws) -> None:
    aws.create("later", T0 + timedelta(seconds=30), "later")
    firer = _firer(aws)

    assert firer.fire_due(T0) == 0
    assert firer.fire_due(T0 + timedelta(seconds=29)) == 0
    assert aws.drain() == [] and aws.names() == {"later"} and firer.pending == 1

    assert firer.fire_due(T0 + timedelta(seconds=30)) == 1
    assert [m["Body"] for m in aws.drain()] == ["later"]
    assert aws.names() == set()
    assert firer.stats.calls["get_schedule"] == 1  # read once, not on every poll


def test_at_is_read_in_the_schedules_timezone() -> None:
    assert due_time("at(2026-07-01T14:00:00)", "Europe/Paris") == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert due_time("at(2026-01-01T00:00:00)", None) == datetime(2026, 1, 1, tzinfo=UTC)
    assert due_time("rate(5 minutes)", "UTC") is None
    with pytest.raises(ValueError):
        due_time("at(2026-01-01T00:00:00)", "Mars/Olympus_Mons")


def test_a_schedule_cancelled_before_it_is_due_never_fires(aws: Aws) -> None:
    aws.create("read-then-cancelled", T0 + timedelta(seconds=10), "no")
    firer = _firer(aws)
    assert firer.fire_due(T0) == 0  # read and cached
    aws.create("cancelled-unread", T0 + timedelta(seconds=10), "no either")
    aws.scheduler.delete_schedule(Name="read-then-cancelled", GroupName=GROUP)
    aws.scheduler.delete_schedule(Name="cancelled-unread", GroupName=GROUP)

    assert firer.fire_due(T0 + timedelta(minutes=1)) == 0

    assert aws.drain() == [] and aws.drain(aws.dlq_url) == []
    assert (firer.fired, firer.failed, firer.pending) == (0, 0, 0)


def test_a_full_listing_forgets_cancelled_schedules_before_they_are_due(aws: Aws) -> None:
    aws.create("cancelled", T0 + timedelta(hours=1), "no")
    firer = _firer(aws)
    firer.fire_due(T0)
    aws.scheduler.delete_schedule(Name="cancelled", GroupName=GROUP)

    firer.fire_due(T0, sweep=True)

    assert firer.pending == 0
    assert firer.fire_due(T0 + timedelta(hours=2)) == 0
    assert firer.stats.calls["delete_schedule"] == 0  # nothing left to claim


def test_a_missing_target_queue_dead_letters_with_schedulers_attributes(aws: Aws) -> None:
    missing = aws.queue_arn.rsplit(":", 1)[0] + ":no-such-queue"
    aws.create("lost", T0 - timedelta(seconds=1), '{"job": 1}', target=missing)
    firer = _firer(aws)

    assert firer.fire_due(T0) == 0

    assert aws.drain() == []
    [letter] = aws.drain(aws.dlq_url)
    assert letter["Body"] == '{"job": 1}'
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    assert attributes["ERROR_MESSAGE"]
    assert attributes["TARGET_ARN"] == missing
    assert attributes["SCHEDULE_ARN"].endswith(f":schedule/{GROUP}/lost")
    assert attributes["RETRY_ATTEMPTS"] == "0"  # a missing queue is not retried
    assert attributes["SCHEDULED_TIME"] == (T0 - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "EXHAUSTED_RETRY_CONDITION" not in attributes
    assert aws.names() == set()
    assert (firer.fired, firer.failed, firer.stats.dead_lettered) == (0, 1, 1)


class _Flaky:
    """An SQS client whose first `failures` SendMessageBatch calls are throttled."""

    def __init__(self, sqs: Any, failures: int) -> None:
        self._sqs = sqs
        self.failures = failures

    def send_message_batch(self, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "SendMessageBatch")
        return self._sqs.send_message_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_a_refused_send_is_retried_with_backoff_then_delivered(aws: Aws) -> None:
    aws.create("flaky", T0, "eventually")
    firer = ScheduleFirer(aws.scheduler, _Flaky(aws.sqs, failures=2), GROUP)

    assert firer.fire_due(T0) == 0  # 1st try throttled: retry after 1 s
    assert aws.names() == set()  # claimed: a cancel can no longer stop it
    assert firer.fire_due(T0 + timedelta(seconds=0.5)) == 0
    assert firer.fire_due(T0 + timedelta(seconds=1)) == 0  # 2nd try throttled: retry after 2 s
    assert firer.fire_due(T0 + timedelta(seconds=3)) == 1

    assert [m["Body"] for m in aws.drain()] == ["eventually"]
    assert (firer.stats.retried, firer.fired, firer.failed) == (2, 1, 0)


def test_retries_end_in_the_dead_letter_queue_when_the_policy_is_spent(aws: Aws) -> None:
    aws.create("spent", T0, "never", RetryPolicy={"MaximumRetryAttempts": 1, "MaximumEventAgeInSeconds": 60})
    firer = ScheduleFirer(aws.scheduler, _Flaky(aws.sqs, failures=5), GROUP)

    firer.fire_due(T0)
    firer.fire_due(T0 + timedelta(seconds=1))

    [letter] = aws.drain(aws.dlq_url)
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "ThrottlingException"
    assert attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts"
    assert attributes["RETRY_ATTEMPTS"] == "1"
    assert (firer.fired, firer.failed) == (0, 1)


def test_action_after_completion_none_keeps_the_schedule_and_fires_it_once(aws: Aws) -> None:
    aws.create("kept", T0 - timedelta(seconds=1), "once", after="NONE")
    firer = _firer(aws)

    assert firer.fire_due(T0) == 1
    assert firer.fire_due(T0 + timedelta(minutes=1)) == 0
    assert firer.fire_due(T0 + timedelta(minutes=2), sweep=True) == 0

    assert [m["Body"] for m in aws.drain()] == ["once"]
    assert aws.names() == {"kept"}


def test_disabled_and_unsupported_schedules_are_left_alone(aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    aws.create("recurring", T0, "no", expression="rate(1 minute)")
    aws.scheduler.create_schedule(
        Name="disabled",
        GroupName=GROUP,
        ScheduleExpression=_at(T0),
        FlexibleTimeWindow={"Mode": "OFF"},
        State="DISABLED",
        Target={"Arn": aws.queue_arn, "RoleArn": ROLE, "Input": "no"},
    )
    firer = _firer(aws)

    with caplog.at_level(logging.WARNING, logger="petrel.local"):
        assert firer.fire_due(T0 + timedelta(hours=1)) == 0
        assert firer.fire_due(T0 + timedelta(hours=2)) == 0

    assert aws.drain() == []
    assert aws.names() == {"recurring", "disabled"}
    assert sum("only at(...)" in r.getMessage() for r in caplog.records) == 1  # logged once, not every poll


def test_a_schedule_the_adapter_makes_fires_its_job_into_the_pools_queue(
    monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session
) -> None:
    """Provisioning gives the functions every setting they need, and what the code schedules, the firer fires."""
    clean_aws_environment(monkeypatch)
    with mock_aws():
        clients = {name: boto_session.client(name) for name in ("dynamodb", "sqs", "s3", "scheduler", "iam")}
        made = provision(
            clients["dynamodb"],
            clients["sqs"],
            clients["s3"],
            prefix="petrel-test",
            visibility_timeout=30,
            max_receive_count=3,
            scheduler=clients["scheduler"],
            iam=clients["iam"],
        )
        env = made.environment()
        api, worker = ApiSettings.model_validate(env), SendWorkerSettings.model_validate(env)
        assert api.schedule_group == worker.schedule_group == f"petrel-test-{resources.SCHEDULES.group}"
        assert worker.scheduler_dlq_arn.endswith(f":petrel-test-{resources.SCHEDULES.dlq}")
        assert clients["iam"].get_role(RoleName=worker.scheduler_role_arn.rsplit("/", 1)[1])["Role"]
        adapter = EventBridgeRetryScheduler(
            clients["scheduler"],
            group=worker.schedule_group,
            role_arn=worker.scheduler_role_arn,
            dead_letter_arn=worker.scheduler_dlq_arn,
            queue_arns=worker.queue_arns(),
        )
        job = SendJob(tenant_id="t1", email_id="e1", message_id="m1", attempt=2, pool="bulk")
        adapter.schedule("m1-2", T0 + timedelta(seconds=90), job)  # a duplicate would raise AlreadyExists
        firer = ScheduleFirer(clients["scheduler"], clients["sqs"], worker.schedule_group)

        assert firer.fire_due(T0 + timedelta(seconds=89)) == 0
        assert firer.fire_due(T0 + timedelta(seconds=90)) == 1

        bulk = made.queue_urls[resources.SEND_BULK.name]
        [message] = clients["sqs"].receive_message(QueueUrl=bulk, MaxNumberOfMessages=10)["Messages"]
        assert SendJob.model_validate_json(message["Body"]) == job
        with pytest.raises(RecordNotFound):
            adapter.cancel("m1-2")  # fired: already deleted

        again = provision(
            clients["dynamodb"],
            clients["sqs"],
            clients["s3"],
            prefix="petrel-other",
            visibility_timeout=30,
            max_receive_count=3,
        )  # scheduler and iam clients default to ones like sqs
        assert again.schedule_group == f"petrel-other-{resources.SCHEDULES.group}"
        clients["scheduler"].get_schedule_group(Name=again.schedule_group)


@pytest.mark.slow
def test_two_thousand_schedules_fire_within_a_bounded_number_of_calls(aws: Aws) -> None:
    count, spread = 2000, 20
    # moto's SQS walks the whole queue on every send, so one queue of 2,000 would measure moto; the
    # local stack's queues stay short (the pumps drain them). 20 queues of 100 measure the firer.
    targets = [aws.queue(f"petrel-test-send-{k}") for k in range(spread)]
    for n in range(count):
        aws.create(f"m{n}-1", T0 - timedelta(seconds=n % 60), f"job {n}", target=targets[n % spread][1])
    firer = _firer(aws)

    started = time.perf_counter()
    fired = firer.fire_due(T0)
    took = time.perf_counter() - started
    calls = firer.stats.calls
    print(f"\nfirer: {count} schedules read and fired in {took:.2f} s ({count / took:.0f}/s); {dict(calls)}")

    assert fired == count and firer.failed == 0
    assert calls["get_schedule"] == count and calls["delete_schedule"] == count
    assert calls["send_message_batch"] == count // 10
    assert calls["list_schedules"] <= count // 100 + 1
    assert calls["get_queue_url"] == spread
    assert sorted(m["Body"] for url, _ in targets for m in aws.drain(url)) == sorted(f"job {n}" for n in range(count))
    assert aws.names() == set()

    # Idle polls cost one list call each, not one call per schedule.
    aws.create("late", T0 + timedelta(hours=1), "late")
    before = sum(calls.values())
    for _ in range(5):
        firer.fire_due(T0)
    assert sum(calls.values()) - before == 5 + 1  # five list pages, one read of "late"


def test_the_firer_thread_fires_due_schedules_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTP, as the local stack runs it: a moto server, the firer polling on its own thread."""
    clean_aws_environment(monkeypatch)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="x")
        aws = _aws(session, endpoint_url=f"http://{host}:{port}")
        firer = ScheduleFirer(aws.scheduler, aws.sqs, GROUP, poll_seconds=0.05)
        firer.start()
        try:
            now = datetime.now(UTC)
            aws.create("due", now - timedelta(seconds=1), "due now")
            aws.create("soon", now + timedelta(seconds=1), "due in a second")
            aws.create("cancelled", now + timedelta(seconds=1), "never")
            aws.scheduler.delete_schedule(Name="cancelled", GroupName=GROUP)
            deadline = time.monotonic() + 15
            bodies: list[str] = []
            while len(bodies) < 2 and time.monotonic() < deadline:
                bodies += [m["Body"] for m in aws.drain()]
                time.sleep(0.05)
        finally:
            firer.stop()
            firer.join(timeout=5)
        assert not firer.is_alive()
        assert sorted(bodies) == ["due in a second", "due now"]
        assert aws.names() == set()
        assert firer.fired == 2
    finally:
        server.stop()
