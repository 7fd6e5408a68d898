"""TokenBuckets (petrel.adapters.buckets, tests/fakes/buckets.py): the rate buckets, daily counters,
slow-downs and server outcome windows that traffic shaping shares between workers.

Invariants, each broken by the test named:
- a bucket never grants more than rate x elapsed + burst, whatever the concurrency
  (test_concurrent_takers_never_exceed_the_rate_and_sustain_it), and no token is spent twice nor lost
  (test_concurrent_takers_spend_each_token_exactly_once);
- a take grants what the bucket holds and no more, partly when it holds fewer than wanted, and says
  how long until the next token (test_a_bucket_grants_its_burst_then_refills_at_its_rate, ...);
- giving back never makes a bucket hold more than its burst (test_giving_back_...);
- a day's counter never passes its cap, also under concurrency, and the next UTC day starts at zero;
- a slowed bucket's factor halves (to 1/16 at most), holds, then doubles back step by step;
- the outcome window drops its older half when the newer fills; the failure run resets on an answer.

The races run the real adapter on moto with requests applied one at a time, as DynamoDB applies each
(see test_quota_counters.py: moto's own threads do not apply a conditional update atomically).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from petrel import resources
from petrel.adapters.buckets import DynamoTokenBuckets
from petrel.ports import MAX_SLOW_DOWN_HALVINGS, BucketSpec, Grant, ServerStats, TokenBuckets
from tests.fakes.buckets import FakeTokenBuckets
from tests.integration.contracts.backends import Backend
from tests.support_moto import AtomicRequests

T0 = 1_764_460_800.0  # 2025-11-30T00:00:00Z: explicit times, no sleeping
BUCKET = BucketSpec("srv#tn_a#srv_1", rate=4.0, burst=10)


@pytest.fixture
def make_buckets(backend: Backend, request: pytest.FixtureRequest) -> Callable[[], TokenBuckets]:
    """New TokenBuckets instances on one shared state (a worker each): one fake, or adapters on the
    same moto table, each with its own caches."""
    if backend.kind == "fake":
        fake = FakeTokenBuckets()
        return lambda: fake
    client = AtomicRequests(request.getfixturevalue("aws_clients")["dynamodb"])
    table = resources.physical_name("petrel-test", resources.BUCKETS.name)  # as moto_backend provisioned it
    return lambda: DynamoTokenBuckets(client, table)  # type: ignore[arg-type]


@pytest.fixture
def buckets(make_buckets: Callable[[], TokenBuckets]) -> TokenBuckets:
    return make_buckets()


def test_a_bucket_grants_its_burst_then_refills_at_its_rate(buckets: TokenBuckets) -> None:
    assert buckets.take(BUCKET, 12, now=T0) == Grant(10, 0.25)  # all it holds; the next in 1/rate
    assert buckets.take(BUCKET, 1, now=T0) == Grant(0, 0.25)
    assert buckets.take(BUCKET, 5, now=T0 + 0.5) == Grant(2, 0.25)  # 4/s for half a second
    assert buckets.take(BUCKET, 1, now=T0 + 0.6) == Grant(0, 0.15)
    assert buckets.take(BUCKET, 50, now=T0 + 100) == Grant(10, 0.25)  # idle: full, never more than burst


def test_a_take_within_what_the_bucket_holds_is_granted_whole(buckets: TokenBuckets) -> None:
    assert buckets.take(BUCKET, 7, now=T0) == Grant(7, 0.0)
    assert buckets.take(BUCKET, 3, now=T0) == Grant(3, 0.0)
    assert buckets.take(BUCKET, 3, now=T0 + 0.25) == Grant(1, 0.25)


def test_buckets_are_independent(buckets: TokenBuckets) -> None:
    other = BucketSpec("prov#tn_a#srv_1#google", rate=4.0, burst=10)
    assert buckets.take(BUCKET, 10, now=T0).granted == 10
    assert buckets.take(other, 10, now=T0).granted == 10


def test_giving_back_returns_tokens_but_never_more_than_the_burst(buckets: TokenBuckets) -> None:
    assert buckets.take(BUCKET, 10, now=T0).granted == 10
    buckets.give_back(BUCKET, 4, now=T0)
    assert buckets.take(BUCKET, 10, now=T0) == Grant(4, 0.25)

    fresh = BucketSpec("ten#tn_b", rate=4.0, burst=10)
    assert buckets.take(fresh, 2, now=T0).granted == 2
    buckets.give_back(fresh, 5, now=T0)  # more than taken: the bucket is full, not over-full
    assert buckets.take(fresh, 20, now=T0).granted == 10
    buckets.give_back(BucketSpec("ten#never", rate=1.0, burst=1), 3, now=T0)  # nothing taken: no error


def test_tokens_given_back_after_others_took_more_count_once(make_buckets: Callable[[], TokenBuckets]) -> None:
    one, two = make_buckets(), make_buckets()  # two workers, each with its own view
    assert one.take(BUCKET, 6, now=T0).granted == 6
    assert two.take(BUCKET, 6, now=T0).granted == 4
    one.give_back(BUCKET, 3, now=T0 + 0.1)
    assert two.take(BUCKET, 10, now=T0 + 0.1).granted == 3
    assert one.take(BUCKET, 10, now=T0 + 0.1).granted == 0  # its view was stale: the condition saw through it


def test_a_days_counter_stops_at_its_cap_and_the_next_day_starts_afresh(buckets: TokenBuckets) -> None:
    assert buckets.take_daily("day#tn_a#srv_1", 3, cap=5, day="2026-11-30") == 3
    assert buckets.take_daily("day#tn_a#srv_1", 3, cap=5, day="2026-11-30") == 2  # what is left
    assert buckets.take_daily("day#tn_a#srv_1", 1, cap=5, day="2026-11-30") == 0
    assert buckets.take_daily("day#tn_a#srv_2", 5, cap=5, day="2026-11-30") == 5  # another server's
    assert buckets.take_daily("day#tn_a#srv_1", 9, cap=8, day="2026-12-01") == 8  # a new UTC day
    assert buckets.take_daily("day#tn_a#srv_1", 1, cap=8, day="2026-12-01") == 0


def test_a_raised_cap_applies_to_the_count_so_far(buckets: TokenBuckets) -> None:
    """The cap grows with the server's age: a later, higher cap admits the difference."""
    assert buckets.take_daily("day#tn_a#srv_1", 10, cap=5, day="2026-11-30") == 5
    assert buckets.take_daily("day#tn_a#srv_1", 10, cap=7, day="2026-11-30") == 2


