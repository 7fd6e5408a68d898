"""services.idempotency: replay, conflict, in-flight, release on failure, canonical bodies, large responses."""

from __future__ import annotations

import pytest

from petrel.errors import IdempotencyConflict, IdempotencyInFlight, InvalidRequest
from petrel.services.idempotency import (
    IN_FLIGHT_SECONDS,
    INLINE_LIMIT,
    StoredResponse,
    decode_response,
    request_hash,
    run_idempotent,
)
from tests.fakes import FakeWorld

BODY = b'{"to": "bob@example.org"}'


class Call:
    """A route handler that counts its calls."""

    def __init__(self, response: StoredResponse | Exception) -> None:
        self.response = response
        self.count = 0

    def __call__(self) -> StoredResponse:
        self.count += 1
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def _run(
    world: FakeWorld, call: Call, *, key: str = "order-42", body: bytes = BODY, tenant: str = "tn_a"
) -> StoredResponse:
    return run_idempotent(
        world.idempotency,
        world.blobs,
        world.clock,
        tenant_id=tenant,
        key=key,
        fingerprint=request_hash("POST", "/v1/emails", body),
        call=call,
    )


def test_same_key_and_body_replays_the_first_response(world: FakeWorld) -> None:
    first = Call(StoredResponse(202, '{"id": "em_1"}'))
    assert _run(world, first) == StoredResponse(202, '{"id": "em_1"}')

    world.clock.advance(hours=23)
    second = Call(StoredResponse(202, '{"id": "em_2"}'))
    assert _run(world, second) == StoredResponse(202, '{"id": "em_1"}')
    assert (first.count, second.count) == (1, 0)


def test_a_different_body_under_the_same_key_conflicts(world: FakeWorld) -> None:
    _run(world, Call(StoredResponse(202, "{}")))

    other = Call(StoredResponse(202, "{}"))
    with pytest.raises(IdempotencyConflict) as caught:
        _run(world, other, body=b'{"to": "eve@example.org"}')
    assert caught.value.status == 409 and other.count == 0


def test_the_fingerprint_covers_method_and_path() -> None:
    assert request_hash("POST", "/v1/emails", BODY) != request_hash("POST", "/v1/emails/batch", BODY)
    assert request_hash("POST", "/v1/emails", BODY) != request_hash("PUT", "/v1/emails", BODY)
    assert request_hash("POST", "/v1/emails", BODY) == request_hash("POST", "/v1/emails", BODY)


def test_a_request_still_in_flight(world: FakeWorld) -> None:
    duplicate = Call(StoredResponse(202, "{}"))

    def first_request() -> StoredResponse:
        with pytest.raises(IdempotencyInFlight):  # the client retried while the first one was running
            _run(world, duplicate)
        return StoredResponse(202, '{"id": "em_1"}')

    assert _run(world, first_request) == StoredResponse(202, '{"id": "em_1"}')  # type: ignore[arg-type]
    assert duplicate.count == 0


def test_an_abandoned_claim_is_taken_over(world: FakeWorld) -> None:
    scoped = "tn_a#order-42"
    now = world.clock.timestamp()
    fingerprint = request_hash("POST", "/v1/emails", BODY)
    world.idempotency.begin(
        scoped, fingerprint, now=now, expires_at=now + 86400, in_flight_until=now + IN_FLIGHT_SECONDS
    )
    world.clock.advance(IN_FLIGHT_SECONDS + 1)  # that request died without releasing

    call = Call(StoredResponse(202, '{"id": "em_9"}'))
    assert _run(world, call) == StoredResponse(202, '{"id": "em_9"}') and call.count == 1


def test_a_failing_call_releases_the_key(world: FakeWorld) -> None:
    with pytest.raises(RuntimeError):
        _run(world, Call(RuntimeError("store down")))
    assert world.idempotency.items == {}

    retry = Call(StoredResponse(202, '{"id": "em_1"}'))
    assert _run(world, retry).status_code == 202 and retry.count == 1


def test_a_server_error_response_is_not_kept(world: FakeWorld) -> None:
    assert _run(world, Call(StoredResponse(503, "{}"))).status_code == 503
    assert world.idempotency.items == {}


def test_a_client_error_response_is_kept(world: FakeWorld) -> None:
    _run(world, Call(StoredResponse(422, '{"status": 422}')))
    again = Call(StoredResponse(202, "{}"))
    assert _run(world, again) == StoredResponse(422, '{"status": 422}') and again.count == 0


def test_keys_are_per_tenant(world: FakeWorld) -> None:
    _run(world, Call(StoredResponse(202, '{"id": "a"}')), tenant="tn_a")
    other = Call(StoredResponse(202, '{"id": "b"}'))
    assert _run(world, other, tenant="tn_b", body=b"another body").body == '{"id": "b"}'


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "new\nline"])
def test_key_syntax(world: FakeWorld, key: str) -> None:
    with pytest.raises(InvalidRequest):
        _run(world, Call(StoredResponse(202, "{}")), key=key)


def test_a_replay_is_marked_and_keeps_the_content_type(world: FakeWorld) -> None:
    first = _run(world, Call(StoredResponse(422, '{"status": 422}', "application/problem+json")))
    assert not first.replayed

    again = _run(world, Call(StoredResponse(202, "{}")))
    assert again == StoredResponse(422, '{"status": 422}', "application/problem+json") and again.replayed


def test_the_fingerprint_compares_canonical_json() -> None:
    one = request_hash("POST", "/v1/emails", b'{"to": "bob@example.org", "subject": "Hi"}')
    assert one == request_hash("POST", "/v1/emails", b'{\n  "subject":"Hi",\n  "to":"bob@example.org"\n}')
    assert one != request_hash("POST", "/v1/emails", b'{"to": "bob@example.org", "subject": "Hi!"}')
    # not JSON: compared as bytes, and never equal to a JSON body
    assert request_hash("POST", "/v1/emails", b"{x") == request_hash("POST", "/v1/emails", b"{x")
    assert request_hash("POST", "/v1/emails", b"{x") != request_hash("POST", "/v1/emails", b"{x ")
    assert request_hash("POST", "/v1/emails", b"[" * 100_000)  # deeper than the parser goes: bytes


def _large_body(recipients: int) -> str:
    """A response like the largest batch's: random ids that compress poorly."""
    import json
    import secrets

    return json.dumps(
        {"results": [{"id": secrets.token_hex(16), "email": secrets.token_hex(20)} for _ in range(recipients)]}
    )


def test_a_large_response_fits_its_record_compressed(world: FakeWorld) -> None:
    body = _large_body(5000)  # ~500 KB: more than a DynamoDB item may hold
    assert len(body) > 400 * 1024
    _run(world, Call(StoredResponse(202, body)))

    [claim] = world.idempotency.items.values()
    assert claim.response is not None and len(claim.response) <= INLINE_LIMIT and claim.response_key is None
    assert world.blobs.blobs == {}
    assert _run(world, Call(StoredResponse(202, "{}"))).body == body


def test_a_response_too_large_even_compressed_goes_to_the_blob_store(world: FakeWorld) -> None:
    body = _large_body(15000)
    _run(world, Call(StoredResponse(202, body)))

    [claim] = world.idempotency.items.values()
    assert claim.response is None and claim.response_key is not None
    assert claim.response_key.startswith("idempotency/tn_a/")
    assert decode_response(world.blobs.blobs[claim.response_key]).body == body
    replay = _run(world, Call(StoredResponse(202, "{}")))
    assert replay.body == body and replay.replayed
