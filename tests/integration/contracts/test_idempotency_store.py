"""IdempotencyStore contract: claim, replay, mismatch, in-flight, take-over, release, expiry."""

from __future__ import annotations

from tests.integration.contracts.backends import Backend

NOW = 1_800_000_000
DAY = 86_400


def _begin(backend: Backend, key: str, request_hash: str, now: int = NOW) -> str:
    return backend.idempotency.begin(key, request_hash, now=now, expires_at=now + DAY, in_flight_until=now + 60).state


def test_first_claim_is_new_and_then_in_progress(backend: Backend) -> None:
    assert _begin(backend, "tn_a#k1", "h1") == "new"
    assert _begin(backend, "tn_a#k1", "h1", NOW + 10) == "in_progress"


def test_completed_request_replays_its_response(backend: Backend) -> None:
    _begin(backend, "tn_a#k1", "h1")
    response = bytes(range(256)) * 1200  # opaque bytes (compressed by the service), ~300 KB
    backend.idempotency.complete("tn_a#k1", response=response, response_key=None)

    record = backend.idempotency.begin("tn_a#k1", "h1", now=NOW + 5, expires_at=NOW + DAY, in_flight_until=NOW + 65)

    assert record.state == "completed"
    assert record.response == response and record.response_key is None


def test_a_completed_request_can_point_at_its_response(backend: Backend) -> None:
    _begin(backend, "tn_a#k2", "h1")
    backend.idempotency.complete("tn_a#k2", response=None, response_key="idempotency/tn_a/abc")

    record = backend.idempotency.begin("tn_a#k2", "h1", now=NOW + 5, expires_at=NOW + DAY, in_flight_until=NOW + 65)

    assert (record.state, record.response, record.response_key) == ("completed", None, "idempotency/tn_a/abc")


def test_another_request_under_the_same_key_is_a_mismatch(backend: Backend) -> None:
    _begin(backend, "tn_a#k1", "h1")
    assert _begin(backend, "tn_a#k1", "h2") == "mismatch"  # while in flight
    backend.idempotency.complete("tn_a#k1", response=b"{}", response_key=None)
    assert _begin(backend, "tn_a#k1", "h2") == "mismatch"  # and once completed


def test_keys_are_independent(backend: Backend) -> None:
    _begin(backend, "tn_a#k1", "h1")
    assert _begin(backend, "tn_b#k1", "h1") == "new"
    assert _begin(backend, "tn_a#k2", "h1") == "new"


def test_a_stale_in_flight_claim_is_taken_over(backend: Backend) -> None:
    _begin(backend, "tn_a#k1", "h1")  # in flight until NOW + 60; that request died

    assert _begin(backend, "tn_a#k1", "h1", NOW + 60) == "in_progress"  # not yet stale
    assert _begin(backend, "tn_a#k1", "h1", NOW + 61) == "new"  # taken over, with a fresh in-flight window
    assert _begin(backend, "tn_a#k1", "h1", NOW + 100) == "in_progress"


def test_release_frees_the_key(backend: Backend) -> None:
    _begin(backend, "tn_a#k1", "h1")
    backend.idempotency.release("tn_a#k1")

    assert _begin(backend, "tn_a#k1", "h2") == "new"  # even another body: nothing was kept
    backend.idempotency.release("tn_a#never-used")  # releasing an unknown key is harmless


def test_an_expired_record_is_forgotten(backend: Backend) -> None:
    _begin(backend, "tn_a#k1", "h1")
    backend.idempotency.complete("tn_a#k1", response=b"{}", response_key=None)

    assert _begin(backend, "tn_a#k1", "h2", NOW + DAY + 1) == "new"


def test_completing_a_released_key_does_not_resurrect_it(backend: Backend) -> None:
    _begin(backend, "tn_a#k9", "h1")
    backend.idempotency.release("tn_a#k9")
    backend.idempotency.complete("tn_a#k9", response=b"{}", response_key=None)

    assert _begin(backend, "tn_a#k9", "h2") == "new"
