"""Errors that cross the API boundary, each mapped once to an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any


class PetrelError(Exception):
    """A failure the caller can act on. `status` and `slug` become the problem's status and type."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    def headers(self) -> dict[str, str]:
        """Response headers the problem carries besides its body (a 429's `Retry-After`)."""
        return {}


class InvalidRequest(PetrelError):
    status = 422
    slug = "invalid-request"
    title = "The request is not valid"

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail, extra={"errors": errors or []})


class MalformedBody(PetrelError):
    status = 400
    slug = "malformed-body"
    title = "The request body is not valid JSON"


class Unauthorized(PetrelError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class Forbidden(PetrelError):
    status = 403
    slug = "forbidden"
    title = "The API key lacks the scope this route needs"


class TenantSuspended(PetrelError):
    """The tenant is suspended: it may read, not send. Nothing of the request was stored."""

    status = 403
    slug = "tenant-suspended"
    title = "The tenant is suspended"


class NotFound(PetrelError):
    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(PetrelError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(PetrelError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class IdempotencyConflict(Conflict):
    slug = "idempotency-key-reused"
    title = "The Idempotency-Key was used with a different request"


class IdempotencyInFlight(Conflict):
    slug = "idempotency-request-in-flight"
    title = "A request with this Idempotency-Key is still being processed"


class PayloadTooLarge(PetrelError):
    status = 413
    slug = "message-too-large"
    title = "The message is larger than the tenant allows"


class RequestTooLarge(PayloadTooLarge):
    slug = "request-too-large"
    title = "The request body is larger than the API takes"


class QuotaExceeded(PetrelError):
    """The tenant's daily or per-second recipient quota has no room for the email now. Nothing was
    stored; `retry_after` is the number of seconds until the window it exceeded starts afresh."""

    status = 429
    slug = "quota-exceeded"
    title = "The tenant's sending quota is used up for now"

    def __init__(self, detail: str, *, retry_after: int, quota: str, limit: int) -> None:
        super().__init__(detail, extra={"retry_after": retry_after, "quota": quota, "limit": limit})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyRequests(PetrelError):
    """The tenant sends requests faster than its API plan allows (API Gateway's usage plan deployed,
    the local front's token bucket locally): refused before the API function runs. `retry_after`
    seconds: when a token is back (API Gateway's own 429 does not say)."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests for the tenant's API plan"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, extra={"retry_after": retry_after})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UnsupportedMediaType(PetrelError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InternalError(PetrelError):
    status = 500
    slug = "internal-error"
    title = "Internal error"


class ServiceUnavailable(PetrelError):
    status = 503
    slug = "service-unavailable"
    title = "Service temporarily unavailable"


class ConfigurationError(Exception):
    """Admin input that cannot be applied (the CLI prints it as one line)."""
