"""petrel.services.shaping on the in-memory TokenBuckets.

Invariants, each with the test that breaks when it does not hold:
- whatever the batches, a server never admits more than its rate x elapsed + burst, a provider bucket
  likewise, and a warming server never more than its day's cap (test_no_limit_is_ever_exceeded_...);
- each bucket is taken from once per batch, not once per message (test_one_write_per_bucket_per_batch);
- rate tokens a later stage refused go back to their bucket (test_tokens_a_later_stage_refused_...);
- a refused message gets a delay: spaced at the refusing bucket's rate, or the next UTC day for the cap.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest

from petrel.models.records import WARMUP_DAYS, ServerShaping, SmtpServer, Tenant, WarmupStep
from petrel.ports import BucketSpec, Grant, ServerStats
from petrel.services.shaping import (
    PROVIDER_RATE,
    SERVER_RATE,
    TENANT_RATE,
    WARMUP_CAP,
    Want,
    bounce_verdict,
    daily_cap,
    failure_verdict,
    probation_end,
    provider_bucket,
    record_batch,
    server_bucket,
    slow_down_provider,
    take_for_batch,
    tenant_bucket,
)
from tests.fakes.buckets import FakeTokenBuckets

CREATED = datetime(2026, 11, 1, 15, 30, tzinfo=UTC)
TODAY = date(2026, 11, 30)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
NOW_DT = datetime.fromtimestamp(NOW, UTC)
WARM = ServerShaping(warmup=())


def _tenant(tenant_id: str = "tn_a", rate: float | None = None) -> Tenant:
    return Tenant(tenant_id=tenant_id, name=tenant_id, created_at=CREATED, send_rate_per_second=rate)


def _server(
    server_id: str = "srv_1", shaping: ServerShaping = WARM, tenant_id: str = "tn_a", created_at: datetime = CREATED
) -> SmtpServer:
    return SmtpServer(
        tenant_id=tenant_id,
        server_id=server_id,
        host="mail.example",
        port=587,
        username="relay",
        secret_name="x",
        created_at=created_at,
        shaping=shaping,
    )


@pytest.mark.parametrize(
    ("age", "cap"),
    [
        (0, 500),
        (1, 1_000),
        (3, 2_000),
        (4, 5_000),
        (13, 10_000),
        (30, 100_000),
        (WARMUP_DAYS - 1, 100_000),
        (WARMUP_DAYS, None),
    ],
)
def test_the_daily_cap_follows_the_servers_age_in_utc_days(age: int, cap: int | None) -> None:
    server = _server(shaping=ServerShaping())
    assert daily_cap(server, CREATED.date() + timedelta(days=age)) == cap


def test_no_ramp_means_no_cap_and_a_ramp_is_read_in_day_order() -> None:
    assert daily_cap(_server(shaping=WARM), TODAY) is None
    ramp = ServerShaping(warmup=(WarmupStep(day=60, daily_cap=900), WarmupStep(day=2, daily_cap=50)))
    server = _server(shaping=ramp)
    assert daily_cap(server, CREATED.date()) == 50  # before its first step: the first step's cap
    assert daily_cap(server, CREATED.date() + timedelta(days=59)) == 50
    assert daily_cap(server, CREATED.date() + timedelta(days=60)) == 900  # a longer ramp runs its last day
    assert daily_cap(server, CREATED.date() + timedelta(days=61)) is None


def test_the_age_is_counted_in_utc_days_whatever_the_timestamps_zone() -> None:
    late = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    same_instant_elsewhere = late.astimezone(datetime.now(UTC).astimezone().tzinfo)
    for created in (late, same_instant_elsewhere, late.replace(tzinfo=None)):
        server = _server(shaping=ServerShaping(), created_at=created)
        assert daily_cap(server, date(2026, 11, 30)) == 1_000  # day 1 from 23:30 UTC the day before
        assert daily_cap(server, date(2026, 11, 28)) == 500  # a clock behind the record: day 0


def test_bucket_specs() -> None:
    shaping = ServerShaping(rate_per_second=20, burst=40, provider_rate_per_second=5, provider_burst=10)
    server = _server(shaping=shaping)
    assert server_bucket(server).rate == 20 and server_bucket(server).burst == 40
    slowed = provider_bucket(server, "google", 0.25)
    assert (slowed.key, slowed.rate, slowed.burst) == ("prov#tn_a#srv_1#google", 1.25, 2.5)
    assert provider_bucket(server, "google", 1 / 16).burst == 1.0  # never below one token
    assert tenant_bucket(_tenant()) is None
    bucket = tenant_bucket(_tenant(rate=0.5))
    assert bucket is not None and (bucket.key, bucket.rate, bucket.burst) == ("ten#tn_a", 0.5, 1.0)


def test_a_batch_within_every_limit_goes_at_once() -> None:
    buckets = FakeTokenBuckets()
    want = Want(_tenant(), _server(), "google", 8)
    [admission] = take_for_batch(buckets, [want], now=NOW, today=TODAY)
    assert (admission.admitted, admission.deferred, admission.delays, admission.limited_by) == (8, 0, (), None)
    assert admission.delay_seconds == 0.0


def test_one_write_per_bucket_per_batch() -> None:
    """Ten messages to two providers through a warming server with a tenant rate: one take per bucket
    (tenant, server, two providers) and one daily count, whatever the number of messages."""
    buckets = FakeTokenBuckets()
    tenant, server = _tenant(rate=100), _server(shaping=ServerShaping())
    wants = [Want(tenant, server, "google", 6), Want(tenant, server, "microsoft", 4)]
    admissions = take_for_batch(buckets, wants, now=NOW, today=TODAY)
    assert [a.admitted for a in admissions] == [6, 4]
    assert buckets.writes == 5


def test_the_server_rate_defers_the_rest_spaced_at_its_rate() -> None:
    buckets = FakeTokenBuckets()
    server = _server(shaping=ServerShaping(warmup=(), burst=4, rate_per_second=10, provider_burst=100))
    [admission] = take_for_batch(buckets, [Want(_tenant(), server, "google", 7)], now=NOW, today=TODAY)
    assert admission.admitted == 4 and admission.limited_by == SERVER_RATE
    assert admission.delays == pytest.approx((0.1, 0.2, 0.3))


def test_a_tenants_rate_is_shared_by_its_servers_and_not_by_other_tenants() -> None:
    buckets = FakeTokenBuckets()
    slow, other = _tenant(rate=5), _tenant("tn_b")
    wants = [
        Want(slow, _server("srv_1"), "google", 4),
        Want(slow, _server("srv_2"), "google", 4),
        Want(other, _server("srv_9", tenant_id="tn_b"), "google", 4),
    ]
    admissions = take_for_batch(buckets, wants, now=NOW, today=TODAY)
    assert [a.admitted for a in admissions] == [4, 1, 4]
    assert admissions[1].limited_by == TENANT_RATE and admissions[1].delays == pytest.approx((0.2, 0.4, 0.6))


def test_tokens_a_later_stage_refused_go_back_to_the_earlier_buckets() -> None:
    buckets = FakeTokenBuckets()
    tenant = _tenant(rate=100)
    server = _server(shaping=ServerShaping(warmup=(), burst=40, provider_burst=10))
    [admission] = take_for_batch(buckets, [Want(tenant, server, "google", 30)], now=NOW, today=TODAY)
    assert admission.admitted == 10 and admission.limited_by == PROVIDER_RATE
    # the server and the tenant gave 30 but only 10 went: each holds all but those 10
    assert buckets.take(server_bucket(server), 100, now=NOW).granted == 30
    bucket = tenant_bucket(tenant)
    assert bucket is not None and buckets.take(bucket, 1000, now=NOW).granted == 90


def test_the_warmup_cap_holds_across_a_day_boundary_and_the_next_day_starts_afresh() -> None:
    buckets = FakeTokenBuckets()
    ramp = ServerShaping(
        warmup=(WarmupStep(day=0, daily_cap=5), WarmupStep(day=1, daily_cap=8)), burst=100, provider_burst=100
    )
    server = _server(shaping=ramp, created_at=datetime(2026, 11, 30, 8, tzinfo=UTC))
    before_midnight = datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC).timestamp()
    [first] = take_for_batch(buckets, [Want(_tenant(), server, "x.example", 4)], now=before_midnight, today=TODAY)
    [second] = take_for_batch(buckets, [Want(_tenant(), server, "x.example", 4)], now=before_midnight, today=TODAY)
    assert (first.admitted, second.admitted) == (4, 1)
    assert second.limited_by == WARMUP_CAP and second.delays == (10.0, 10.0, 10.0)  # until 00:00 UTC
    # what the cap refused was given back to the rate buckets: only the 5 admitted were spent
    assert buckets.take(server_bucket(server), 1000, now=before_midnight).granted == 95

    after_midnight = before_midnight + 20
    tomorrow = TODAY + timedelta(days=1)
    [third] = take_for_batch(buckets, [Want(_tenant(), server, "y.example", 12)], now=after_midnight, today=tomorrow)
    assert third.admitted == 8 and third.limited_by == WARMUP_CAP  # a new day, day 1's cap


def test_a_slowed_provider_gets_a_smaller_bucket_then_recovers() -> None:
    buckets = FakeTokenBuckets()
    server = _server(shaping=ServerShaping(warmup=(), provider_burst=8, provider_rate_per_second=4))
    assert slow_down_provider(buckets, server, "yahoo", now=NOW, seconds=60) == 0.5
    [slowed, other] = take_for_batch(
        buckets, [Want(_tenant(), server, "yahoo", 8), Want(_tenant(), server, "google", 8)], now=NOW, today=TODAY
    )
    assert (slowed.admitted, other.admitted) == (4, 8)  # only that provider, burst 8 x 0.5
    assert slowed.delays[0] == pytest.approx(0.5)  # its rate halved too: 2/s
    later = NOW + 120  # held 60 s, then doubled back after another 60 s
    [recovered] = take_for_batch(buckets, [Want(_tenant(), server, "yahoo", 8)], now=later, today=TODAY)
    assert recovered.admitted == 8


class FailingBuckets(FakeTokenBuckets):
    """The store fails on its `fail_at`-th take (numbered from 1), then works again."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at, self.takes = fail_at, 0

    def take(self, bucket: BucketSpec, wanted: int, *, now: float) -> Grant:
        self.takes += 1
        if self.takes == self.fail_at:
            raise ConnectionError("store unreachable")
        return super().take(bucket, wanted, now=now)


