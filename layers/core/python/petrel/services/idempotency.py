"""`Idempotency-Key`: the same key and body replay the first response for 24 hours, per tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from petrel.errors import IdempotencyConflict, IdempotencyInFlight, InvalidRequest
from petrel.ports import Clock, IdempotencyStore

KEEP_SECONDS = 24 * 3600
IN_FLIGHT_SECONDS = 60  # a claim older than this belongs to a request that died; it may be taken over


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: str


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def run_idempotent(
    store: IdempotencyStore,
    clock: Clock,
    *,
    tenant_id: str,
    key: str,
    fingerprint: str,
    call: Callable[[], StoredResponse],
) -> StoredResponse:
    """Run `call` once per (tenant, key); replay its response, or refuse a conflicting reuse."""
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1-255 printable characters")
    scoped = f"{tenant_id}#{key}"
    now = int(clock.now().timestamp())
    claim = store.begin(
        scoped, fingerprint, now=now, expires_at=now + KEEP_SECONDS, in_flight_until=now + IN_FLIGHT_SECONDS
    )
    if claim.state == "mismatch":
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request body")
    if claim.state == "in_progress":
        raise IdempotencyInFlight("a request with this Idempotency-Key is still in progress; retry shortly")
    if claim.state == "completed":
        return StoredResponse(status_code=claim.status_code or 200, body=claim.body or "")
    try:
        response = call()
    except BaseException:
        store.release(scoped)
        raise
    if response.status_code >= 500:
        store.release(scoped)
    else:
        store.complete(scoped, response.status_code, response.body)
    return response
