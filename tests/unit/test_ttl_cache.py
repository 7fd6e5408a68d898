"""petrel.services.deliver.TtlCache: hits within the TTL, reloads after it, forgets what expired."""

from __future__ import annotations

from petrel.services.deliver import TtlCache


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_hit_within_ttl_and_reload_after() -> None:
    tick = Ticker()
    cache: TtlCache[str, int] = TtlCache(10, tick)
    loads: list[str] = []

    def load(key: str, value: int) -> int:
        loads.append(key)
        return value

    assert cache.get("a", lambda: load("a", 1)) == 1
    tick.now = 9.9
    assert cache.get("a", lambda: load("a", 2)) == 1
    tick.now = 10.1
    assert cache.get("a", lambda: load("a", 3)) == 3
    assert loads == ["a", "a"]


def test_expired_entries_are_dropped_on_the_next_load() -> None:
    tick = Ticker()
    cache: TtlCache[str, bytes] = TtlCache(5, tick)
    cache.get("body-1", lambda: b"x" * 100)
    tick.now = 6
    cache.get("body-2", lambda: b"y")
    assert list(cache._items) == ["body-2"]


def test_forget_forces_a_reload() -> None:
    cache: TtlCache[str, int] = TtlCache(60, Ticker())
    cache.get("k", lambda: 1)
    cache.forget("k")
    assert cache.get("k", lambda: 2) == 2
