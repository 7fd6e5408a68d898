"""Fair send queues under moto: jobs carry their tenant as MessageGroupId, and the local pumps, sharing a
FairBuffer, hand a quiet tenant's jobs to the worker ahead of a flooding tenant's backlog.

Invariants: every job is handed to the function exactly once while it succeeds (no loss, no duplicate, no
receive counted without a delivery); a failed record comes back; a redriven job keeps its tenant's group.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.lambda_runtime import FairBuffer, QueuePump
from petrel import resources
from petrel.adapters.dead_letters import DeadLetter, SqsDeadLetters
from petrel.adapters.queues import SqsJobQueue
from petrel.models.jobs import Job, ReleaseJob, SendJob, parse_job
from tests.integration.aws_env import REGION, clean_aws_environment

pytestmark = pytest.mark.integration


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    clean_aws_environment(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queue(sqs: Any, name: str = "send", visibility: int = 60) -> str:
    return str(sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})["QueueUrl"])


def _jobs(tenant: str, n: int) -> list[SendJob]:
    return [SendJob(tenant_id=tenant, email_id=f"em_{tenant}", message_id=f"{tenant}_{i}") for i in range(n)]


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"], VisibilityTimeout=300
    ).get("Messages", []):
        messages += batch
    return messages


class Recorder:
    """A send worker stand-in: records each record it is handed, fails those in `fail` once."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.receive_counts: dict[str, list[int]] = {}
        self._fail = set(fail or ())
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], _context: Any) -> dict[str, Any]:
        ids: list[str] = []
        failures: list[dict[str, str]] = []
        for record in event["Records"]:
            job = parse_job(record["body"])
            assert isinstance(job, SendJob)
            assert record["attributes"]["MessageGroupId"] == job.tenant_id
            ids.append(job.message_id)
            with self._lock:
                self.receive_counts.setdefault(job.message_id, []).append(
                    int(record["attributes"]["ApproximateReceiveCount"])
                )
                if job.message_id in self._fail:
                    self._fail.discard(job.message_id)
                    failures.append({"itemIdentifier": record["messageId"]})
        with self._lock:
            self.batches.append(ids)
        return {"batchItemFailures": failures}


def test_jobs_carry_their_tenant_as_message_group(sqs: Any) -> None:
    url = _queue(sqs)
    queue = SqsJobQueue(sqs, {"transactional": url})
    release = ReleaseJob(tenant_id="tn_c", email_id="em_r")

    mixed: list[Job] = [*_jobs("tn_a", 12), *_jobs("tn_b", 3), release]
    assert queue.send_jobs("transactional", mixed) == []
    assert queue.send_jobs("transactional", _jobs("tn_d", 1), delay_seconds=0) == []

    groups = {}
    for message in _drain(sqs, url):
        job = parse_job(message["Body"])
        groups[job.message_id if isinstance(job, SendJob) else job.email_id] = message["Attributes"]["MessageGroupId"]
    assert len(groups) == 17
    assert all(group == key.rsplit("_", 1)[0] for key, group in groups.items() if key != "em_r")
    assert groups["em_r"] == "tn_c"


def test_a_quiet_tenant_is_not_held_behind_a_flood(sqs: Any) -> None:
    # A refill stops after a quarter of the visibility timeout. moto's receive reads the whole queue's
    # attributes for each message it returns, so receiving this 505-job flood takes 14 to 25 s on a 2-core
    # machine: with 60 s, the first refill could stop before reaching B's jobs, and the test would measure
    # the machine's speed rather than the buffer's order.
    url = _queue(sqs, visibility=600)
    queue = SqsJobQueue(sqs, {"transactional": url})
    assert queue.send_jobs("transactional", _jobs("tn_a", 500)) == []
    assert queue.send_jobs("transactional", _jobs("tn_b", 5)) == []
    recorder = Recorder()
    pump = QueuePump(sqs, url, "arn", recorder, function_name="send-worker", buffer=FairBuffer(sqs, url))

    while pump.poll_once():
        pass

    b_batches = [i for i, batch in enumerate(recorder.batches) if any(m.startswith("tn_b") for m in batch)]
    assert b_batches and max(b_batches) <= 1  # all five of B's in the first two batches of 51
    assert len(recorder.batches) == 51
    assert sorted(recorder.receive_counts) == sorted(j.message_id for j in [*_jobs("tn_a", 500), *_jobs("tn_b", 5)])
    assert all(counts == [1] for counts in recorder.receive_counts.values())  # once each, first receive
    assert _drain(sqs, url) == []


def test_without_a_buffer_the_flood_holds_the_quiet_tenant_back(sqs: Any) -> None:
    """What the buffer is for: one receive at a time sees only the flood's head (moto delivers in order)."""
    url = _queue(sqs)
    queue = SqsJobQueue(sqs, {"transactional": url})
    assert queue.send_jobs("transactional", [*_jobs("tn_a", 100), *_jobs("tn_b", 2)]) == []
    recorder = Recorder()
    pump = QueuePump(sqs, url, "arn", recorder, function_name="send-worker")

    while pump.poll_once():
        pass

    first_b = next(i for i, batch in enumerate(recorder.batches) if any(m.startswith("tn_b") for m in batch))
    assert first_b >= 5


