"""The send worker's and the sweeper's handlers (petrel.entrypoints) on the in-memory fakes: what a
record is, a batch's memory of failed servers, and the lines a person reads in the logs."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from local.lambda_runtime import LocalContext
from petrel.entrypoints.send_worker import create_worker
from petrel.entrypoints.sweeper import create_sweeper
from petrel.mail.smtp_reply import SmtpReply, Stage
from petrel.models.jobs import ReleaseJob, SendJob
from petrel.models.records import MessageRecord, MessageStatus, Suppression
from petrel.observability import Telemetry, telemetry
from petrel.ports import EmailKey, MessageKey
from petrel.services.deliver import DeliverDeps
from petrel.services.dispatch import DispatchDeps
from petrel.services.release import ReleaseDeps
from petrel.services.server_health import HealthDeps
from petrel.services.sweep import SweepDeps
from petrel.settings import SendWorkerSettings
from tests.fakes import FakeJobQueue, FakeWorld, Seeded, records
from tests.fakes.smtp import reply

FUNCTION = "petrel-dev-send-worker"


def _settings(**fields: Any) -> SendWorkerSettings:
    names = {
        "tenants_table": "tenants",
        "messages_table": "messages",
        "suppressions_table": "suppressions",
        "bodies_bucket": "bodies",
        "schedule_group": "retries",
        "scheduler_role_arn": "arn:aws:iam::000000000000:role/scheduler",
        "scheduler_dlq_arn": "arn:aws:sqs:us-east-1:000000000000:schedules-dlq",
        "send_transactional_queue_arn": "arn:aws:sqs:us-east-1:000000000000:send-transactional",
        "send_bulk_queue_arn": "arn:aws:sqs:us-east-1:000000000000:send-bulk",
        "send_transactional_queue_url": "https://sqs.example/send-transactional",
        "send_bulk_queue_url": "https://sqs.example/send-bulk",
        "secrets_prefix": "petrel/tenants/",
        "ingest_queue_url": "https://sqs.example/ingest",
        "buckets_table": "buckets",
    }
    return SendWorkerSettings(**({"log_each_attempt": True} | names | fields))


class Captured:
    """A function's telemetry (petrel.observability) with its log lines in a buffer and its EMF lines in
    a file. Its logger's service is the function's plus a suffix of its own: Powertools binds one stream
    per service name for the whole process, and each test needs its own."""

    def __init__(self, function: str, directory: Path) -> None:
        self.stream = io.StringIO()
        self.emf = directory / f"{function}.emf.jsonl"
        made = telemetry(function, metrics_file=self.emf)
        logger = Logger(service=f"{made.logger.service}-{uuid.uuid4().hex[:8]}", stream=self.stream)
        self.telemetry = Telemetry(function=function, logger=logger, metrics=made.metrics)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def messages(self, text: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["message"] == text]

    def metric_names(self) -> list[str]:
        """The metrics flushed so far, in order (ColdStart aside)."""
        if not self.emf.exists():
            return []
        documents = [json.loads(line) for line in self.emf.read_text().splitlines()]
        names = [
            metric["Name"]
            for document in documents
            for directive in document["_aws"]["CloudWatchMetrics"]
            for metric in directive["Metrics"]
        ]
        return [name for name in names if name != "ColdStart"]


@dataclass
class WorkerParts:
    """The worker container's parts on the fakes (what `create_worker` takes)."""

    settings: SendWorkerSettings
    telemetry: Telemetry
    deliver: DeliverDeps
    release: ReleaseDeps
    queue: FakeJobQueue
    dispatch: DispatchDeps
    health: HealthDeps


