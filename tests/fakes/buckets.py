"""In-memory TokenBuckets: the DynamoDB adapter's rules (petrel.models.buckets) on dicts under one lock,
each call applied whole as DynamoDB applies one conditional write. `writes` and `reads` count what the
adapter would have sent in its common case (one write per take that grants, per daily take, per
give-back, per slow-down and per record_outcomes; one read per factor)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from petrel.models.buckets import Gcra, Window, check_outcomes, micros, slowed_level
from petrel.ports import MAX_SLOW_DOWN_HALVINGS, BucketSpec, Grant, ServerStats


@dataclass
class _Slow:
    level: int
    hold: int
    step: int


@dataclass
class FakeTokenBuckets:
    tats: dict[str, int] = field(default_factory=dict)
    daily: dict[str, int] = field(default_factory=dict)  # "<key>#<day>" -> count
    slowed: dict[str, _Slow] = field(default_factory=dict)
    windows: dict[str, Window] = field(default_factory=dict)
    writes: int = 0
    reads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, bucket: BucketSpec, wanted: int, *, now: float) -> Grant:
        if wanted <= 0:
            return Grant(0, 0.0)
        gcra, now_us = Gcra.of(bucket), micros(now)
        with self._lock:
            tat = self.tats.get(bucket.key)
            count = min(wanted, gcra.available(tat, now_us))
            if count == 0:
                return Grant(0, max(gcra.wait(tat, now_us), 1e-6))
            self.writes += 1
            tat = max(tat if tat is not None else now_us, now_us) + gcra.cost(count)
            self.tats[bucket.key] = tat
            return Grant(count, 0.0 if count == wanted else gcra.wait(tat, now_us))

    def give_back(self, bucket: BucketSpec, count: int, *, now: float) -> None:
        if count <= 0:
            return
        gcra, now_us = Gcra.of(bucket), micros(now)
        with self._lock:
            tat = self.tats.get(bucket.key)
            returned = gcra.returned(tat, count, now_us)
            if returned is not None and returned != tat:
                self.writes += 1
                self.tats[bucket.key] = returned

    def take_daily(self, key: str, wanted: int, *, cap: int, day: str) -> int:
        if wanted <= 0:
            return 0
        with self._lock:
            counted = self.daily.get(f"{key}#{day}", 0)
            count = max(0, min(wanted, cap - counted))
            if count:
                self.writes += 1
                self.daily[f"{key}#{day}"] = counted + count
            return count

    def slow_down(self, key: str, *, now: float, seconds: float) -> float:
        now_us, step = micros(now), max(1, micros(seconds))
        with self._lock:
            self.reads += 1
            self.writes += 1
            level = min(self._level(key, now_us) + 1, MAX_SLOW_DOWN_HALVINGS)
            self.slowed[key] = _Slow(level, now_us + step, step)
            return 0.5**level

    def factor(self, key: str, *, now: float) -> float:
        with self._lock:
            self.reads += 1
            return 0.5 ** self._level(key, micros(now))

    def _level(self, key: str, now: int) -> int:
        slow = self.slowed.get(key)
        return 0 if slow is None else slowed_level(slow.level, slow.hold, slow.step, now)

    def record_outcomes(self, key: str, *, sends: int, bounces: int, failures: int, window: int) -> ServerStats:
        check_outcomes(sends, bounces, failures, window)
        with self._lock:
            self.writes += 1
            new = self.windows.get(key, Window()).after(sends, bounces, failures, window)
            self.windows[key] = new
            return new.stats()