def test_a_batch_larger_than_one_receive_is_gathered_from_several(sqs: Any) -> None:
    """A batch size above SQS's 10 per receive (prod's 50, with a batching window) is gathered as the
    event source gathers it; a short receive ends the batch; every job is handed over once."""
    url = _queue(sqs)
    queue = SqsJobQueue(sqs, {"transactional": url})
    assert queue.send_jobs("transactional", _jobs("tn_a", 57)) == []
    recorder = Recorder()
    pump = QueuePump(sqs, url, "arn", recorder, function_name="send-worker", batch_size=25)

    while pump.poll_once():
        pass

    assert [len(batch) for batch in recorder.batches] == [25, 25, 7]
    assert sorted(m for batch in recorder.batches for m in batch) == sorted(j.message_id for j in _jobs("tn_a", 57))
    assert _drain(sqs, url) == []  # each acknowledged


def test_pumps_sharing_a_buffer_deliver_each_job_once_and_a_failed_one_again(sqs: Any) -> None:
    url = _queue(sqs, visibility=2)
    queue = SqsJobQueue(sqs, {"transactional": url})
    jobs = [*_jobs("tn_a", 120), *_jobs("tn_b", 20), *_jobs("tn_c", 7)]
    assert queue.send_jobs("transactional", jobs) == []
    recorder = Recorder(fail={"tn_b_3", "tn_a_50"})
    buffer = FairBuffer(sqs, url)
    pumps = [QueuePump(sqs, url, "arn", recorder, function_name="send-worker", buffer=buffer) for _ in range(3)]

    def run(pump: QueuePump) -> None:
        idle = 0
        while idle < 40:  # the failed records come back after the 2 s visibility
            if pump.poll_once():
                idle = 0
            else:
                idle += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=run, args=(pump,)) for pump in pumps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(recorder.receive_counts) == sorted(job.message_id for job in jobs)
    for message_id, counts in recorder.receive_counts.items():
        assert counts == ([1, 2] if message_id in ("tn_b_3", "tn_a_50") else [1]), message_id
    assert buffer.held == 0
    assert _drain(sqs, url) == []


def test_a_held_job_is_not_delivered_twice_when_its_visibility_would_have_run_out(sqs: Any) -> None:
    """The buffer renews what it holds: a job waiting behind others longer than the queue's visibility
    timeout is still received once."""
    url = _queue(sqs, visibility=1)
    queue = SqsJobQueue(sqs, {"transactional": url})
    assert queue.send_jobs("transactional", _jobs("tn_a", 6)) == []
    buffer = FairBuffer(sqs, url)
    delivered: list[dict[str, Any]] = []

    for _ in range(6):
        delivered += buffer.take(1)
        buffer.done(delivered[-1:])
        time.sleep(0.4)  # six takes span 2.4 s: held jobs outlive one visibility timeout

    assert sorted(m["Body"] for m in delivered) == sorted(j.model_dump_json() for j in _jobs("tn_a", 6))
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in delivered] == ["1"] * 6


def test_release_makes_held_jobs_visible_again(sqs: Any) -> None:
    url = _queue(sqs)
    assert SqsJobQueue(sqs, {"transactional": url}).send_jobs("transactional", _jobs("tn_a", 25)) == []
    buffer = FairBuffer(sqs, url)
    assert len(buffer.take(10)) == 10
    assert buffer.held == 15

    buffer.release()

    assert buffer.held == 0
    assert len(_drain(sqs, url)) == 15


def test_a_redriven_job_goes_back_in_its_tenants_group(sqs: Any) -> None:
    """A job Scheduler dead-lettered has no group; sent back, it counts for its tenant."""
    job = SendJob(tenant_id="tn_q", email_id="em_1", message_id="msg_1")
    message = {"MessageId": "x", "ReceiptHandle": "h", "Body": job.model_dump_json(), "Attributes": {}}
    assert DeadLetter.from_sqs(message).message_group == "tn_q"  # type: ignore[arg-type]
    grouped = {**message, "Attributes": {"MessageGroupId": "tn_own"}}
    assert DeadLetter.from_sqs(grouped).message_group == "tn_own"  # type: ignore[arg-type]
    ingest = DeadLetter.from_sqs(message, "ingest")  # type: ignore[arg-type]
    assert ingest.message_group is None


def test_redriven_jobs_go_back_in_their_tenants_group(sqs: Any) -> None:
    """A job dead-lettered by its send queue keeps its group through the DLQ and the redrive; one
    Scheduler dead-lettered (put there without a group) goes back in its tenant's."""
    prefix = "fairtest"
    spec = resources.SEND_TRANSACTIONAL
    dlq = _queue(sqs, resources.physical_name(prefix, resources.dlq_name(spec)))
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    send = _queue(sqs, resources.physical_name(prefix, spec.name))
    sqs.set_queue_attributes(
        QueueUrl=send,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})},
    )
    schedules_dlq = _queue(sqs, resources.physical_name(prefix, resources.SCHEDULES.dlq))
    assert SqsJobQueue(sqs, {"transactional": send}).send_jobs("transactional", _jobs("tn_a", 1)) == []
    for _ in range(2):  # received once and not deleted: the second receive moves it to the DLQ
        sqs.receive_message(QueueUrl=send, MaxNumberOfMessages=10, VisibilityTimeout=0)
    sqs.send_message(QueueUrl=schedules_dlq, MessageBody=_jobs("tn_s", 1)[0].model_dump_json())
    letters = SqsDeadLetters(sqs, prefix, wait_seconds=0)

    assert len(letters.redrive(spec.name).moved) == 1
    assert len(letters.redrive(resources.SCHEDULES.group).moved) == 1

    groups = {parse_job(m["Body"]).tenant_id: m["Attributes"].get("MessageGroupId") for m in _drain(sqs, send)}
    assert groups == {"tn_a": "tn_a", "tn_s": "tn_s"}