@pytest.mark.parametrize("fail_at", [2, 3, 4])
def test_a_stage_that_fails_gives_back_every_token_taken_however_often_it_fails(fail_at: int) -> None:
    """The store fails at the server, the first or the second provider stage, twice in a row at the same
    step: each time the batch raises, and the buckets end exactly as they were before it."""
    buckets = FailingBuckets(fail_at)
    tenant, server = _tenant(rate=50), _server(shaping=ServerShaping(warmup=(), burst=40, provider_burst=10))
    wants = [Want(tenant, server, "google", 6), Want(tenant, server, "microsoft", 3)]
    for _ in range(2):
        buckets.takes = 0
        with pytest.raises(ConnectionError):
            take_for_batch(buckets, wants, now=NOW, today=TODAY)
    # nothing was spent: every bucket it touched is full again (its tat not after now)
    assert buckets.tats and all(tat <= round(NOW * 1_000_000) for tat in buckets.tats.values())
    [first, second] = take_for_batch(buckets, wants, now=NOW, today=TODAY)  # and the store works again
    assert (first.admitted, second.admitted) == (6, 3)


def test_nothing_wanted_takes_nothing() -> None:
    buckets = FakeTokenBuckets()
    [admission] = take_for_batch(buckets, [Want(_tenant(), _server(), "google", 0)], now=NOW, today=TODAY)
    assert admission.admitted == 0 and admission.deferred == 0 and buckets.writes == 0


