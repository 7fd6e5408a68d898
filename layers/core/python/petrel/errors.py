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
