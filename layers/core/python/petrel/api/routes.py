"""The `/v1` routes. Each route is a few lines that call one service; errors map in `dispatch`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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
)
from petrel.errors import InternalError, InvalidRequest, NotFound, PetrelError
from petrel.models.api import (
    MAX_BATCH,
    BatchItemResult,
    BatchSendRequest,
    BatchSendResponse,
    CancelResponse,
    EmailView,
    MessageList,
    Problem,
    SendEmailRequest,
    SendEmailResponse,
    SuppressionList,
    SuppressionRequest,
    SuppressionView,
)
from petrel.models.records import Tenant
from petrel.observability import logger
from petrel.services import cancel, idempotency, query, submit, suppressions

SEND = "emails:send"
READ = "emails:read"

router = Router()


def _tenant(tenant_id: str) -> Tenant:
    tenant = container.api().tenants.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound("the tenant of this API key no longer exists")
    return tenant


def _with_idempotency(request: Request, tenant_id: str, call: Callable[[], Response]) -> Response:
    key = request.header("idempotency-key")
    if key is None:
        return call()
    c = container.api()

    def run() -> idempotency.StoredResponse:
        response: Response = call()
        return idempotency.StoredResponse(response.status, response.body)

    stored = idempotency.run_idempotent(
        c.idempotency,
        c.clock,
        tenant_id=tenant_id,
        key=key,
        fingerprint=idempotency.request_hash(request.method, request.path, request.body),
        call=run,
    )
    return Response(stored.status_code, stored.body, headers={"Idempotency-Key": key})


def send_email(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)

    def call() -> Response:
        try:
            body = SendEmailRequest.model_validate(request.json())
        except ValidationError as exc:
            raise validation_problem(exc) from exc
        return Response.of(202, submit.submit_email(container.api().submit, _tenant(tenant_id), body))

    return _with_idempotency(request, tenant_id, call)


def send_batch(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)

    def call() -> Response:
        payload = request.json()
        items = payload.get("emails") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequest(
                f"the body must be an object with `emails`: a list of 1 to {MAX_BATCH} emails",
                errors=[{"pointer": "/emails", "detail": f"a list of 1 to {MAX_BATCH} emails"}],
            )
        tenant = _tenant(tenant_id)
        results: list[BatchItemResult] = []
        for index, item in enumerate(items):
            try:
                try:
                    body = SendEmailRequest.model_validate(item)
                except ValidationError as exc:
                    raise validation_problem(exc, f"email at index {index}") from exc
                sent = submit.submit_email(container.api().submit, tenant, body)
                results.append(BatchItemResult(index=index, status=202, email=sent))
            except PetrelError as error:
                results.append(BatchItemResult(index=index, status=error.status, error=Problem(**problem_body(error))))
        return Response.of(202, BatchSendResponse(results=results))

    return _with_idempotency(request, tenant_id, call)


def get_email(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    return Response.of(200, query.get_email(container.api().messages, tenant_id, request.params["id"]))


def cancel_email(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    return Response.of(200, cancel.cancel_email(container.api().cancel, tenant_id, request.params["id"]))


def _limit(request: Request) -> int:
    try:
        return int(request.query.get("limit", "20"))
    except ValueError:
        return 0  # reported by the service as out of range


def list_emails(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    page = query.list_messages(
        container.api().messages,
        tenant_id,
        status=request.query.get("status"),
        limit=_limit(request),
        cursor=request.query.get("cursor"),
    )
    return Response.of(200, page)


def list_suppressions(request: Request) -> Response:
    tenant_id = request.require_tenant(READ)
    page = suppressions.list_page(
        container.api().suppressions, tenant_id, limit=_limit(request), cursor=request.query.get("cursor")
    )
    return Response.of(200, page)


def add_suppression(request: Request) -> Response:
    tenant_id = request.require_tenant(SEND)
    try:
        body = SuppressionRequest.model_validate(request.json())
    except ValidationError as exc:
        raise validation_problem(exc) from exc
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
        idempotent_header=True,
    ),
    Route(
        "POST",
        "/v1/emails/batch",
        send_batch,
        "Send up to 100 emails",
        202,
        BatchSendResponse,
        BatchSendRequest,
        idempotent_header=True,
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
    Route("GET", "/v1/emails/{id}", get_email, "An email: status per recipient, attempts, events", 200, EmailView),
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
    request = parse_event(event)
    try:
        route, params = router.match(request.method, request.path)
        response = route.handler(replace(request, params=params))
    except PetrelError as error:
        response = problem(error, request.path)
    except Exception:
        logger().exception("unhandled error", extra={"path": request.path, "method": request.method})
        response = problem(InternalError(f"an internal error occurred (request {request.request_id})"), request.path)
    return to_proxy(response)