def test_no_limit_is_ever_exceeded_whatever_the_batches() -> None:
    """Random batches from two tenants over three servers and three providers for 30 simulated seconds:
    per server and per server x provider, admitted never passes rate x elapsed + burst; per day, never
    the cap; and everything that was deferred had a delay."""
    rng = random.Random(11)
    tenants = [_tenant("tn_a", rate=30), _tenant("tn_b")]
    warm = ServerShaping(rate_per_second=12, burst=6, provider_rate_per_second=5, provider_burst=3, warmup=())
    warming = warm.model_copy(update={"warmup": (WarmupStep(day=0, daily_cap=100),)})
    servers = {
        t.tenant_id: [_server("srv_0", warm, t.tenant_id, NOW_DT), _server("srv_1", warming, t.tenant_id, NOW_DT)]
        for t in tenants
    }
    providers = ["google", "microsoft", "small.example"]
    buckets = FakeTokenBuckets()
    admitted: dict[str, int] = defaultdict(int)
    now = NOW
    for _ in range(600):
        now += rng.uniform(0, 0.1)
        wants = []
        for _ in range(rng.randint(1, 4)):
            tenant = rng.choice(tenants)
            wants.append(Want(tenant, rng.choice(servers[tenant.tenant_id]), rng.choice(providers), rng.randint(0, 6)))
        for admission in take_for_batch(buckets, wants, now=now, today=TODAY):
            want = admission.want
            assert 0 <= admission.admitted <= want.count and len(admission.delays) == admission.deferred
            assert all(d > 0 for d in admission.delays)
            admitted[f"srv {want.server.tenant_id} {want.server.server_id}"] += admission.admitted
            admitted[f"prov {want.server.tenant_id} {want.server.server_id} {want.provider}"] += admission.admitted
            admitted[f"ten {want.tenant.tenant_id}"] += admission.admitted
    elapsed = now - NOW
    for key, count in admitted.items():
        if key.startswith("srv"):
            assert count <= (12 * elapsed + 6 if key.endswith("srv_0") else 100), key
        elif key.startswith("prov"):
            assert count <= 5 * elapsed + 3, key
        elif key == "ten tn_a":
            assert count <= 30 * elapsed + 30
    assert admitted["srv tn_b srv_0"] >= 0.9 * (12 * elapsed)  # the limits bound, and were reached
    assert admitted["srv tn_b srv_1"] == 100