def test_a_slowed_bucket_halves_holds_and_recovers_step_by_step(buckets: TokenBuckets) -> None:
    key = BUCKET.key
    assert buckets.factor(key, now=T0) == 1.0
    assert buckets.slow_down(key, now=T0, seconds=60) == 0.5
    assert buckets.factor(key, now=T0 + 30) == 0.5
    assert buckets.slow_down(key, now=T0 + 30, seconds=60) == 0.25  # slowed again: held from now
    assert buckets.factor(key, now=T0 + 89) == 0.25
    assert buckets.factor(key, now=T0 + 90) == 0.5  # after `seconds`, doubling back each `seconds`
    assert buckets.factor(key, now=T0 + 149) == 0.5
    assert buckets.factor(key, now=T0 + 150) == 1.0
    assert buckets.factor(key, now=T0 + 10_000) == 1.0
    assert buckets.factor("prov#tn_a#srv_1#yahoo", now=T0 + 30) == 1.0  # only that bucket


def test_a_slow_down_bottoms_out_and_starts_from_what_recovered(buckets: TokenBuckets) -> None:
    key = BUCKET.key
    for i in range(MAX_SLOW_DOWN_HALVINGS + 3):
        factor = buckets.slow_down(key, now=T0 + i, seconds=10)
    assert factor == 0.5**MAX_SLOW_DOWN_HALVINGS
    # held until T0+16, then one halving undone each 10 s: at T0+36 three are undone (1/16 -> 1/2)
    assert buckets.factor(key, now=T0 + 36) == 0.5
    assert buckets.slow_down(key, now=T0 + 36, seconds=10) == 0.25  # from the recovered 1/2
    # and the bucket's tokens are untouched by the factor (the caller scales its BucketSpec)
    assert buckets.take(BUCKET, 10, now=T0 + 36).granted == 10


def test_the_outcome_window_drops_its_older_half_when_the_newer_fills(buckets: TokenBuckets) -> None:
    key = "stat#tn_a#srv_1"
    assert buckets.record_outcomes(key, sends=3, bounces=1, failures=0, window=10) == ServerStats(3, 1, 0)
    assert buckets.record_outcomes(key, sends=3, bounces=0, failures=0, window=10) == ServerStats(6, 1, 0)
    assert buckets.record_outcomes(key, sends=2, bounces=2, failures=0, window=10) == ServerStats(8, 3, 0)
    # 2 + 3 fills the newer half (5): the first 6 sends and their bounce are dropped
    stats = buckets.record_outcomes(key, sends=3, bounces=0, failures=0, window=10)
    assert stats == ServerStats(5, 2, 0) and stats.bounce_rate == 0.4
    big = buckets.record_outcomes("stat#tn_a#srv_2", sends=12, bounces=6, failures=0, window=10)
    assert big == ServerStats(12, 6, 0)  # one batch larger than half a window: it is the older half


def test_connection_failures_run_until_the_server_answers(buckets: TokenBuckets) -> None:
    key = "stat#tn_a#srv_1"
    assert buckets.record_outcomes(key, sends=0, bounces=0, failures=2, window=10).consecutive_failures == 2
    assert buckets.record_outcomes(key, sends=0, bounces=0, failures=3, window=10).consecutive_failures == 5
    assert buckets.record_outcomes(key, sends=1, bounces=0, failures=0, window=10) == ServerStats(1, 0, 0)
    # answered, then failed: the run is what came after the last answer
    assert buckets.record_outcomes(key, sends=2, bounces=0, failures=1, window=10).consecutive_failures == 1
    with pytest.raises(ValueError):
        buckets.record_outcomes(key, sends=1, bounces=2, failures=0, window=10)


