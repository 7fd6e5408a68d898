"""`petrel dlq`: the arguments and the one-line-per-message output (no AWS here; see tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.dlq import duration, letter_line
from cli.main import main, parser
from petrel import resources
from petrel.adapters.dead_letters import DeadLetter, LetterKind, dead_letter_queues
from petrel.models.inbound import IngestJob

SENT = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)


SEND_BODY = '{"tenant_id":"t_1","email_id":"e_1","message_id":"m_1","attempt":4,"pool":"bulk"}'
IMAP_JOB = IngestJob(
    tenant_id="t_1",
    inbound_id="in_0123456789ABCDEFGHJKMNPQRS",
    raw_key="inbound/t_1/in_0123456789ABCDEFGHJKMNPQRS/raw.eml",
    received_at=datetime(2026, 11, 23, 17, 59, 30, tzinfo=UTC),
    source="imap",
    mailbox_id="mbx_1",
    folder="INBOX",
    uid=42,
)


def _letter(body: str, attributes: dict[str, str] | None = None, kind: LetterKind = "send") -> DeadLetter:
    return DeadLetter(
        message_id="sqs-1",
        body=body,
        receive_count=3,
        sent_at=SENT,
        first_received_at=SENT + timedelta(seconds=2),
        attributes={k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()},
        kind=kind,
    )


def test_the_queue_choices_come_from_resources() -> None:
    names = [spec.name for spec in resources.QUEUES] + [resources.SCHEDULES.group]
    assert resources.INGEST.name in names
    for name in names:
        assert parser().parse_args(["dlq", "list", name]).queue == name
        assert parser().parse_args(["dlq", "redrive", name]).queue == name
    with pytest.raises(SystemExit):
        parser().parse_args(["dlq", "list", "send-transactional-dlq"])


def test_every_queue_with_a_dlq_has_a_name_and_the_ingest_one_carries_ingest_jobs() -> None:
    known = dead_letter_queues()
    assert {queue.dlq for queue in known.values()} >= {resources.dlq_name(spec) for spec in resources.QUEUES}
    ingest = known[resources.INGEST.name]
    assert (ingest.dlq, ingest.source, ingest.kind) == ("ingest-dlq", resources.INGEST.name, "ingest")
    assert {known[spec.name].kind for spec in resources.SEND_QUEUES} == {"send"}
    assert known[resources.SCHEDULES.group].kind == "send"


def test_an_unknown_queue_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dlq", "redrive", "inbound"])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("petrel dlq redrive: argument queue: invalid choice: 'inbound'")
    assert "'ingest'" in line and line.endswith("(see petrel dlq redrive --help)")


def test_json_may_come_before_or_after_the_command_and_limit_is_positive() -> None:
    assert parser().parse_args(["--json", "dlq", "redrive", "send-bulk"]).json is True
    assert parser().parse_args(["dlq", "redrive", "send-bulk", "--json"]).json is True
    args = parser().parse_args(["dlq", "redrive", "send-bulk"])
    assert args.json is False and args.limit is None
    assert parser().parse_args(["dlq", "list", "schedules"]).limit == 50
    with pytest.raises(SystemExit):
        parser().parse_args(["dlq", "list", "schedules", "--limit", "0"])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(7, "7s"), (65, "1m05s"), (3 * 3600 + 120, "3h02m"), (2 * 86_400 + 3600, "2d01h"), (-5, "0s")],
)
def test_durations(seconds: int, text: str) -> None:
    assert duration(timedelta(seconds=seconds)) == text


def test_a_line_names_the_job_and_never_prints_its_body() -> None:
    line = letter_line(_letter(SEND_BODY), SENT + timedelta(hours=2, minutes=5))
    assert line == (
        "sqs-1  received 3x  sent 2026-11-23T18:00:00Z  first received 2026-11-23T18:00:02Z  age 2h05m  "
        "tenant=t_1 email=e_1 message=m_1  attempt=4 pool=bulk"
    )


def test_an_unparseable_body_and_schedulers_error_are_shown() -> None:
    letter = _letter(
        "x" * 100, {"ERROR_CODE": "AWS.Scheduler.Throttled", "ERROR_MESSAGE": "slow down", "TARGET_ARN": "a"}
    )
    first, error = letter_line(letter, SENT).splitlines()
    assert first.endswith(f"unparseable body: '{'x' * 80}'")
    assert error == "    scheduler error: ERROR_CODE=AWS.Scheduler.Throttled  ERROR_MESSAGE=slow down"


def test_an_ingest_line_names_tenant_inbound_id_source_mailbox_and_received_time() -> None:
    line = letter_line(_letter(IMAP_JOB.model_dump_json(), kind="ingest"), SENT + timedelta(minutes=1))
    assert line == (
        "sqs-1  received 3x  sent 2026-11-23T18:00:00Z  first received 2026-11-23T18:00:02Z  age 1m00s  "
        "tenant=t_1 inbound=in_0123456789ABCDEFGHJKMNPQRS source=imap mailbox=mbx_1 folder=INBOX uid=42  "
        "received 2026-11-23T17:59:30Z"
    )


def test_a_pushed_message_has_no_mailbox_and_its_time_is_shown_in_utc() -> None:
    pushed = IngestJob(
        tenant_id="t_2",
        inbound_id="in_2",
        raw_key="inbound/t_2/in_2/raw.eml",
        received_at=datetime.fromisoformat("2026-11-23T19:00:05+01:00"),
        source="push",
    )
    line = letter_line(_letter(pushed.model_dump_json(), kind="ingest"), SENT)
    assert line.endswith("tenant=t_2 inbound=in_2 source=push mailbox=-  received 2026-11-23T18:00:05Z")


@pytest.mark.parametrize("body", ["{garbled", SEND_BODY, '{"tenant_id":"t_1","inbound_id":"in_1"}'])
def test_an_ingest_letter_that_is_no_ingest_job_is_flagged(body: str) -> None:
    letter = _letter(body, kind="ingest")
    assert letter.ingest_job is None and letter.job is None and letter.parsed is None
    assert letter_line(letter, SENT).endswith(f"not an ingest job: {body[:80]!r}")
    assert letter.summary(SENT)["unparseable_body"] == body[:80] and "job" not in letter.summary(SENT)


def test_an_ingest_job_in_a_send_dlq_is_not_taken_for_a_send_job() -> None:
    letter = _letter(IMAP_JOB.model_dump_json())
    assert letter.ingest_job is None and letter.job is None
    assert "unparseable body" in letter_line(letter, SENT)


def test_an_ingest_summary_holds_the_job_fields() -> None:
    summary = _letter(IMAP_JOB.model_dump_json(), kind="ingest").summary(SENT)
    job = summary["job"]
    assert (job["tenant_id"], job["inbound_id"], job["source"], job["mailbox_id"]) == (
        "t_1",
        IMAP_JOB.inbound_id,
        "imap",
        "mbx_1",
    )
    assert job["received_at"] == "2026-11-23T17:59:30Z" and "unparseable_body" not in summary