def test_a_bounce_rate_over_the_threshold_pauses_only_with_enough_sends() -> None:
    server = _server(shaping=ServerShaping(bounce_min_sends=50, bounce_threshold=0.10))
    assert bounce_verdict(server, ServerStats(49, 49, 0)) is None  # too few sends to judge
    assert bounce_verdict(server, ServerStats(50, 4, 0)) is None
    assert bounce_verdict(server, ServerStats(50, 5, 0)) == "bounce rate 10.0% over the last 50 sends (threshold 10.0%)"


def test_consecutive_connection_failures_pause_at_the_threshold() -> None:
    server = _server(shaping=ServerShaping(failure_threshold=5))
    assert failure_verdict(server, ServerStats(0, 0, 4)) is None
    assert failure_verdict(server, ServerStats(0, 0, 5)) == "5 consecutive connection failures (threshold 5)"


def test_recorded_batches_pause_a_failing_server_and_an_answer_clears_the_run() -> None:
    buckets = FakeTokenBuckets()
    server = _server(shaping=ServerShaping(failure_threshold=3, bounce_window=20, bounce_min_sends=10))
    assert record_batch(buckets, server, sends=0, bounces=0, failures=2)[1] is None
    stats, verdict = record_batch(buckets, server, sends=0, bounces=0, failures=1)
    assert stats.consecutive_failures == 3 and verdict == "3 consecutive connection failures (threshold 3)"
    assert record_batch(buckets, server, sends=4, bounces=0, failures=0) == (ServerStats(4, 0, 0), None)
    stats, verdict = record_batch(buckets, server, sends=8, bounces=2, failures=0)
    assert stats == ServerStats(12, 2, 0) and verdict is not None and verdict.startswith("bounce rate 16.7%")
    assert buckets.writes == 4  # one write per batch


def test_probation_ends_after_the_servers_minutes() -> None:
    server = _server(shaping=ServerShaping(probation_minutes=90))
    assert probation_end(server, NOW_DT) == NOW_DT + timedelta(minutes=90)
