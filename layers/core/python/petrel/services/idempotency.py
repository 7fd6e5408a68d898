"""`Idempotency-Key`: the same key and request replay the first response for 24 hours, per tenant.

Requests are compared on their canonical JSON (sorted keys, no insignificant whitespace), or on
their bytes when the body is not JSON. A replay is byte-identical to the first response: status,
content type and body. The response is kept compressed in the idempotency record; one still larger
than a record may be (DynamoDB items stop at 400 KB) goes to the blob store, and the record points
at it, so the largest allowed batch (100 emails x 50 recipients) replays like any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from petrel.errors import IdempotencyConflict, IdempotencyInFlight, InvalidRequest
from petrel.ports import BlobStore, Clock, IdempotencyStore


class ErrorLog(Protocol):
    """Where a failure to keep a response is reported (a stdlib or Powertools logger)."""

    def exception(self, msg: str, /) -> None: ...


KEEP_SECONDS = 24 * 3600
IN_FLIGHT_SECONDS = 60  # a claim older than this belongs to a request that died; it may be taken over
# A compressed response up to this size stays in the record (DynamoDB's item limit is 400 KB, key and
# attribute names included); a larger one goes to the blob store under BLOB_PREFIX.
INLINE_LIMIT = 300 * 1024
BLOB_PREFIX = "idempotency/"


# Refusals that pass with time, so they are not kept: the key is released and the same request may
# run again later. 429: a quota window was full; 403 from a send: its tenant is suspended (a key
# without the scope is refused before the key is looked at). Neither stored anything.
PASSING_STATUSES = frozenset({403, 429})
# The response headers such a refusal carries to its caller (never kept: only kept answers replay).
PASSING_HEADERS = frozenset({"Retry-After"})


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: str
    content_type: str = "application/json"
    # Headers of a first answer that is not kept (a 429's Retry-After): a kept answer replays without.
    headers: dict[str, str] = field(default_factory=dict, compare=False)
    replayed: bool = field(default=False, compare=False)  # True when this is the first response, replayed


def canonical_body(body: bytes) -> bytes:
    """The body as compared between requests: canonical JSON, or the bytes themselves if not JSON."""
    try:
        value = json.loads(body)
        return b"json:" + json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    except (ValueError, UnicodeDecodeError, RecursionError):
        return b"raw:" + body


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical_body(body)).hexdigest()


def encode_response(response: StoredResponse) -> bytes:
    document = {"status": response.status_code, "content_type": response.content_type, "body": response.body}
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 6)


def decode_response(data: bytes) -> StoredResponse:
    document = json.loads(zlib.decompress(data))
    return StoredResponse(
        status_code=int(document["status"]),
        body=str(document["body"]),
        content_type=str(document["content_type"]),
        replayed=True,
    )


def blob_key(scoped_key: str) -> str:
    """Where a large response is kept: under the tenant, named by a digest of the key (any characters)."""
    tenant_id, _, key = scoped_key.partition("#")
    return f"{BLOB_PREFIX}{tenant_id}/{hashlib.sha256(key.encode()).hexdigest()}"


def _keep(store: IdempotencyStore, blobs: BlobStore, scoped: str, response: StoredResponse) -> None:
    data = encode_response(response)
    if len(data) <= INLINE_LIMIT:
        store.complete(scoped, response=data, response_key=None)
        return
    key = blob_key(scoped)
    blobs.put(key, data, "application/zlib")
    store.complete(scoped, response=None, response_key=key)


def run_idempotent(
    store: IdempotencyStore,
    blobs: BlobStore,
    clock: Clock,
    *,
    tenant_id: str,
    key: str,
    fingerprint: str,
    call: Callable[[], StoredResponse],
    log: ErrorLog | None = None,
) -> StoredResponse:
    """Run `call` once per (tenant, key); replay its response, or refuse a conflicting reuse.

    `call` raising, or answering 5xx or a refusal that passes with time (`PASSING_STATUSES`), releases
    the key: routes answer those only when nothing was stored (a batch isolates each email's failure
    in that email's result), so a retry is safe. A
    failure to keep the response is logged, never answered: what `call` did stands.
    """
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable characters",
            errors=[{"parameter": "Idempotency-Key", "detail": "1-255 printable characters"}],
        )
    scoped = f"{tenant_id}#{key}"
    now = int(clock.now().timestamp())
    claim = store.begin(
        scoped, fingerprint, now=now, expires_at=now + KEEP_SECONDS, in_flight_until=now + IN_FLIGHT_SECONDS
    )
    if claim.state == "mismatch":
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
    if claim.state == "in_progress":
        raise IdempotencyInFlight("a request with this Idempotency-Key is still in progress; retry shortly")
    if claim.state == "completed":
        if claim.response is not None:
            return decode_response(claim.response)
        if claim.response_key is not None:
            return decode_response(blobs.get(claim.response_key))
        raise IdempotencyConflict("this Idempotency-Key was used by a request whose response is no longer kept")
    try:
        response = call()
    except BaseException:
        store.release(scoped)
        raise
    if response.status_code >= 500 or response.status_code in PASSING_STATUSES:
        store.release(scoped)
        return response
    try:
        _keep(store, blobs, scoped, response)
    except Exception:
        # The work is done (emails stored and queued): answer it. Failing now would invite a retry
        # that, once the claim's in-flight window has passed, does it all again. The claim stays in
        # flight, so a retry meanwhile is refused as such rather than run.
        (log or logging.getLogger(__name__)).exception(
            "the idempotency record could not be completed; answering the response anyway"
        )
    return response
