"""In-memory IdempotencyStore with the DynamoDB adapter's claim / take-over rules."""

from __future__ import annotations

from dataclasses import dataclass

from petrel.ports import IdempotencyRecord


@dataclass
class StoredClaim:
    state: str
    request_hash: str
    expires_at: int
    in_flight_until: int | None = None
    response: bytes | None = None
    response_key: str | None = None


class FakeIdempotencyStore:
    def __init__(self) -> None:
        self.items: dict[str, StoredClaim] = {}

    def begin(
        self, key: str, request_hash: str, *, now: int, expires_at: int, in_flight_until: int
    ) -> IdempotencyRecord:
        claim = StoredClaim("in_progress", request_hash, expires_at, in_flight_until)
        found = self.items.get(key)
        if found is None or found.expires_at < now:
            self.items[key] = claim
            return IdempotencyRecord(state="new")
        if found.request_hash != request_hash:
            return IdempotencyRecord(state="mismatch")
        if found.state == "completed":
            return IdempotencyRecord(state="completed", response=found.response, response_key=found.response_key)
        if (found.in_flight_until or 0) >= now:
            return IdempotencyRecord(state="in_progress")
        self.items[key] = claim  # the first request died mid-way: take its claim over
        return IdempotencyRecord(state="new")

    def complete(self, key: str, *, response: bytes | None, response_key: str | None) -> None:
        found = self.items.get(key)
        if found is None:  # released meanwhile: like the real store, do not resurrect it
            return
        found.state, found.in_flight_until = "completed", None
        found.response, found.response_key = response, response_key
        self.items[key] = found

    def release(self, key: str) -> None:
        self.items.pop(key, None)
