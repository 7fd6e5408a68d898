"""The API function's application: Powertools' REST resolver (validation on) behind a thin front door.

A request goes through, in order:

1. the body limit (413, before anything else: the body is never parsed),
2. the operation's scope, from the authorizer's context (401, 403: before the body is validated),
3. the body's media type, as the operation decides (`Operation.check_media`): not JSON on an operation
   that takes JSON (400), not the type of an operation that takes another (415: message/rfc822),
4. the `Idempotency-Key` of an authenticated POST: the resolver's answer, whatever it is (a 422
   included), is kept and replayed byte for byte; 5xx answers release the key,
5. the resolver: routing (404, 405), validation (400 for JSON that does not parse, 422), the route.

Every error is an RFC 9457 problem, mapped here and nowhere else (Powertools' exception handlers for
what happens inside the resolver). Each request leaves one access-log line on the container's logger
where no API Gateway writes one (ApiSettings.access_log: locally); every line the function logs for a
request names API Gateway's request id (`request_id`), so a deployed error line finds its access line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from petrel.api import openapi
from petrel.api.deps import ApiPorts, ApiServices
from petrel.api.http import (
    JSON,
    PROBLEM_JSON,
    access_fields,
    body_bytes,
    media_type,
    problem_body,
    problem_response,
    proxy_response,
    request_problem,
    single_value_headers,
)
from petrel.api.routes import Operation, register_routes
from petrel.errors import (
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PetrelError,
    RequestTooLarge,
    Unauthorized,
)
from petrel.models.api import MAX_REQUEST_BYTES
from petrel.models.records import granted_scopes
from petrel.services import idempotency


def parse_json_body(text: str) -> Any:
    """The resolver's JSON parser: a body that is not UTF-8, or nested deeper than Python parses, is
    malformed JSON (a 400), not a server error."""
    try:
        text.encode("utf-8")  # bytes that were not UTF-8 arrive as lone surrogates (see `_forwarded`)
    except UnicodeEncodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8", text, exc.start) from exc
    try:
        return json.loads(text)
    except RecursionError as exc:  # `[` x 100,000: deeper than any request Petrel takes
        raise json.JSONDecodeError("it is nested too deeply", text, 0) from exc


def _serialize(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ApiApplication:
    """The Lambda handler of the API (without the logger's context injection, see petrel.entrypoints)."""

    def __init__(self, ports: ApiPorts) -> None:
        self.ports = ports
        self.logger = ports.telemetry.logger
        self.resolver = APIGatewayRestResolver(
            enable_validation=True, serializer=_serialize, json_body_deserializer=parse_json_body
        )
        self.operations = register_routes(self.resolver, ApiServices(ports))
        openapi.configure(self.resolver)
        self._document: dict[str, Any] | None = None
        self._install_document_route()
        self._install_problems()

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        request = event.get("requestContext") or {}
        self.logger.thread_safe_append_keys(request_id=request.get("requestId"))
        result = self.handle(event, context)
        if self.ports.access_log:
            authorizer = request.get("authorizer") or {}
            self.logger.info(
                "request", extra={**access_fields(event, result, started), "tenant_id": authorizer.get("tenant_id")}
            )
        return result

    def handle(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        path = str(event.get("path") or "/")
        method = str(event.get("httpMethod") or "GET").upper()
        try:
            body = body_bytes(event)
            operation = self.operations.find(method, path)
            if len(body) > MAX_REQUEST_BYTES:
                raise _too_large(len(body), operation)
            if operation is None:  # the resolver answers 404 or 405
                return self._resolve(event, context)
            tenant_id = _authorize(operation, event)
            headers = event.get("headers") or {}
            media = media_type(headers)
            operation.check_media(media)
            forwarded = _forwarded(event, body, media)
            key = next((str(v) for k, v in headers.items() if str(k).lower() == "idempotency-key"), None)
            if operation.idempotent and key is not None:
                return self._idempotent(forwarded, context, tenant_id, key, body)
            return self._resolve(forwarded, context)
        except PetrelError as error:
            return problem_response(error, path)
        except Exception:
            self.logger.exception("unhandled error", extra={"path": path, "method": method})
            return problem_response(InternalError(f"an internal error occurred (request {_request_id(event)})"), path)

    def _resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        result = self.resolver.resolve(event, context)
        headers = single_value_headers(result)
        content_type = headers.pop("Content-Type", JSON)
        return proxy_response(int(result["statusCode"]), result.get("body") or "", content_type, headers)

    def _idempotent(
        self, event: Mapping[str, Any], context: Any, tenant_id: str, key: str, body: bytes
    ) -> dict[str, Any]:
        """The operation once per (tenant, key): its answer kept, replayed as it was."""

        def run() -> idempotency.StoredResponse:
            result = self._resolve(event, context)
            content_type = str(result["headers"]["Content-Type"])
            passing = {k: v for k, v in result["headers"].items() if k in idempotency.PASSING_HEADERS}
            return idempotency.StoredResponse(int(result["statusCode"]), str(result["body"]), content_type, passing)

        method, path = str(event["httpMethod"]).upper(), str(event["path"])
        stored = idempotency.run_idempotent(
            self.ports.idempotency,
            self.ports.blobs,
            self.ports.clock,
            tenant_id=tenant_id,
            key=key,
            fingerprint=idempotency.request_hash(method, path, body),
            call=run,
            log=self.logger,
        )
        headers = {**stored.headers, "Idempotency-Key": key}
        if stored.replayed:
            headers["Idempotent-Replayed"] = "true"
        return proxy_response(stored.status_code, stored.body, stored.content_type, headers)

    def _install_document_route(self) -> None:
        """`GET /v1/openapi.json` and Swagger UI at `GET /v1/docs` with its assets (all public: no scope),
        the document rendered once per application, on the first request for it or the page."""
        self.operations.all += [Operation("GET", path, None, False) for path in sorted(openapi.PUBLIC_PATHS)]

        @self.resolver.get(
            openapi.DOCUMENT_PATH,
            summary="This document (OpenAPI 3.1)",
            operation_id="getOpenApi",
            responses={200: {"description": "The OpenAPI document", "content": {JSON: {"schema": {"type": "object"}}}}},
        )
        def openapi_document() -> Response[str]:
            return Response(200, JSON, json.dumps(self.document(), indent=2))

        @self.resolver.get(openapi.DOCS_PATH, include_in_schema=False)
        def swagger_ui() -> Response[str]:
            return Response(200, "text/html", openapi.swagger_page(self.document(), self._base_path()))

        for path, (_, content_type) in openapi.SWAGGER_ASSETS.items():
            self._install_asset_route(path, content_type)

    def _install_asset_route(self, path: str, content_type: str) -> None:
        """`GET path`: one of Swagger UI's bundled assets (public, cacheable: it changes only with Powertools)."""

        @self.resolver.get(path, include_in_schema=False)
        def swagger_asset() -> Response[str]:
            headers = {"Cache-Control": openapi.ASSET_CACHE_CONTROL}
            return Response(200, content_type, openapi.swagger_asset(path), headers=headers)

    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = openapi.render(self.resolver)
        return self._document

    def _base_path(self) -> str:
        """The stage's path prefix when the request's path carries it (deployed, not behind a custom domain)."""
        context = self.resolver.current_event.raw_event.get("requestContext") or {}
        stage = str(context.get("stage") or "")
        full = str(context.get("path") or "")
        return f"/{stage}" if stage and stage != "$default" and full.startswith(f"/{stage}/") else ""

    def _install_problems(self) -> None:
        app = self.resolver

        def problem(error: PetrelError) -> Response[str]:
            body = json.dumps(problem_body(error, app.current_event.path))
            return Response(error.status, PROBLEM_JSON, body, headers=error.headers() or None)

        def invalid(error: RequestValidationError) -> Response[str]:
            errors = error.errors()
            if any(e["loc"][:1] == ("response",) for e in errors):  # a route answered off its model: a bug
                return unexpected(error)
            return problem(request_problem(errors))

        @app.not_found
        def not_found(_: NotFoundError) -> Response[str]:
            method, path = app.current_event.http_method.upper(), app.current_event.path
            if self.operations.allows(path):
                return problem(MethodNotAllowed(f"{method} is not allowed on {path}"))
            return problem(NotFound(f"no route {path}"))

        def unexpected(error: Exception) -> Response[str]:
            path = app.current_event.path
            self.logger.exception(
                "unhandled error", extra={"path": path, "method": app.current_event.http_method}, exc_info=error
            )
            request_id = app.current_event.request_context.request_id
            return problem(InternalError(f"an internal error occurred (request {request_id})"))

        app.exception_handler(PetrelError)(problem)
        app.exception_handler(RequestValidationError)(invalid)
        app.exception_handler(Exception)(unexpected)


def _authorize(operation: Operation, event: Mapping[str, Any]) -> str:
    """The caller's tenant, when its key has the operation's scope (the authorizer's context only:
    the scopes the authorizer granted, read as `granted_scopes` reads them so that an answer the
    gateway cached from before the scopes were split, `emails:send emails:read`, still grants all)."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    tenant_id = str(authorizer.get("tenant_id") or "")
    if operation.scope is None:
        return tenant_id
    if not tenant_id:
        raise Unauthorized("the request carries no tenant (authorizer context missing)")
    if operation.scope not in granted_scopes(str(authorizer.get("scopes") or "").split()):
        raise Forbidden(f"this API key does not have the {operation.scope!r} scope")
    return tenant_id


def _too_large(size: int, operation: Operation | None) -> RequestTooLarge:
    """The 413, with the way around it that fits the operation (a JSON body's files go up first)."""
    if operation is not None and operation.takes_body and operation.media != JSON:
        return RequestTooLarge(f"the body is {size} bytes; {operation.rule} takes at most {MAX_REQUEST_BYTES}")
    return RequestTooLarge(
        f"the body is {size} bytes; the API takes at most {MAX_REQUEST_BYTES}: "
        "upload large files first (POST /v1/attachments) and reference them by attachment_id"
    )


def _forwarded(event: Mapping[str, Any], body: bytes, media: str) -> dict[str, Any]:
    """The event as the resolver reads it: the body as text (bytes that are not UTF-8 kept as lone
    surrogates, which the JSON parser refuses) and a `+json` type presented as JSON, which is all
    Powertools parses."""
    forwarded = dict(event)
    if event.get("isBase64Encoded"):
        forwarded["body"] = body.decode("utf-8", "surrogateescape")
        forwarded["isBase64Encoded"] = False
    if media != JSON and media.endswith("+json"):
        headers = {k: v for k, v in (event.get("headers") or {}).items() if str(k).lower() != "content-type"}
        forwarded["headers"] = {**headers, "Content-Type": JSON}
        forwarded.pop("multiValueHeaders", None)
    return forwarded


def _request_id(event: Mapping[str, Any]) -> str:
    return str((event.get("requestContext") or {}).get("requestId", ""))