def test_concurrent_takers_spend_each_token_exactly_once(make_buckets: Callable[[], TokenBuckets]) -> None:
    """Eight workers at one instant (no refill) drain a bucket of 120: what they were granted plus what
    is left is exactly 120, several rounds over."""
    for round_ in range(3):
        bucket = BucketSpec(f"srv#tn_a#race{round_}", rate=1.0, burst=120)
        start = threading.Barrier(8)

        def drain(worker: int, bucket: BucketSpec = bucket, start: threading.Barrier = start) -> int:
            mine, buckets = 0, make_buckets()
            start.wait()
            for _ in range(60):
                mine += buckets.take(bucket, 1 + worker % 3, now=T0).granted
            return mine

        with ThreadPoolExecutor(max_workers=8) as pool:
            granted = sum(pool.map(drain, range(8)))
        left = make_buckets().take(bucket, 1_000, now=T0).granted
        assert granted + left == 120, f"round {round_}: granted {granted}, left {left}"


def test_concurrent_daily_takers_never_pass_the_cap(make_buckets: Callable[[], TokenBuckets]) -> None:
    start = threading.Barrier(8)

    def take(worker: int) -> int:
        buckets, mine = make_buckets(), 0
        start.wait()
        for _ in range(10):
            mine += buckets.take_daily("day#tn_a#race", 1 + worker % 4, cap=50, day="2026-11-30")
        return mine

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(take, range(8))) == 50


def test_concurrent_takers_never_exceed_the_rate_and_sustain_it(make_buckets: Callable[[], TokenBuckets]) -> None:
    """Eight workers that always want more, racing on real threads, each take stamped by one shared
    simulated clock that moves 2 ms per take (so the outcome does not depend on the machine's speed):
    the bucket gives at most rate x elapsed + burst, and at least 95 % of that."""
    bucket = BucketSpec("srv#tn_a#rate", rate=100.0, burst=50)
    start = threading.Barrier(8)
    lock = threading.Lock()
    clock = [T0]
    seen: list[float] = []

    def tick() -> float:
        with lock:
            clock[0] += 0.002
            seen.append(clock[0])
            return clock[0]

    def take(_: int) -> int:
        buckets, mine = make_buckets(), 0
        start.wait()
        for _ in range(100):
            mine += buckets.take(bucket, 25, now=tick()).granted
        return mine

    with ThreadPoolExecutor(max_workers=8) as pool:
        granted = sum(pool.map(take, range(8)))
    allowed = bucket.rate * (max(seen) - min(seen)) + bucket.burst
    assert granted <= allowed
    assert granted >= 0.95 * allowed, f"granted {granted} of {allowed:.0f}"


def test_a_fractional_rate_rounds_against_the_taker_only(buckets: TokenBuckets) -> None:
    """3 tokens a second (a third of a second each, not a whole microsecond): never a token early, and
    none lost over time."""
    bucket = BucketSpec("prov#tn_a#srv_1#thirds", rate=3.0, burst=10)
    assert buckets.take(bucket, 100, now=T0).granted == 10
    assert buckets.take(bucket, 100, now=T0 + 0.33).granted == 0
    assert buckets.take(bucket, 100, now=T0 + 0.34).granted == 1
    assert buckets.take(bucket, 100, now=T0 + 1.01).granted == 2  # 3 in the first 1.01 s
    assert buckets.take(bucket, 100, now=T0 + 31.01).granted == 10  # the burst, not 90
    total = sum(buckets.take(bucket, 100, now=T0 + 31.01 + i / 10).granted for i in range(1, 301))
    total += buckets.take(bucket, 100, now=T0 + 61.02).granted  # 300 roundings cost microseconds only
    assert total == 90  # 30 s at 3/s, to the token


def test_concurrent_outcome_records_lose_no_batch(make_buckets: Callable[[], TokenBuckets]) -> None:
    """Eight workers recording batches of 3 sends with 1 bounce each: with a window larger than all of
    them, every send and bounce is counted once; with a small one (rotating under the race), the window
    holds whole batches only, so its bounces are exactly a third of its sends."""
    for window, expect_all in ((10_000, True), (20, False)):
        key = f"stat#tn_a#race{window}"
        start = threading.Barrier(8)

        def record(_: int, key: str = key, window: int = window, start: threading.Barrier = start) -> None:
            buckets = make_buckets()
            start.wait()
            for _ in range(8):
                buckets.record_outcomes(key, sends=3, bounces=1, failures=0, window=window)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(record, range(8)))
        stats = make_buckets().record_outcomes(key, sends=0, bounces=0, failures=0, window=window)
        if expect_all:
            assert stats == ServerStats(192, 64, 0)
        else:
            assert 0 < stats.sends <= window + 8 * 3 and stats.sends == 3 * stats.bounces, stats
