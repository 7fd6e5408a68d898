"""The ingest worker's handler on the fakes: SQS records parsed into jobs, partial batch failures, one
log line and one metric per message ingested."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local.lambda_runtime import LocalContext
from petrel.entrypoints.ingest_worker import create_ingest_worker
from petrel.models.records import MessageStatus
from petrel.observability import Telemetry
from petrel.ports import MessageKey, Transition
from petrel.services.ingest import IngestDeps
from petrel.settings import IngestWorkerSettings
from tests.fakes import FakeWorld, Seeded, records
from tests.unit.test_ingest import _job, dsn
from tests.unit.test_send_worker_handler import Captured, sqs_record

FUNCTION = "petrel-dev-ingest-worker"


@dataclass
class IngestParts:
    settings: IngestWorkerSettings
    telemetry: Telemetry
    ingest: IngestDeps


@pytest.fixture
def captured(tmp_path: Path) -> Captured:
    return Captured("ingest-worker", tmp_path)


def _handler(world: FakeWorld, captured: Captured) -> Any:
    settings = IngestWorkerSettings(
        tenants_table="tenants",
        messages_table="messages",
        suppressions_table="suppressions",
        inbound_table="inbound",
        bodies_bucket="bodies",
        max_receive_count=3,
    )
    return create_ingest_worker(IngestParts(settings, captured.telemetry, world.ingest_deps()))


def test_a_batch_ingests_each_job_and_reports_only_the_bad_ones(world: FakeWorld, captured: Captured) -> None:
    seeded: Seeded = world.seed()
    email, (message,) = records.email(seeded.tenant.tenant_id, ["a@example.org"])
    world.messages.create_email(email, [message], 0)
    key = MessageKey.of(message)  # relayed: its report applies now
    world.messages.lease(key, after_attempt=0, now=0, lease_until=1)
    relayed = Transition(MessageStatus.RELAYED)
    world.messages.transition(key, expected=[MessageStatus.SENDING], attempt=1, change=relayed, now=world.clock.now())
    good = _job(world, seeded, dsn(message, action="failed", status="5.1.1"))
    waiting_email, (waiting,) = records.email(seeded.tenant.tenant_id, ["c@example.org"])
    world.messages.create_email(waiting_email, [waiting], 0)
    world.messages.lease(MessageKey.of(waiting), after_attempt=0, now=0, lease_until=10**10)
    later = _job(world, seeded, dsn(waiting, action="delivered", status="2.0.0"))
    missing = _job(world, seeded, b"Subject: gone\r\n\r\nx\r\n").model_copy(update={"raw_key": "inbound/none"})
    broken = _job(  # broken boundaries, an unknown charset, bytes that are not UTF-8: stored raw, not a failure
        world,
        seeded,
        b'From: x@example.net\r\nSubject: \xff\xfe\r\nContent-Type: multipart/mixed; boundary="Q"\r\n\r\n'
        b"--Q\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\n\xe9t\xe9\r\n--Z--",
    )

    result = _handler(world, captured)(
        {
            "Records": [
                sqs_record(good.model_dump_json(), message_id="good"),
                sqs_record(later.model_dump_json(), message_id="later"),
                sqs_record("not json", message_id="garbled"),
                sqs_record(missing.model_dump_json(), message_id="missing"),
                sqs_record(broken.model_dump_json(), message_id="broken"),
            ]
        },
        LocalContext(FUNCTION),
    )

    failed = sorted(item["itemIdentifier"] for item in result["batchItemFailures"])
    assert failed == ["garbled", "later", "missing"]
    current = world.messages.get_message(key)
    assert current is not None and current.status is MessageStatus.BOUNCED
    line, other = captured.messages("inbound")
    assert other["kind"] == "message" and other["parse_error"] is True
    assert (
        line["kind"] == "delivery_report" and line["outcome"] == "bounced" and line["message_id"] == message.message_id
    )
    assert "InboundDeliveryReport" in captured.metric_names() and "IngestErrors" in captured.metric_names()
    kept = world.inbound.get_inbound(broken.tenant_id, broken.inbound_id)
    assert kept is not None and kept.parse_error and kept.kind.value == "message"


def test_a_report_still_waiting_on_its_last_receive_is_recorded_as_an_event(
    world: FakeWorld, captured: Captured
) -> None:
    seeded = world.seed()
    email, (waiting,) = records.email(seeded.tenant.tenant_id, ["c@example.org"])
    world.messages.create_email(email, [waiting], 0)
    world.messages.lease(MessageKey.of(waiting), after_attempt=0, now=0, lease_until=10**10)
    job = _job(world, seeded, dsn(waiting, action="delivered", status="2.0.0"))

    result = _handler(world, captured)(
        {"Records": [sqs_record(job.model_dump_json(), receive_count=3)]}, LocalContext(FUNCTION)
    )

    assert result["batchItemFailures"] == []
    current = world.messages.get_message(MessageKey.of(waiting))
    assert current is not None and current.status is MessageStatus.SENDING
    assert [event.type.value for event in current.events][-1] == "email.delivered"
