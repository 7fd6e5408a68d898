"""`petrel dlq`: the arguments and the one-line-per-message output (no AWS here; see tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli.dlq import duration, letter_line
from cli.main import parser
from petrel import resources
from petrel.adapters.dead_letters import DeadLetter

SENT = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)


def _letter(body: str, attributes: dict[str, str] | None = None) -> DeadLetter:
    return DeadLetter(
        message_id="sqs-1",
        body=body,
        receive_count=3,
        sent_at=SENT,
        first_received_at=SENT + timedelta(seconds=2),
        attributes={k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()},
    )


def test_the_queue_choices_come_from_resources() -> None:
    names = [spec.name for spec in resources.SEND_QUEUES] + [resources.SCHEDULES.group]
    for name in names:
        assert parser().parse_args(["dlq", "list", name]).queue == name
    with pytest.raises(SystemExit):
        parser().parse_args(["dlq", "list", "send-transactional-dlq"])


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
    body = '{"tenant_id":"t_1","email_id":"e_1","message_id":"m_1","attempt":4,"pool":"bulk"}'
    line = letter_line(_letter(body), SENT + timedelta(hours=2, minutes=5))
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
