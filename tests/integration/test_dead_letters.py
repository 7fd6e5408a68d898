"""Dead-letter queues under moto: listing leaves the messages visible, redrive puts them back byte for byte
(send jobs, Scheduler's dead letters, and the ingest queue's IngestJobs).

The queues come from local/provision.py (the same specs as the CDK constructs); the schedules' DLQ
is created here when provision does not make it.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from cli.command import Context
from cli.main import main, parser, run
from cli.output import Output
from cli.target import LOCAL, Target
from local.provision import LocalResources, provision
from petrel import resources
from petrel.adapters.dead_letters import SCHEDULER_ERROR_ATTRIBUTES, SqsDeadLetters, dead_letter_queues
from petrel.adapters.queues import SqsJobQueue
from petrel.container.admin import AdminSettings
from petrel.mail.raw import raw_message_id
from petrel.models.inbound import IngestJob, inbound_id
from petrel.models.jobs import ReleaseJob, SendJob
from petrel.models.records import Pool
from petrel.ports import RecordNotFound
from petrel.services.ingest import RECEIVED, ingest
from petrel.services.mailboxes import MailboxDeps
from petrel.services.redrive import RedriveDeps
from petrel.services.tenants import AdminDeps
from tests.fakes import FakeWorld
from tests.integration.aws_env import REGION, clean_aws_environment

pytestmark = pytest.mark.integration

PREFIX = "petrel-dlqtest"
MAX_RECEIVE_COUNT = 2
TRANSACTIONAL = resources.SEND_TRANSACTIONAL.name
BULK = resources.SEND_BULK.name
SCHEDULES = resources.SCHEDULES.group
INGEST = resources.INGEST.name


def _job(n: int, pool: Pool = "transactional", attempt: int = 0) -> str:
    job = SendJob(tenant_id="t_1", email_id=f"e_{n}", message_id=f"m_{n}", attempt=attempt, pool=pool)
    return job.model_dump_json()


def _scheduler_attributes(code: str = "AWS.Scheduler.InternalServerError", truncated: bool = False) -> dict[str, Any]:
    """What EventBridge Scheduler puts on a dead letter."""
    values = {
        "ERROR_CODE": code,
        "ERROR_MESSAGE": "Failed to deliver the message to the target",
        "EXECUTION_ID": "exec-1",
        "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
        "IS_PAYLOAD_TRUNCATED": "true" if truncated else "false",
        "RETRY_ATTEMPTS": "10",
        "SCHEDULED_TIME": "2026-11-23T18:53:02Z",
        "SCHEDULE_ARN": "arn:aws:scheduler:us-east-1:123456789012:schedule/schedules/m_1-1",
        "TARGET_ARN": f"arn:aws:sqs:us-east-1:123456789012:{PREFIX}-{TRANSACTIONAL}",
    }
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


@dataclass
class Queues:
    sqs: Any
    made: LocalResources
    dlq: SqsDeadLetters

    def url(self, name: str) -> str:
        """A queue's URL by logical name: `send-bulk`, `send-bulk-dlq`, `schedules-dlq`."""
        return str(self.sqs.get_queue_url(QueueName=resources.physical_name(PREFIX, name))["QueueUrl"])

    def dlq_url(self, name: str) -> str:
        return self.url(dead_letter_queues()[name].dlq)

    def put(self, queue_url: str, body: str, attributes: dict[str, Any] | None = None) -> str:
        out = self.sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes or {})
        return str(out["MessageId"])

    def visible(self, queue_url: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message of a queue (received and deleted)."""
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
        ).get("Messages", []):
            messages += batch
            self.sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        return messages


def _provision(sqs: Any, dynamodb: Any, s3: Any, **others: Any) -> LocalResources:
    """The queues (and the rest) as the local stack makes them; `others`: provision's scheduler and iam
    clients (by default, clients like `sqs` from the process's credentials)."""
    made = provision(
        dynamodb, sqs, s3, prefix=PREFIX, visibility_timeout=30, max_receive_count=MAX_RECEIVE_COUNT, **others
    )
    schedules_dlq = resources.physical_name(PREFIX, resources.SCHEDULES.dlq)
    try:
        sqs.get_queue_url(QueueName=schedules_dlq)
    except ClientError:  # an older provision that does not make the schedules' DLQ
        sqs.create_queue(QueueName=schedules_dlq)
    return made


@pytest.fixture
def queues(monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session) -> Iterator[Queues]:
    clean_aws_environment(monkeypatch)
    with mock_aws():
        clients: dict[str, Any] = {name: boto_session.client(name) for name in ("sqs", "dynamodb", "s3")}
        made = _provision(clients["sqs"], clients["dynamodb"], clients["s3"])
        yield Queues(clients["sqs"], made, SqsDeadLetters(clients["sqs"], PREFIX, wait_seconds=0))


def test_the_queue_names_come_from_resources() -> None:
    assert list(dead_letter_queues()) == [*(spec.name for spec in resources.QUEUES), resources.SCHEDULES.group]
    assert dead_letter_queues()[SCHEDULES].dlq == resources.SCHEDULES.dlq
    assert dead_letter_queues()[BULK].source == BULK
    assert dead_letter_queues()[INGEST].source == INGEST
    assert dead_letter_queues()[INGEST].dlq == resources.dlq_name(resources.INGEST)


def test_provision_makes_a_dlq_for_every_queue_and_local_json_names_them(queues: Queues) -> None:
    """`.petrel/local.json`'s `aws.dlqs` is provision's `dlq_urls` plus the schedules' DLQ
    (local/platform.py): every queue of resources.QUEUES, by the name `petrel dlq` takes."""
    assert queues.made.dlq_urls.keys() == {spec.name for spec in resources.QUEUES}
    for name, url in queues.made.dlq_urls.items():
        assert url == queues.dlq_url(name)


def test_list_shows_the_messages_and_leaves_them_visible_for_a_redrive(queues: Queues) -> None:
    dlq = queues.dlq_url(TRANSACTIONAL)
    ids = [queues.put(dlq, _job(n, attempt=n)) for n in range(12)]  # more than one receive batch
    garbage = queues.put(dlq, "not json at all " * 10)

    depth = queues.dlq.depth(TRANSACTIONAL)
    letters = queues.dlq.peek(TRANSACTIONAL, limit=50)

    assert depth.visible == 13 and depth.total == 13
    assert sorted(letter.message_id for letter in letters) == sorted([*ids, garbage])
    by_id = {letter.message_id: letter for letter in letters}
    first = by_id[ids[3]]
    assert first.job is not None and (first.job.email_id, first.job.attempt) == ("e_3", 3)
    assert first.receive_count == 1 and first.sent_at is not None and first.first_received_at is not None
    summary = by_id[garbage].summary(first.sent_at)
    assert summary["unparseable_body"] == ("not json at all " * 10)[:80] and "job" not in summary
    assert queues.visible(dlq) == 13  # made visible again at once, not after the visibility timeout

    report = queues.dlq.redrive(TRANSACTIONAL)

    assert len(report.moved) == 13 and report.left == []  # a send DLQ's letters all have a known source
    assert queues.visible(dlq) == 0


def test_list_respects_the_limit(queues: Queues) -> None:
    dlq = queues.dlq_url(BULK)
    for n in range(5):
        queues.put(dlq, _job(n, pool="bulk"))

    assert len(queues.dlq.peek(BULK, limit=3)) == 3
    assert queues.visible(dlq) == 5


def test_redrive_puts_the_body_back_byte_for_byte_with_its_attributes(queues: Queues) -> None:
    dlq = queues.dlq_url(BULK)
    # Not how pydantic would write it: odd spacing, key order, an unknown field, non-ASCII text.
    body = (
        '{ "pool":"bulk",  "message_id": "m_9", "tenant_id":"t_1","email_id":"e_9",\n'
        ' "attempt": 2, "note": "düsseldorf ✉" }'
    )
    attributes = {
        "origin": {"DataType": "String", "StringValue": "api"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        "ERROR_CODE": {"DataType": "String", "StringValue": "kept only when Scheduler is not the source"},
    }
    queues.sqs.send_message(
        QueueUrl=dlq,
        MessageBody=body,
        MessageAttributes=attributes,
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3f"}},
    )

    sent: list[dict[str, Any]] = []
    queues.sqs.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch", lambda params, **_: sent.append(params)
    )

    report = queues.dlq.redrive(BULK)

    assert [m.queue for m in report.moved] == [BULK] and report.left == []
    [message] = queues.drain(queues.url(BULK))
    assert message["Body"] == body
    assert message["MessageId"] == report.moved[0].new_message_id
    assert message["MessageAttributes"]["origin"]["StringValue"] == "api"
    assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
    # The X-Ray trace header goes on too (moto's SendMessageBatch drops it, so look at the request).
    [entry] = sent[0]["Entries"]
    assert entry["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == "Root=1-5759e988-bd862e3f"
    assert queues.visible(dlq) == 0


def test_redrive_twice_moves_nothing_the_second_time(queues: Queues) -> None:
    dlq = queues.dlq_url(TRANSACTIONAL)
    for n in range(3):
        queues.put(dlq, _job(n))

    first = queues.dlq.redrive(TRANSACTIONAL)
    second = queues.dlq.redrive(TRANSACTIONAL)

    assert len(first.moved) == 3
    assert second.moved == [] and second.left == []
    assert len(queues.drain(queues.url(TRANSACTIONAL))) == 3


def test_redrive_respects_the_limit(queues: Queues) -> None:
    dlq = queues.dlq_url(TRANSACTIONAL)
    for n in range(4):
        queues.put(dlq, _job(n))

    assert len(queues.dlq.redrive(TRANSACTIONAL, limit=3).moved) == 3
    assert queues.visible(dlq) == 1


def test_schedules_dlq_letters_go_to_the_queue_of_their_pool(queues: Queues) -> None:
    dlq = queues.dlq_url(SCHEDULES)
    custom = {"trace": {"DataType": "String", "StringValue": "abc"}}
    transactional = queues.put(dlq, _job(1, "transactional", attempt=1), _scheduler_attributes() | custom)
    bulk = queues.put(dlq, _job(2, "bulk", attempt=3), _scheduler_attributes())
    garbage = queues.put(dlq, "{truncated", _scheduler_attributes())
    cut = queues.put(dlq, _job(3, "bulk"), _scheduler_attributes(truncated=True))

    letters = {letter.message_id: letter for letter in queues.dlq.peek(SCHEDULES)}
    assert letters[bulk].scheduler_error["ERROR_CODE"] == "AWS.Scheduler.InternalServerError"
    assert letters[bulk].scheduler_error.keys() == SCHEDULER_ERROR_ATTRIBUTES

    report = queues.dlq.redrive(SCHEDULES)

    assert {m.letter.message_id: m.queue for m in report.moved} == {transactional: TRANSACTIONAL, bulk: BULK}
    left = {entry.letter.message_id: entry.reason for entry in report.left}
    assert left.keys() == {garbage, cut}
    assert left[garbage].startswith("unparseable body") and "truncated" in left[cut]
    assert queues.visible(dlq) == 2  # left where they were, and visible again

    [on_transactional] = queues.drain(queues.url(TRANSACTIONAL))
    assert on_transactional["Body"] == _job(1, "transactional", attempt=1)
    assert on_transactional["MessageAttributes"] == {"trace": {"DataType": "String", "StringValue": "abc"}}
    [on_bulk] = queues.drain(queues.url(BULK))
    assert on_bulk["Body"] == _job(2, "bulk", attempt=3) and "MessageAttributes" not in on_bulk

    again = queues.dlq.redrive(SCHEDULES)
    assert again.moved == [] and {entry.letter.message_id for entry in again.left} == {garbage, cut}


def test_a_release_job_in_the_schedules_dlq_goes_back_to_the_queue_of_its_pool(queues: Queues) -> None:
    release = ReleaseJob(tenant_id="t_1", email_id="e_9", pool="bulk").model_dump_json()
    dlq = queues.dlq_url(SCHEDULES)
    sent = queues.put(dlq, release, _scheduler_attributes())

    [letter] = queues.dlq.peek(SCHEDULES)
    assert letter.summary(letter.sent_at or datetime.now(UTC))["job"]["kind"] == "release"
    report = queues.dlq.redrive(SCHEDULES, prepare=lambda job: job)

    assert {m.letter.message_id: m.queue for m in report.moved} == {sent: BULK}
    [on_bulk] = queues.drain(queues.url(BULK))
    assert on_bulk["Body"] == release


def _pump(queues: Queues, queue_url: str, handler: Any, rounds: int = 10) -> int:
    """Lambda's SQS event source in miniature, without the visibility wait: a failed record is received again."""
    handled = 0
    for _ in range(rounds):
        batch = queues.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        for message in batch:
            handled += 1
            try:
                handler(SendJob.model_validate_json(message["Body"]))
            except RuntimeError:
                continue
            queues.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return handled


def test_a_poison_job_ends_in_the_dlq_and_redrive_puts_it_back(queues: Queues) -> None:
    job = SendJob(tenant_id="t_1", email_id="e_1", message_id="m_poison")
    by_pool = {str(spec.pool): queues.made.queue_urls[spec.name] for spec in resources.SEND_QUEUES}
    assert SqsJobQueue(queues.sqs, by_pool).send_jobs("transactional", [job]) == []
    source = queues.url(TRANSACTIONAL)

    def poison(_: SendJob) -> None:
        raise RuntimeError("always")

    assert _pump(queues, source, poison) == MAX_RECEIVE_COUNT
    [letter] = queues.dlq.peek(TRANSACTIONAL)
    assert letter.job == job and letter.receive_count >= MAX_RECEIVE_COUNT

    report = queues.dlq.redrive(TRANSACTIONAL)

    assert [m.letter.message_id for m in report.moved] == [letter.message_id]
    seen: list[SendJob] = []
    assert _pump(queues, source, seen.append) == 1  # the fixed worker now takes it
    assert seen == [job]
    assert queues.dlq.peek(TRANSACTIONAL) == []


class _FailsAgainAtOnce:
    """An SQS client whose send queue dead-letters every redriven message at once (a job still poisoned)."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, **kwargs: Any) -> Any:
        out = self._sqs.send_message_batch(**kwargs)
        for _ in range(MAX_RECEIVE_COUNT + 1):
            self._sqs.receive_message(QueueUrl=kwargs["QueueUrl"], MaxNumberOfMessages=10, VisibilityTimeout=0)
        return out


def test_a_letter_that_fails_again_during_the_redrive_is_not_looped(queues: Queues) -> None:
    dlq = queues.dlq_url(TRANSACTIONAL)
    queues.put(dlq, _job(1))
    letters = SqsDeadLetters(_FailsAgainAtOnce(queues.sqs), PREFIX, wait_seconds=0)  # type: ignore[arg-type]

    report = letters.redrive(TRANSACTIONAL)

    assert len(report.moved) == 1 and report.left == []
    [back] = queues.dlq.peek(TRANSACTIONAL)  # the copy sent by this run, dead-lettered again, kept for the next
    assert back.message_id == report.moved[0].new_message_id


def test_a_missing_queue_is_a_one_line_error(queues: Queues) -> None:
    with pytest.raises(RecordNotFound, match=r"queue petrel-nope-send-bulk-dlq does not exist"):
        SqsDeadLetters(queues.sqs, "petrel-nope").peek(BULK)
    with pytest.raises(RecordNotFound, match=r"no dead-letter queue 'inbound' \(known: .*\bingest\b"):
        queues.dlq.peek("inbound")
    with pytest.raises(RecordNotFound, match="no dead-letter queue 'ingest-dlq'"):
        queues.dlq.redrive("ingest-dlq")


# The CLI, end to end against a moto server, the way `make run` leaves it (.petrel/local.json).


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def local_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Path, Queues]]:
    from moto.server import ThreadedMotoServer

    clean_aws_environment(monkeypatch)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # The CLI reaches it through local.json alone (its endpoint, region and the local credentials).
    try:
        session = boto3.session.Session(region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local")
        clients: dict[str, Any] = {
            name: session.client(name, endpoint_url=endpoint) for name in ("sqs", "dynamodb", "s3", "scheduler", "iam")
        }
        made = _provision(
            clients["sqs"], clients["dynamodb"], clients["s3"], scheduler=clients["scheduler"], iam=clients["iam"]
        )
        state = {"aws": {"endpoint_url": endpoint, "region": REGION, "prefix": PREFIX, "tables": made.tables}}
        (tmp_path / "local.json").write_text(json.dumps(state))
        yield tmp_path, Queues(clients["sqs"], made, SqsDeadLetters(clients["sqs"], PREFIX, wait_seconds=0))
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
        server.stop()


def test_cli_lists_and_redrives(local_stack: tuple[Path, Queues], capsys: pytest.CaptureFixture[str]) -> None:
    workdir, queues = local_stack
    dlq = queues.dlq_url(SCHEDULES)
    moved = queues.put(dlq, _job(7, "bulk", attempt=2), _scheduler_attributes("AWS.Scheduler.ThrottlingException"))
    garbage = queues.put(dlq, "<html>oops</html>", _scheduler_attributes())
    cli = ["--workdir", str(workdir), "dlq"]

    assert main([*cli, "list", SCHEDULES]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"{PREFIX}-schedules-dlq: about 2 message(s) (2 visible")
    line = next(row for row in text if row.startswith(moved))
    assert "received 1x" in line and "tenant=t_1 email=e_7 message=m_7" in line and "attempt=2 pool=bulk" in line
    assert any("ERROR_CODE=AWS.Scheduler.ThrottlingException" in row for row in text)
    assert any(row.startswith(garbage) and "unparseable body: '<html>oops</html>'" in row for row in text)

    assert main([*cli, "list", SCHEDULES, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["approximate_depth"]["visible"] == 2  # the text listing left them visible
    assert {m["sqs_message_id"] for m in listed["messages"]} == {moved, garbage}

    assert main([*cli, "redrive", SCHEDULES]) == 0
    out = capsys.readouterr().out
    assert f"{PREFIX}-schedules-dlq: moved 1 (1 to {BULK}), left 1" in out
    assert f"left {garbage}: unparseable body" in out
    [back] = queues.drain(queues.url(BULK))
    assert back["Body"] == _job(7, "bulk", attempt=2)

    assert main(["--json", *cli, "redrive", SCHEDULES]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["moved"] == [] and [m["sqs_message_id"] for m in again["left"]] == [garbage]


def test_cli_reports_a_missing_state_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workdir", str(tmp_path), "dlq", "list", BULK]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"petrel: {tmp_path / 'local.json'} not found: start the local stack with `make run` first"
    )


# The ingest queue's dead letters: IngestJobs (raw mail already in the bucket), put back unchanged.

RECEIVED_AT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def _raw(n: int) -> bytes:
    return (
        f"From: sender{n}@example.org\r\nTo: inbox@example.com\r\nSubject: hello {n}\r\n"
        f"Message-ID: <in-{n}@example.org>\r\n\r\nbody {n}\r\n"
    ).encode()


def _ingest_job(tenant_id: str, n: int, source: Literal["imap", "push", "local"] = "imap") -> tuple[IngestJob, bytes]:
    """Message `n` and its job, as the poller (imap), POST /v1/inbound/raw (push) or a local delivery make them."""
    raw = _raw(n)
    found = inbound_id(tenant_id, raw_message_id(raw), raw)
    where: dict[str, Any] = {}
    if source == "imap":
        where = {"mailbox_id": "mbx_1", "folder": "INBOX", "uid": 100 + n}
    elif source == "local":
        where = {"mailbox_id": "mbx_1", "local_message_id": f"m_{n}"}
    job = IngestJob(
        tenant_id=tenant_id,
        inbound_id=found,
        raw_key=resources.inbound_raw_key(tenant_id, found),
        received_at=RECEIVED_AT + timedelta(seconds=n),
        source=source,
        **where,
    )
    return job, raw


def test_list_shows_ingest_letters_and_flags_a_body_that_is_no_ingest_job(queues: Queues) -> None:
    dlq = queues.dlq_url(INGEST)
    jobs = [_ingest_job("t_1", n, source)[0] for n, source in enumerate(("imap", "push", "local"), start=1)]
    sent = {queues.put(dlq, job.model_dump_json()): job for job in jobs}
    garbled = queues.put(dlq, "{not an ingest job")
    stray = queues.put(dlq, _job(1))  # a send job is no ingest job either

    depth = queues.dlq.depth(INGEST)
    letters = {letter.message_id: letter for letter in queues.dlq.peek(INGEST)}

    assert depth.visible == 5 and depth.total == 5
    assert letters.keys() == {*sent, garbled, stray}
    for sqs_id, job in sent.items():
        assert letters[sqs_id].ingest_job == job and letters[sqs_id].job is None and letters[sqs_id].kind == "ingest"
    for sqs_id in (garbled, stray):
        assert letters[sqs_id].parsed is None and "unparseable_body" in letters[sqs_id].summary(RECEIVED_AT)
    assert queues.visible(dlq) == 5  # made visible again at once


def test_ingest_redrive_puts_each_letter_back_unchanged_and_prepares_nothing(queues: Queues) -> None:
    dlq = queues.dlq_url(INGEST)
    job, _ = _ingest_job("t_1", 2, "push")
    # Not how pydantic would write it (a newer worker's field, indentation, non-ASCII): sent back as is.
    body = json.dumps(job.model_dump(mode="json") | {"note": "düsseldorf ✉"}, indent=1, ensure_ascii=False)
    attributes = {"origin": {"DataType": "String", "StringValue": "poller"}}
    kept = queues.put(dlq, body, attributes)
    stray = queues.put(dlq, _job(1))  # send-shaped: a send redrive would offer it to `prepare`
    garbled = queues.put(dlq, "{garbled")  # the worker decides again (it may be a newer worker's job)
    prepared: list[SendJob] = []

    def prepare(found: SendJob) -> SendJob:
        prepared.append(found)
        return found

    report = queues.dlq.redrive(INGEST, prepare=prepare)

    assert {m.letter.message_id: m.queue for m in report.moved} == {kept: INGEST, stray: INGEST, garbled: INGEST}
    assert report.left == [] and prepared == []
    back = {m["Body"]: m for m in queues.drain(queues.url(INGEST))}
    assert back.keys() == {body, _job(1), "{garbled"}
    assert back[body]["MessageAttributes"] == attributes
    assert queues.dlq.depth(INGEST).total == 0
    again = queues.dlq.redrive(INGEST)
    assert again.moved == [] and again.left == []


class _Crash(Exception):
    pass


class _DiesBeforeDeleting:
    """An SQS client whose process dies after SendMessageBatch put the letters back, before the DLQ delete."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.unfinished: list[str] = []  # receipt handles of the letters it never deleted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def delete_message_batch(self, **kwargs: Any) -> Any:
        self.unfinished += [entry["ReceiptHandle"] for entry in kwargs["Entries"]]
        raise _Crash("the process died between send and delete")


def test_a_crash_between_send_and_delete_twice_duplicates_ingest_letters_and_loses_none(queues: Queues) -> None:
    """Invariant: every dead letter is on the DLQ or on the ingest queue, whatever crashes; and the
    copies a crash leaves make one inbound record per message, the one ingested meanwhile unchanged."""
    world = FakeWorld()
    tenant = world.seed().tenant.tenant_id
    made = [_ingest_job(tenant, n, source) for n, source in enumerate(("imap", "push", "imap"), start=1)]
    for job, raw in made:
        world.blobs.put(job.raw_key, raw)
    meanwhile = made[0][0]  # ingested after all (the poller read it again, or a later receive succeeded)
    assert ingest(world.ingest_deps(), meanwhile).created
    before = world.inbound.get_inbound(tenant, meanwhile.inbound_id)
    dlq = queues.dlq_url(INGEST)
    bodies = [job.model_dump_json() for job, _ in made]
    for body in bodies:
        queues.put(dlq, body)

    for crashes in (1, 2):
        dying = _DiesBeforeDeleting(queues.sqs)
        with pytest.raises(_Crash):
            SqsDeadLetters(dying, PREFIX, wait_seconds=0).redrive(INGEST)  # type: ignore[arg-type]
        assert len(dying.unfinished) == 3
        for handle in dying.unfinished:  # its visibility timeout passes
            queues.sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=handle, VisibilityTimeout=0)
        assert queues.visible(dlq) == 3  # nothing left the DLQ
        assert queues.visible(queues.url(INGEST)) == 3 * crashes  # one more copy of each per crash

    report = queues.dlq.redrive(INGEST)

    assert len(report.moved) == 3 and report.left == []
    assert queues.dlq.depth(INGEST).total == 0
    copies = [message["Body"] for message in queues.drain(queues.url(INGEST))]
    assert sorted(copies) == sorted(bodies * 3)  # each letter three times, byte for byte
    done = [ingest(world.ingest_deps(), IngestJob.model_validate_json(body)) for body in copies]
    assert sum(result.created for result in done) == 2  # the two not ingested before, once each
    assert {result.outcome for result in done} == {RECEIVED}
    assert world.inbound.records.keys() == {(tenant, job.inbound_id) for job, _ in made}
    assert world.inbound.get_inbound(tenant, meanwhile.inbound_id) == before
    assert all(record.outcome == RECEIVED for record in world.inbound.records.values())


@dataclass
class _DlqOnly:
    """The admin container's surface for `petrel dlq`: the real dead letters, no message store (a
    redrive that reached for it fails the command)."""

    dead_letters: SqsDeadLetters

    @property
    def admin(self) -> AdminDeps:
        raise AssertionError("no tenants here")

    @property
    def mailbox_admin(self) -> MailboxDeps:
        raise AssertionError("no mailboxes here")

    @property
    def redrive(self) -> RedriveDeps:
        raise AssertionError("no message store here")


def _cli(queues: Queues, workdir: Path, *argv: str) -> tuple[int, str, str]:
    args: argparse.Namespace = parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    settings = AdminSettings(
        name_prefix=PREFIX,
        tenants_table=f"{PREFIX}-tenants",
        messages_table=f"{PREFIX}-messages",
        secrets_prefix=resources.secrets_prefix(PREFIX),
    )
    context = Context(
        env=LOCAL,
        workdir=workdir,
        output=Output(as_json=args.json, out=out, err=err),
        target=Target(env=LOCAL, settings=settings, state={}),
        services=_DlqOnly(queues.dlq),
    )
    return run(args, context), out.getvalue(), err.getvalue()


def test_cli_lists_and_redrives_ingest_letters_without_reaching_for_message_records(
    queues: Queues, tmp_path: Path
) -> None:
    dlq = queues.dlq_url(INGEST)
    job, _ = _ingest_job("t_1", 1, "imap")
    letter = queues.put(dlq, job.model_dump_json())
    garbled = queues.put(dlq, "<html>oops</html>")

    status, out, _ = _cli(queues, tmp_path, "dlq", "list", INGEST)
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith(f"{PREFIX}-ingest-dlq: about 2 message(s) (2 visible")
    line = next(row for row in lines if row.startswith(letter))
    assert f"tenant=t_1 inbound={job.inbound_id} source=imap mailbox=mbx_1 folder=INBOX uid=101" in line
    assert line.endswith("received 2026-11-30T12:00:01Z")
    assert any(row.startswith(garbled) and row.endswith("not an ingest job: '<html>oops</html>'") for row in lines)

    status, out, _ = _cli(queues, tmp_path, "--json", "dlq", "list", INGEST)
    shown = {message["sqs_message_id"]: message for message in json.loads(out)["messages"]}
    assert status == 0 and shown[letter]["job"] == job.model_dump(mode="json")
    assert shown[garbled]["unparseable_body"] == "<html>oops</html>" and "job" not in shown[garbled]

    status, out, _ = _cli(queues, tmp_path, "dlq", "redrive", INGEST)
    assert status == 0 and out.splitlines() == [f"{PREFIX}-ingest-dlq: moved 2 (2 to {INGEST}), left 0"]
    assert sorted(m["Body"] for m in queues.drain(queues.url(INGEST))) == sorted(
        [job.model_dump_json(), "<html>oops</html>"]
    )
    assert queues.visible(dlq) == 0

    # A send queue's redrive does reach for the message store (to reopen worker-error messages).
    queues.put(queues.dlq_url(BULK), _job(1, "bulk"))
    status, _, err = _cli(queues, tmp_path, "dlq", "redrive", BULK)
    assert status == 1 and err.strip() == "petrel: AssertionError: no message store here"
