"""TenantStore quota counters (`consume_quota`, `release_quota`): the atomic window counters behind a
tenant's daily and per-second quotas (petrel.services.quotas).

The invariant: a window never counts more than its limit, however many callers race for its last
units; units are counted only when they all fit, and given back never below zero.

The race runs the real adapter on moto with its requests applied one at a time. DynamoDB applies
each request to an item atomically; moto, serving threads, does not (two conditional adds of one
unit on a count of 4 of 5 both passed in one of 25 races in a run here), so a race on bare moto
tests moto. Serializing requests (not the adapter's steps) is DynamoDB's guarantee and no more: an
adapter that read the count and then wrote it, in two requests, still let both callers through (in
3 to 12 of 25 races in runs here), so the race does test the adapter.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from petrel import resources
from petrel.adapters.dynamodb import DynamoTenantStore
from petrel.ports import TenantStore
from tests.integration.contracts.backends import Backend
from tests.support_moto import AtomicRequests

EXPIRES = 2_000_000_000


def _consume(store: TenantStore, window: str, units: int, limit: int, tenant_id: str = "tn_a") -> bool:
    return store.consume_quota(tenant_id, window, units, limit=limit, expires_at=EXPIRES)


def test_units_are_counted_up_to_the_limit_and_not_past_it(backend: Backend) -> None:
    store = backend.tenants

    assert _consume(store, "day#2026-01-15", 3, 5)
    assert _consume(store, "day#2026-01-15", 2, 5)  # exactly the limit
    assert not _consume(store, "day#2026-01-15", 1, 5)  # one more does not fit: nothing counted
    assert _consume(store, "day#2026-01-16", 5, 5)  # another window starts at zero
    assert _consume(store, "day#2026-01-15", 1, 5, tenant_id="tn_b")  # another tenant's counter


def test_a_refused_consumption_counts_nothing(backend: Backend) -> None:
    store = backend.tenants
    assert _consume(store, "sec#1", 4, 5)

    assert not _consume(store, "sec#1", 2, 5)  # 4 + 2 > 5: refused whole, not partly counted

    assert _consume(store, "sec#1", 1, 5)  # the 1 unit left is still there


def test_more_units_than_the_limit_never_fit_even_in_a_new_window(backend: Backend) -> None:
    assert not _consume(backend.tenants, "day#2026-01-15", 6, 5)
    assert _consume(backend.tenants, "day#2026-01-15", 5, 5)  # and nothing was counted by the refusal


def test_released_units_can_be_taken_again_but_a_counter_never_goes_below_zero(backend: Backend) -> None:
    store = backend.tenants
    assert _consume(store, "day#2026-01-15", 5, 5)

    store.release_quota("tn_a", "day#2026-01-15", 2)
    assert _consume(store, "day#2026-01-15", 2, 5)
    assert not _consume(store, "day#2026-01-15", 1, 5)

    store.release_quota("tn_a", "day#2026-01-15", 50)  # more than counted: refused, nothing changes
    store.release_quota("tn_a", "day#2026-01-20", 1)  # no counter: nothing to give back, no error
    assert not _consume(store, "day#2026-01-15", 1, 5)
    assert _consume(store, "day#2026-01-20", 5, 5)  # the release did not make a negative counter


def _racing_store(backend: Backend, request: pytest.FixtureRequest) -> TenantStore:
    """The backend's tenant store; on moto, the real adapter over a client with DynamoDB's atomicity."""
    if backend.kind == "fake":
        return backend.tenants
    client = request.getfixturevalue("aws_clients")["dynamodb"]
    table = resources.physical_name("petrel-test", resources.TENANTS.name)  # as moto_backend provisioned it
    return DynamoTenantStore(AtomicRequests(client), table)  # type: ignore[arg-type]


def test_concurrent_callers_at_the_limit_never_both_take_the_last_units(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    """Two API instances racing for the last slot of a window, many times over: exactly one wins each
    race (one conditional add each; the loser's condition sees the winner's count)."""
    store = _racing_store(backend, request)
    rounds = 25
    for round_ in range(rounds):
        window = f"sec#{round_}"
        assert _consume(store, window, 4, 5)  # one slot left
        start = threading.Barrier(2)

        def take(window: str = window, start: threading.Barrier = start) -> bool:
            start.wait()
            return _consume(store, window, 1, 5)

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda _: take(), range(2)))

        assert sorted(results) == [False, True], f"round {round_}: {results}"
        assert not _consume(store, window, 1, 5)