@dataclass
class Worker:
    world: FakeWorld
    captured: Captured
    handler: Any
    seeded: Seeded

    def run(self, *records: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.handler({"Records": list(records)}, LocalContext(FUNCTION))
        return result

    @property
    def emitted(self) -> list[str]:
        return self.captured.metric_names()

    def store(self, *recipients: str) -> list[tuple[MessageRecord, SendJob]]:
        email, messages = records.email(self.seeded.tenant.tenant_id, list(recipients))
        self.world.messages.create_email(email, messages, 0)
        return [(m, SendJob(tenant_id=m.tenant_id, email_id=m.email_id, message_id=m.message_id)) for m in messages]

    def status(self, message: MessageRecord) -> MessageStatus:
        current = self.world.messages.get_message(MessageKey.of(message))
        assert current is not None
        return current.status


def sqs_record(body: str, *, receive_count: int = 1, message_id: str | None = None) -> dict[str, Any]:
    """A record as Lambda's SQS event source builds it."""
    return {
        "messageId": message_id or hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest(),
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


@pytest.fixture
def worker(world: FakeWorld, tmp_path: Path) -> Worker:
    return make_worker(world, tmp_path)


def make_worker(world: FakeWorld, tmp_path: Path, **settings: Any) -> Worker:
    seeded = world.seed(return_path="bounce.example.com", password="pw-1")
    captured = Captured("send-worker", tmp_path)
    parts = WorkerParts(
        settings=_settings(**settings),
        telemetry=captured.telemetry,
        deliver=world.deliver_deps(),
        release=world.release_deps(),
        queue=world.queue,
        dispatch=world.dispatch_deps(),
        health=world.health_deps(),
    )
    return Worker(world, captured, create_worker(parts), seeded)


def test_one_readable_line_per_delivery_attempt(worker: Worker) -> None:
    [(message, job)] = worker.store("bob@example.org")

    result = worker.run(sqs_record(job.model_dump_json()))

    assert result == {"batchItemFailures": []}
    assert worker.status(message) is MessageStatus.RELAYED
    [line] = worker.captured.messages("delivery attempt")
    server = worker.seeded.server
    assert line["outcome"] == "relayed" and line["attempt"] == 1 and line["level"] == "INFO"
    assert (line["smtp_code"], line["smtp_enhanced_code"]) == (250, "2.0.0")
    assert (line["server_id"], line["server_host"]) == (server.server_id, server.host)
    assert (line["tenant_id"], line["email_id"], line["message_id"]) == (job.tenant_id, job.email_id, job.message_id)
    assert line["function_name"] == FUNCTION and line["service"].startswith("petrel-send-worker-")
    assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
    assert line["recipient"] == "b***@example.org"
    log = worker.captured.stream.getvalue()
    assert "bob@example.org" not in log and "pw-1" not in log
    assert worker.emitted == ["DeliveryRelayed"]


def test_a_batch_reads_its_email_records_together_and_a_failed_read_fails_no_job(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = [*worker.store("bob@example.org", "ann@example.org"), *worker.store("eve@example.org")]
    reads: list[set[EmailKey]] = []
    real = worker.world.messages.get_email_records

    def together(keys: Any) -> Any:
        reads.append(set(keys))
        return real(keys)

    monkeypatch.setattr(worker.world.messages, "get_email_records", together)
    assert worker.run(*(sqs_record(job.model_dump_json()) for _, job in stored)) == {"batchItemFailures": []}
    assert reads == [{EmailKey.of(job) for _, job in stored}]  # one read for the batch, each email once
    assert all(worker.status(message) is MessageStatus.RELAYED for message, _ in stored)

    def down(keys: Any) -> Any:
        raise ConnectionError("the store is unreachable")

    monkeypatch.setattr(worker.world.messages, "get_email_records", down)
    again = [*worker.store("zoe@example.org"), *worker.store("max@example.org")]
    assert worker.run(*(sqs_record(job.model_dump_json()) for _, job in again)) == {"batchItemFailures": []}
    assert all(worker.status(message) is MessageStatus.RELAYED for message, _ in again)  # each read its own
    [warning] = worker.captured.messages("email records not read together; each job reads its own")
    assert warning["level"] == "WARNING"


def test_a_failure_is_a_warning_with_the_servers_reply(worker: Worker) -> None:
    worker.world.relay.script["gone@example.org"] = reply(550, "5.1.1 user unknown")
    [(_, job)] = worker.store("gone@example.org")

    worker.run(sqs_record(job.model_dump_json()))

    [line] = worker.captured.messages("delivery attempt")
    assert line["level"] == "WARNING" and line["outcome"] == "bounced" and line["detail"] == "hard"
    assert (line["smtp_code"], line["smtp_enhanced_code"]) == (550, "5.1.1")
    assert worker.emitted == ["DeliveryBounced"]


def test_a_suppressed_recipient_has_a_metric_of_its_own(worker: Worker) -> None:
    [(message, job)] = worker.store("bob@example.org")
    worker.world.suppressions.add(
        Suppression(
            tenant_id=job.tenant_id,
            email="bob@example.org",
            reason="manual",
            created_at=worker.world.clock.now(),
        )
    )

    worker.run(sqs_record(job.model_dump_json()))

    assert worker.status(message) is MessageStatus.SUPPRESSED
    [line] = worker.captured.messages("delivery attempt")
    assert line["outcome"] == "suppressed" and line["detail"] == "manual"
    assert "smtp_code" not in line and "server_id" not in line  # no SMTP: Powertools drops empty keys
    assert worker.emitted == ["DeliverySuppressed"]


def test_a_job_already_done_is_skipped_not_attempted(worker: Worker) -> None:
    [(_, job)] = worker.store("bob@example.org")
    worker.run(sqs_record(job.model_dump_json()))

    worker.run(sqs_record(job.model_dump_json(), message_id="again"))  # SQS delivered it twice

    assert len(worker.captured.messages("delivery attempt")) == 1
    [skipped] = worker.captured.messages("job skipped")
    assert skipped["message_id"] == job.message_id
    assert worker.emitted == ["DeliveryRelayed", "JobsSkipped"]


def test_a_body_that_is_no_job_is_a_batch_item_failure(worker: Worker) -> None:
    [(message, job)] = worker.store("bob@example.org")
    records = [
        sqs_record("not json at all", message_id="garbage"),
        sqs_record('{"kind": "release", "email_id": "em_1"}', message_id="no-tenant"),
        sqs_record(job.model_dump_json(), message_id="good"),
    ]

    result = worker.run(*records)

    assert result == {"batchItemFailures": [{"itemIdentifier": "garbage"}, {"itemIdentifier": "no-tenant"}]}
    assert worker.status(message) is MessageStatus.RELAYED


def test_a_server_that_fails_is_not_tried_again_in_the_same_invocation(world: FakeWorld, tmp_path: Path) -> None:
    """One relay thread, so the jobs run in order: the two after the failure are deferred untried (with
    several threads, those already relaying when it failed finish their own try)."""
    worker = make_worker(world, tmp_path, relay_concurrency=1)
    pairs = worker.store("a@example.org", "b@example.org", "c@example.org")
    worker.world.relay.script["a@example.org"] = [
        SmtpReply.network(Stage.CONNECT, "connection refused"),
        reply(250, "2.0.0 Ok", Stage.DATA),
    ]

    worker.run(*(sqs_record(job.model_dump_json()) for _, job in pairs))

    assert [worker.status(m) for m, _ in pairs] == [MessageStatus.DEFERRED] * 3
    assert [c.envelope.recipient for c in worker.world.relay.calls] == ["a@example.org"]
    assert worker.world.relay.close_idle_calls == 1  # sessions idle too long end with the invocation
    retry = pairs[0][1].model_copy(update={"attempt": 1})

    worker.run(sqs_record(retry.model_dump_json()))  # the next invocation: a new batch

    assert worker.status(pairs[0][0]) is MessageStatus.RELAYED


def test_an_error_on_the_last_receive_fails_the_message_and_the_record(worker: Worker) -> None:
    email, (message,) = records.email(worker.seeded.tenant.tenant_id, ["bob@example.org"], body_key="bodies/gone.eml")
    worker.world.messages.create_email(email, [message], 0)  # its body is not in the store
    job = SendJob(tenant_id=message.tenant_id, email_id=message.email_id, message_id=message.message_id)
    [(_, fine)] = worker.store("carol@example.org")

    result = worker.run(
        sqs_record(job.model_dump_json(), receive_count=3, message_id="last"), sqs_record(fine.model_dump_json())
    )

    assert result == {"batchItemFailures": [{"itemIdentifier": "last"}]}
    assert worker.status(message) is MessageStatus.FAILED
    # The two jobs ran at once: their lines come in either order.
    lines = {line["message_id"]: line for line in worker.captured.messages("delivery attempt")}
    error, relayed = lines[job.message_id], lines[fine.message_id]
    assert error["outcome"] == "error" and error["detail"] == "RecordNotFound" and error["level"] == "ERROR"
    assert relayed["outcome"] == "relayed"
    assert sorted(worker.emitted) == ["DeliveryErrors", "DeliveryRelayed"]


def test_a_release_queues_the_scheduled_recipients(worker: Worker) -> None:
    email, messages = records.email(
        worker.seeded.tenant.tenant_id, ["a@example.org", "b@example.org"], status=MessageStatus.SCHEDULED
    )
    worker.world.messages.create_email(email, messages, 0)
    release = ReleaseJob(tenant_id=email.tenant_id, email_id=email.email_id)

    assert worker.run(sqs_record(release.model_dump_json())) == {"batchItemFailures": []}

    queued = worker.world.queue.sent["transactional"]
    assert all(isinstance(j, SendJob) for j in queued)
    assert sorted(j.message_id for j in queued if isinstance(j, SendJob)) == sorted(m.message_id for m in messages)
    [line] = worker.captured.messages("release")
    assert line["queued"] == 2 and line["email_id"] == email.email_id
    assert worker.emitted == ["ReleasedMessages"]


@dataclass
class SweeperParts:
    telemetry: Telemetry
    sweep: SweepDeps


def test_the_sweeper_logs_one_line_per_run(world: FakeWorld, tmp_path: Path) -> None:
    captured = Captured("sweeper", tmp_path)
    handler = create_sweeper(SweeperParts(captured.telemetry, world.sweep_deps(grace_seconds=60)))
    world.tenants.put_tenant(records.tenant(tenant_id="tn_1"))
    email, (message,) = records.email("tn_1", ["bob@example.org"])
    world.messages.create_email(email, [message], 0)  # stored, never enqueued
    world.clock.advance(3600)

    summary = handler({}, LocalContext("petrel-dev-sweeper"))

    assert summary["repaired"] == {"queued": 1}
    [line] = captured.lines()
    assert line["level"] == "WARNING" and line["repaired"] == {"queued": 1} and line["examined"] == 1
    assert line["function_name"] == "petrel-dev-sweeper" and line["service"].startswith("petrel-sweeper-")
    assert captured.metric_names() == ["MessagesRepaired", "RepairedQueued", "RepairRequeueFailed"]
