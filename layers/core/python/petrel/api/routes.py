"""The `/v1` routes. Each route is a few lines that call one service; errors map in `dispatch`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from petrel import container
from petrel.api.http import (
    Request,
    Response,
    Route,
    Router,
    parse_event,
    problem,
    problem_body,
    to_proxy,
    validation_problem,
    within,
)
from petrel.errors import (
    Forbidden,
    InternalError,
    InvalidRequest,
    NotFound,
    PetrelError,
    RequestTooLarge,
    Unauthorized,
)
from petrel.models.api import (
    MAX_BATCH,
    MAX_REQUEST_BYTES,
    BatchItemResult,
    BatchSendRequest,
    BatchSendResponse,
    CancelResponse,
    EmailView,
    MessageList,
    MessageView,
    Problem,
    SendEmailRequest,
    SendEmailResponse,
    SuppressionList,
    SuppressionRequest,
    SuppressionView,
)
from petrel.models.attachments import AttachmentUpload, CreateAttachmentRequest
from petrel.models.records import MessageStatus, Tenant
from petrel.observability import logger
from petrel.services import attachments, cancel, idempotency, query, submit, suppressions

SEND = "emails:send"
READ = "emails:read"

router = Router()


def _tenant(tenant_id: str) -> Tenant:
    tenant = container.api().tenants.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound("the tenant of this API key no longer exists")
    return tenant


def _idempotent(route: Route, request: Request, tenant_id: str, key: str) -> Response:
    """Run `route` once per (tenant, key). What the route answers is kept and replayed as it was,
    except what says nothing about the request itself: a missing or insufficient key (401, 403), a
    conflicting reuse (409 from the key itself) and server errors (5xx), which release the key."""
    c = container.api()

    def run() -> idempotency.StoredResponse:
        try:
            response = route.handler(request)
        except (Unauthorized, Forbidden):
            raise
        except PetrelError as error:
            if error.status >= 500:
                raise
            response = problem(error, request.path)
        return idempotency.StoredResponse(response.status, response.body, response.content_type)

    stored = idempotency.run_idempotent(
        c.idempotency,
        c.blobs,
        c.clock,
        tenant_id=tenant_id,
        key=key,
        fingerprint=idempotency.request_hash(request.method, request.path, request.body),
        call=run,
    )
    headers = {"Idempotency-Key": key}
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(stored.status_code, stored.body, stored.content_type, headers)


def send_email(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    body = request.parse(SendEmailRequest)
    return Response.of(202, submit.submit_email(container.api().submit, _tenant(tenant_id), body))


def _batch_item(tenant: Tenant, index: int, item: Any, request_id: str, reads: submit.TenantReads) -> BatchItemResult:
    """One email of a batch: accepted, or its own problem. Nothing one email does fails the others."""
    try:
        try:
            body = SendEmailRequest.model_validate(item)
        except ValidationError as exc:
            raise validation_problem(exc, f"email at index {index}") from exc
        sent = submit.submit_email(container.api().submit, tenant, body, reads)
        return BatchItemResult(index=index, status=202, email=sent)
    except PetrelError as error:
        failure = within(error, f"/emails/{index}")
    except Exception:
        logger().exception("a batch item failed", extra={"index": index, "tenant_id": tenant.tenant_id})
        failure = InternalError(f"an internal error occurred for the email at index {index} (request {request_id})")
    return BatchItemResult(index=index, status=failure.status, error=Problem(**problem_body(failure)))


def send_batch(request: Request) -> Response:
    """Each email is accepted or refused alone: 202 when any was accepted, with one result each; 422
    when none was valid (every item's errors, pointers absolute within the request)."""
    tenant_id = request.require_tenant(SEND)
    payload = request.json()
    items = payload.get("emails") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise InvalidRequest(
            f"the body must be an object with `emails`: a list of 1 to {MAX_BATCH} emails",
            errors=[{"pointer": "/emails", "detail": f"a list of 1 to {MAX_BATCH} emails"}],
        )
    extra = set(payload) - {"emails"}
    if extra:
        raise InvalidRequest(
            "the body has unknown members", errors=[{"pointer": f"/{name}", "detail": "unknown"} for name in extra]
        )
    tenant = _tenant(tenant_id)
    reads = submit.TenantReads()  # the emails of the batch share their tenant's domains and servers
    results = [_batch_item(tenant, index, item, request.request_id, reads) for index, item in enumerate(items)]
    if any(r.status == 202 for r in results):
        return Response.of(202, BatchSendResponse(results=results))
    if any(r.status >= 500 for r in results):  # nothing was accepted: the whole request may be retried
        raise InternalError(f"no email of the batch could be accepted (request {request.request_id})")
    errors: list[dict[str, str]] = []
    for result in results:
        assert result.error is not None
        listed = (result.error.model_extra or {}).get("errors") or []
        errors += listed or [{"pointer": f"/emails/{result.index}", "detail": result.error.detail}]
    raise InvalidRequest(f"none of the {len(results)} emails is valid", errors=errors)


def create_attachment(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    body = request.parse(CreateAttachmentRequest)
    upload = attachments.create_attachment(container.api().attachments, _tenant(tenant_id), body)
    return Response.of(201, upload)


def get_email(request: Request) -> Response:
    """An email, by its id or by the id of one of its messages."""
    tenant_id = request.require_tenant(READ)
    return Response.of(200, query.get_email(container.api().messages, tenant_id, request.params["id"]))


def get_message(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    return Response.of(200, query.get_message(container.api().messages, tenant_id, request.params["id"]))


def cancel_email(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    return Response.of(200, cancel.cancel_email(container.api().cancel, tenant_id, request.params["id"]))


def _listing(request: Request, *, with_status: bool) -> tuple[int, str | None]:
    """A listing's `limit` (and `status`), each failure listed in the problem's `errors`."""
    errors: list[dict[str, str]] = []
    raw_limit = request.query.get("limit", str(query.DEFAULT_PAGE))
    limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() else 0
    if not 1 <= limit <= query.MAX_PAGE:
        errors.append({"parameter": "limit", "detail": f"an integer from 1 to {query.MAX_PAGE}"})
    status = request.query.get("status") if with_status else None
    if status is not None and status not in {s.value for s in MessageStatus}:
        errors.append({"parameter": "status", "detail": "one of: " + ", ".join(s.value for s in MessageStatus)})
    if errors:
        summary = "; ".join(f"{e['parameter']}: {e['detail']}" for e in errors)
        raise InvalidRequest(f"the query is not valid: {summary}", errors=errors)
    return limit, status


def list_emails(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    limit, status = _listing(request, with_status=True)
    page = query.list_messages(
        container.api().messages, tenant_id, status=status, limit=limit, cursor=request.query.get("cursor")
    )
    return Response.of(200, page)


def list_suppressions(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    limit, _ = _listing(request, with_status=False)
    page = suppressions.list_page(
        container.api().suppressions, tenant_id, limit=limit, cursor=request.query.get("cursor")
    )
    return Response.of(200, page)


def add_suppression(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    body = request.parse(SuppressionRequest)
    c = container.api()
    return Response.of(201, suppressions.add(c.suppressions, c.clock, tenant_id, body))


def get_suppression(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    return Response.of(200, suppressions.get(container.api().suppressions, tenant_id, request.params["email"]))


def remove_suppression(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    suppressions.remove(container.api().suppressions, tenant_id, request.params["email"])
    return Response(204, "")


def openapi_document(request: Request) -> Response:
    from petrel.api.openapi import document  # only this route needs it

    return Response(200, json.dumps(document(), indent=2))


for route in (
    Route(
        "POST",
        "/v1/emails",
        send_email,
        "Send an email",
        202,
        SendEmailResponse,
        SendEmailRequest,
    ),
    Route(
        "POST",
        "/v1/emails/batch",
        send_batch,
        "Send up to 100 emails",
        202,
        BatchSendResponse,
        BatchSendRequest,
    ),
    Route(
        "POST",
        "/v1/attachments",
        create_attachment,
        "Declare an attachment and get a short-lived URL to upload it to; reference it from an email by id",
        201,
        AttachmentUpload,
        CreateAttachmentRequest,
    ),
    Route(
        "GET",
        "/v1/emails",
        list_emails,
        "List messages (one per recipient), newest first",
        200,
        MessageList,
        query=(
            ("status", "string", "Only messages in this status"),
            ("limit", "integer", "Page size, 1-100 (default 20)"),
            ("cursor", "string", "`next_cursor` of the previous page"),
        ),
    ),
    Route(
        "GET",
        "/v1/emails/{id}",
        get_email,
        "An email: status per recipient, attempts, events (by its id, or by one of its messages' ids)",
        200,
        EmailView,
    ),
    Route("GET", "/v1/messages/{id}", get_message, "One message: one recipient's copy of an email", 200, MessageView),
    Route(
        "DELETE",
        "/v1/emails/{id}",
        cancel_email,
        "Cancel the recipients not yet sent (scheduled, queued or deferred)",
        200,
        CancelResponse,
    ),
    Route(
        "GET",
        "/v1/suppressions",
        list_suppressions,
        "List suppressed addresses",
        200,
        SuppressionList,
        query=(
            ("limit", "integer", "Page size, 1-100 (default 20)"),
            ("cursor", "string", "`next_cursor` of the previous page"),
        ),
    ),
    Route("POST", "/v1/suppressions", add_suppression, "Suppress an address", 201, SuppressionView, SuppressionRequest),
    Route("GET", "/v1/suppressions/{email}", get_suppression, "One suppressed address", 200, SuppressionView),
    Route("DELETE", "/v1/suppressions/{email}", remove_suppression, "Stop suppressing an address", 204, None),
    Route("GET", "/v1/openapi.json", openapi_document, "This document", 200, None, authenticated=False),
):
    router.add(route)


def dispatch(event: Mapping[str, Any]) -> dict[str, Any]:
    """Run the matching route; every error becomes an RFC 9457 problem here and nowhere else."""
    path = str(event.get("path") or "/")
    request_id = str((event.get("requestContext") or {}).get("requestId", ""))
    try:
        request = parse_event(event)
        if len(request.body) > MAX_REQUEST_BYTES:
            raise RequestTooLarge(
                f"the body is {len(request.body)} bytes; the API takes at most {MAX_REQUEST_BYTES}: "
                "upload large files first (POST /v1/attachments) and reference them by attachment_id"
            )
        route, params = router.match(request.method, request.path)
        request = replace(request, params=params)
        key = request.header("idempotency-key")
        if route.idempotent and key is not None and request.tenant_id:
            response = _idempotent(route, request, request.tenant_id, key)
        else:
            response = route.handler(request)
    except PetrelError as error:
        response = problem(error, path)
    except Exception:
        logger().exception("unhandled error", extra={"path": path, "method": event.get("httpMethod")})
        response = problem(InternalError(f"an internal error occurred (request {request_id})"), path)
    return to_proxy(response)
