"""The arithmetic of traffic shaping's shared state, with no I/O: the DynamoDB adapter
(petrel.adapters.buckets) and the in-memory fake apply the same rules, so they agree to the microsecond.

A rate bucket is GCRA: its state is one number, `tat` (the bucket's "theoretical arrival time", in
integer microseconds since the epoch). A bucket of rate r and burst b holds, at `now`,
(now + tau - max(tat, now)) / I tokens (I = 1/r, tau = b*I); taking n moves tat to max(tat, now) + n*I.
Integers keep DynamoDB's arithmetic and ours identical; rounding is always against the taker (an
increment rounds up), so a rounding error can only refuse a token, never mint one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from petrel.ports import BucketSpec, ServerStats

MICROS = 1_000_000
IDLE_EXPIRY_SECONDS = 7 * 86_400  # a bucket untouched this long may be deleted (it would be full again)
DAILY_EXPIRY_DAYS = 3  # a day's counter stays this long after its day ends


def micros(seconds: float) -> int:
    return round(seconds * MICROS)


@dataclass(frozen=True)
class Gcra:
    """A bucket's rate and burst in integer microseconds."""

    interval: float  # microseconds per token
    tau: int  # microseconds of credit: the burst

    @classmethod
    def of(cls, bucket: BucketSpec) -> Gcra:
        if bucket.rate <= 0 or bucket.burst < 1:
            raise ValueError(f"bucket {bucket.key}: rate must be > 0 and burst >= 1")
        interval = MICROS / bucket.rate
        return cls(interval, math.ceil(bucket.burst * interval - 1e-6))

    def cost(self, tokens: int) -> int:
        """The tat increment of `tokens` (rounded up: against the taker)."""
        return math.ceil(tokens * self.interval - 1e-6)

    def available(self, tat: int | None, now: int) -> int:
        """Tokens the bucket holds at `now` when its tat is `tat` (None: no item, a full bucket)."""
        base = now if tat is None else max(tat, now)
        room = now + self.tau - base
        n = max(0, int(room // self.interval))
        while n > 0 and self.cost(n) > room:
            n -= 1
        while self.cost(n + 1) <= room:
            n += 1
        return n

    def wait(self, tat: int | None, now: int) -> float:
        """Seconds from `now` until the bucket holds one token."""
        if tat is None:
            return 0.0
        return max(0, tat + self.cost(1) - self.tau - now) / MICROS

    def returned(self, tat: int | None, count: int, now: int) -> int | None:
        """tat after `count` tokens are given back at `now`: never below `now` (a full bucket)."""
        if tat is None or tat <= now:
            return tat
        return max(now, tat - self.cost(count))


def slowed_level(level: int, hold: int, step: int, now: int) -> int:
    """The halvings in force at `now`: all `level` until `hold`, then one fewer each `step`."""
    if level <= 0 or now < hold:
        return max(0, level)
    return max(0, level - ((now - hold) // max(step, 1) + 1))


@dataclass(frozen=True)
class Window:
    """A server's outcome window (two half-windows) and failure run, with a version for conditional
    writes (TokenBuckets.record_outcomes)."""

    cur_sends: int = 0
    cur_bounces: int = 0
    prev_sends: int = 0
    prev_bounces: int = 0
    failures: int = 0
    version: int = 0

    def stats(self) -> ServerStats:
        return ServerStats(self.cur_sends + self.prev_sends, self.cur_bounces + self.prev_bounces, self.failures)

    def after(self, sends: int, bounces: int, failures: int, window: int) -> Window:
        """This window with one batch added (the rules of TokenBuckets.record_outcomes)."""
        cur_sends, cur_bounces = self.cur_sends + sends, self.cur_bounces + bounces
        prev_sends, prev_bounces = self.prev_sends, self.prev_bounces
        if cur_sends >= half_window(window):  # the newer half is full: it becomes the older one
            prev_sends, prev_bounces, cur_sends, cur_bounces = cur_sends, cur_bounces, 0, 0
        run = failures if sends > 0 else self.failures + failures
        return Window(cur_sends, cur_bounces, prev_sends, prev_bounces, run, self.version + 1)


def half_window(window: int) -> int:
    return max(1, window // 2)


def check_outcomes(sends: int, bounces: int, failures: int, window: int) -> None:
    """Refuse a batch that cannot be (a programming error, not a state)."""
    if sends < 0 or failures < 0 or not 0 <= bounces <= sends or window < 2:
        raise ValueError("record_outcomes: need 0 <= bounces <= sends, failures >= 0, window >= 2")


def daily_expiry(day: str) -> int:
    """Epoch seconds a few days after the UTC `day` ends."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    return int((start + timedelta(days=1 + DAILY_EXPIRY_DAYS)).timestamp())
