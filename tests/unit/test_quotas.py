"""A tenant's recipient quotas (petrel.services.quotas) through the API app on the fakes.

Invariants: a window never accepts more recipients than its quota; a refusal (429 with Retry-After,
or any other problem) stores nothing and counts nothing; an email that counted and then could not be
stored gives its units back; a replayed Idempotency-Key counts nothing again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from petrel.errors import InvalidRequest, QuotaExceeded
from petrel.models.records import Tenant
from petrel.services import quotas
from tests.fakes import FakeWorld, Seeded
from tests.unit.api_fakes import Api, event


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


@pytest.fixture
def api(world: FakeWorld) -> Api:
    return Api(world)


def _limit(world: FakeWorld, seeded: Seeded, **quota: int | None) -> Tenant:
    tenant = seeded.tenant.model_copy(update=quota)
    world.tenants.put_tenant(tenant)
    return tenant


def _email(*recipients: str, **fields: Any) -> dict[str, Any]:
    return {"from": "jane@example.com", "to": list(recipients), "subject": "Hi", "text": "Hello", **fields}


def _send(api: Api, seeded: Seeded, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    return api(event("POST", "/v1/emails", body, tenant_id=seeded.tenant.tenant_id, headers=headers))


def _stored(world: FakeWorld) -> int:
    return len(world.messages.messages)


def _counted(world: FakeWorld, seeded: Seeded) -> dict[str, int]:
    return {window: n for (tenant, window), n in world.tenants.quotas.items() if tenant == seeded.tenant.tenant_id}


def test_exactly_the_daily_quota_passes_then_429_until_the_next_utc_day(
    world: FakeWorld, seeded: Seeded, api: Api
) -> None:
    _limit(world, seeded, daily_quota=3)
    assert _send(api, seeded, _email("a@example.org", "b@example.org"))["statusCode"] == 202
    assert _send(api, seeded, _email("c@example.org"))["statusCode"] == 202  # 3 of 3

    refused = _send(api, seeded, _email("d@example.org"))

    midnight = datetime(2026, 1, 16, tzinfo=UTC)
    wait = int((midnight - world.clock.now()).total_seconds())
    problem = json.loads(refused["body"])
    assert refused["statusCode"] == 429 and refused["headers"]["Retry-After"] == str(wait)
    assert problem["type"] == "urn:petrel:problem:quota-exceeded" and problem["retry_after"] == wait
    assert (problem["quota"], problem["limit"]) == ("daily_quota", 3)
    assert _stored(world) == 3 and len(world.queue.sent["transactional"]) == 3  # nothing of the refused one
    assert _counted(world, seeded) == {"day#2026-01-15": 3}

    world.clock.set(midnight)  # the next window
    assert _send(api, seeded, _email("d@example.org"))["statusCode"] == 202
    assert _counted(world, seeded) == {"day#2026-01-15": 3, "day#2026-01-16": 1}


def test_the_per_second_quota_refuses_within_the_second_and_passes_in_the_next(
    world: FakeWorld, seeded: Seeded, api: Api
) -> None:
    _limit(world, seeded, per_second_quota=3)
    world.clock.advance(0.25)  # within a second: Retry-After rounds the rest of it up
    assert _send(api, seeded, _email("a@example.org", "b@example.org"))["statusCode"] == 202

    refused = _send(api, seeded, _email("c@example.org", "d@example.org"))  # 2 more: 4 > 3

    assert refused["statusCode"] == 429 and refused["headers"]["Retry-After"] == "1"
    assert json.loads(refused["body"])["quota"] == "per_second_quota"
    assert _stored(world) == 2
    world.clock.advance(1)
    assert _send(api, seeded, _email("c@example.org", "d@example.org"))["statusCode"] == 202
    assert _stored(world) == 4


def test_a_full_daily_window_gives_back_the_per_second_units_it_took(
    world: FakeWorld, seeded: Seeded, api: Api
) -> None:
    _limit(world, seeded, per_second_quota=10, daily_quota=1)
    assert _send(api, seeded, _email("a@example.org"))["statusCode"] == 202

    assert _send(api, seeded, _email("b@example.org"))["statusCode"] == 429

    second = f"sec#{world.clock.timestamp()}"
    assert _counted(world, seeded) == {second: 1, "day#2026-01-15": 1}  # the refused email's unit returned


def test_a_batch_counts_each_email_alone(world: FakeWorld, seeded: Seeded, api: Api) -> None:
    _limit(world, seeded, daily_quota=3)
    emails = [_email("a@example.org", "b@example.org"), _email("c@example.org", "d@example.org"), _email("e@x.org")]

    result = api(event("POST", "/v1/emails/batch", {"emails": emails}, tenant_id=seeded.tenant.tenant_id))

    body = json.loads(result["body"])
    assert result["statusCode"] == 202
    assert [r["status"] for r in body["results"]] == [202, 429, 202]  # the third still fits
    assert body["results"][1]["error"]["retry_after"] > 0
    assert _stored(world) == 3 and _counted(world, seeded) == {"day#2026-01-15": 3}


def test_a_batch_refused_whole_by_quotas_is_a_429_with_the_soonest_retry(
    world: FakeWorld, seeded: Seeded, api: Api
) -> None:
    _limit(world, seeded, daily_quota=1)
    assert _send(api, seeded, _email("a@example.org"))["statusCode"] == 202
    emails = [_email("b@example.org"), _email("c@example.org")]

    result = api(event("POST", "/v1/emails/batch", {"emails": emails}, tenant_id=seeded.tenant.tenant_id))

    assert result["statusCode"] == 429 and int(result["headers"]["Retry-After"]) > 0
    assert json.loads(result["body"])["type"] == "urn:petrel:problem:quota-exceeded"
    assert _stored(world) == 1


def test_an_email_larger_than_a_quota_is_a_422_not_a_wait(world: FakeWorld, seeded: Seeded, api: Api) -> None:
    _limit(world, seeded, per_second_quota=2)

    result = _send(api, seeded, _email("a@example.org", "b@example.org", "c@example.org"))

    assert result["statusCode"] == 422 and "per_second_quota is 2" in json.loads(result["body"])["detail"]
    assert _stored(world) == 0 and _counted(world, seeded) == {}


def test_an_email_refused_for_another_reason_counts_nothing(world: FakeWorld, seeded: Seeded, api: Api) -> None:
    _limit(world, seeded, daily_quota=2)

    refused = _send(api, seeded, _email("a@example.org", "b@example.org", **{"from": "jane@not-ours.example"}))

    assert refused["statusCode"] == 422 and _counted(world, seeded) == {}
    assert _send(api, seeded, _email("a@example.org", "b@example.org"))["statusCode"] == 202


def test_an_email_that_cannot_be_stored_gives_its_units_back(world: FakeWorld, seeded: Seeded, api: Api) -> None:
    _limit(world, seeded, daily_quota=2)
    store = world.messages.create_email
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("DynamoDB unavailable")
        store(*args, **kwargs)

    world.messages.create_email = failing_once  # type: ignore[method-assign]

    assert _send(api, seeded, _email("a@example.org", "b@example.org"))["statusCode"] == 500
    assert _counted(world, seeded) == {"day#2026-01-15": 0} and _stored(world) == 0
    assert _send(api, seeded, _email("a@example.org", "b@example.org"))["statusCode"] == 202  # the retry fits
    assert _counted(world, seeded) == {"day#2026-01-15": 2}


def test_an_idempotent_replay_counts_nothing_and_a_429_is_not_kept(world: FakeWorld, seeded: Seeded, api: Api) -> None:
    _limit(world, seeded, daily_quota=2)
    first = _send(api, seeded, _email("a@example.org", "b@example.org"), **{"Idempotency-Key": "k-1"})
    replay = _send(api, seeded, _email("a@example.org", "b@example.org"), **{"Idempotency-Key": "k-1"})

    assert first["statusCode"] == replay["statusCode"] == 202 and replay["headers"]["Idempotent-Replayed"] == "true"
    assert _counted(world, seeded) == {"day#2026-01-15": 2} and _stored(world) == 2

    over = _send(api, seeded, _email("c@example.org"), **{"Idempotency-Key": "k-2"})
    assert over["statusCode"] == 429 and over["headers"]["Retry-After"]  # the header survives the key's path
    world.clock.advance(days=1)
    again = _send(api, seeded, _email("c@example.org"), **{"Idempotency-Key": "k-2"})
    assert again["statusCode"] == 202 and "Idempotent-Replayed" not in again["headers"]  # ran, not replayed


def test_no_quota_means_no_counter(world: FakeWorld, seeded: Seeded, api: Api) -> None:
    assert _send(api, seeded, _email("a@example.org"))["statusCode"] == 202
    assert _counted(world, seeded) == {}


def test_windows_name_each_period_and_expire_after_it(seeded: Seeded) -> None:
    tenant = seeded.tenant.model_copy(update={"daily_quota": 10, "per_second_quota": 2})
    now = datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC)

    second, day = quotas.windows(tenant, now)

    assert (second.window, second.retry_after(now)) == (f"sec#{int(now.timestamp())}", 1)
    assert (day.window, day.retry_after(now)) == ("day#2026-03-01", 1)
    assert day.expires_at == int((now + timedelta(seconds=0.5)).timestamp()) + quotas.COUNTER_SLACK_SECONDS


def test_consume_takes_all_windows_or_none(world: FakeWorld, seeded: Seeded) -> None:
    tenant = _limit(world, seeded, per_second_quota=5, daily_quota=5)
    now = world.clock.now()
    quotas.consume(world.tenants, tenant, 4, now)

    with pytest.raises(QuotaExceeded):
        quotas.consume(world.tenants, tenant, 2, now + timedelta(seconds=1))  # a new second, a full day
    with pytest.raises(InvalidRequest):
        quotas.consume(world.tenants, tenant, 6, now)

    assert _counted(world, seeded) == {
        f"sec#{int(now.timestamp())}": 4,
        f"sec#{int(now.timestamp()) + 1}": 0,
        "day#2026-01-15": 4,
    }
