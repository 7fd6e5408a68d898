"""The retry ladder: delays, jitter, the server's own delay, the maximum age; and the ladder as a setting."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from petrel import resources as r
from petrel.models.retry import DEFAULT_DELAYS, RetryLadder, parse_delays, schedule_name
from petrel.settings import SendWorkerSettings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_default_ladder_is_the_published_one() -> None:
    assert DEFAULT_DELAYS == (60, 300, 900, 3600, 7200, 14400, 28800)


@pytest.mark.parametrize(
    ("failures", "step"),
    [(1, 60), (2, 300), (3, 900), (4, 3600), (5, 7200), (6, 14400), (7, 28800), (8, 28800), (30, 28800)],
)
def test_each_failure_waits_its_step_within_ten_percent(failures: int, step: int) -> None:
    ladder = RetryLadder()
    rng = random.Random(failures)
    delays = [ladder.delay(failures, None, rng) for _ in range(500)]

    assert all(step * 0.9 <= d <= step * 1.1 for d in delays)
    assert max(delays) - min(delays) > step * 0.15  # the jitter spreads retries out


def test_a_longer_delay_asked_by_the_server_wins_and_a_shorter_one_does_not() -> None:
    ladder = RetryLadder(jitter=0)
    rng = random.Random(1)

    assert ladder.delay(1, 600, rng) == 600
    assert ladder.delay(2, 30, rng) == 300


def test_the_next_attempt_is_none_once_past_the_maximum_age() -> None:
    ladder = RetryLadder(jitter=0)
    expires = NOW + timedelta(minutes=30)
    rng = random.Random(1)

    assert ladder.next_attempt(failures=2, retry_after=None, now=NOW, expires=expires, rng=rng) == NOW + timedelta(
        minutes=5
    )
    assert ladder.next_attempt(failures=4, retry_after=None, now=NOW, expires=expires, rng=rng) is None
    assert ladder.next_attempt(failures=1, retry_after=3600, now=NOW, expires=expires, rng=rng) is None


def test_a_message_tried_along_the_whole_ladder_expires_after_its_maximum_age() -> None:
    """1 m, 5 m, 15 m, 1 h, 2 h, 4 h, 8 h, 8 h ... fits 9 attempts before 24 h."""
    ladder = RetryLadder(jitter=0)
    created = now = NOW
    attempts = 1
    while True:
        due = ladder.next_attempt(
            failures=attempts, retry_after=None, now=now, expires=created + timedelta(hours=24), rng=random.Random()
        )
        if due is None:
            break
        now, attempts = due, attempts + 1

    assert attempts == 9
    assert now - created == timedelta(seconds=60 + 300 + 900 + 3600 + 7200 + 14400 + 28800 + 28800)


def test_schedules_are_named_by_message_and_attempt() -> None:
    assert schedule_name("msg_01ABC", 3) == "msg_01ABC-3"


def _worker_environment() -> dict[str, str]:
    """What a send worker needs besides its ladder, by the names infra sets (petrel.resources)."""
    account, region = "123456789012", "us-east-1"
    environment = {spec.env_var: f"petrel-test-{spec.name}" for spec in r.TABLES}
    for queue in r.QUEUES:
        assert queue.arn_env_var is not None
        environment[queue.arn_env_var] = f"arn:aws:sqs:{region}:{account}:{queue.name}"
        environment[queue.env_var] = f"https://sqs.{region}.amazonaws.com/{account}/{queue.name}"
    environment.update(
        {
            r.BODIES_BUCKET_ENV: "b",
            r.SECRETS_PREFIX_ENV: "p/tenants/",
            r.SCHEDULES.group_env_var: "g",
            r.SCHEDULES.role_env_var: f"arn:aws:iam::{account}:role/r",
            r.SCHEDULES.dlq_arn_env_var: f"arn:aws:sqs:{region}:{account}:d",
        }
    )
    return environment


def test_the_ladder_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _worker_environment().items():
        monkeypatch.setenv(name, value)
    for name in (r.RETRY_DELAYS_ENV, r.RETRY_JITTER_ENV):  # a local stack started earlier sets them
        monkeypatch.delenv(name, raising=False)

    assert SendWorkerSettings.from_env().ladder() == RetryLadder()

    monkeypatch.setenv(r.RETRY_DELAYS_ENV, "2, 4,8")
    monkeypatch.setenv(r.RETRY_JITTER_ENV, "0")
    assert SendWorkerSettings.from_env().ladder() == RetryLadder(delays=(2, 4, 8), jitter=0)

    monkeypatch.setenv(r.RETRY_DELAYS_ENV, "2,soon")
    with pytest.raises(ValueError, match="whole seconds"):
        SendWorkerSettings.from_env()


@pytest.mark.parametrize("text", ["", "0,5", "-1"])
def test_delays_must_be_positive(text: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_delays(text)
