"""API Gateway REST (v1) proxy events in, proxy responses out; routing and RFC 9457 problems."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from petrel.errors import (
    Forbidden,
    InvalidRequest,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    PetrelError,
    Unauthorized,
)

PROBLEM_TYPE_BASE = "urn:petrel:problem:"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    params: dict[str, str]
    tenant_id: str | None
    scopes: frozenset[str]
    request_id: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        content_type = (self.header("content-type") or JSON).split(";")[0].strip().lower()
        if content_type != JSON and not content_type.endswith("+json"):
            raise MalformedBody(f"send the body as {JSON}, not {content_type}")
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # `[` x 100,000: deeper than any request Petrel takes
            raise MalformedBody("the body is not valid JSON: it is nested too deeply") from exc

    def parse(self, model: type[M]) -> M:
        """The JSON body validated as `model`; a 400 or 422 problem when it is not."""
        try:
            return model.model_validate(self.json())
        except ValidationError as exc:
            raise validation_problem(exc) from exc

    def require_tenant(self, scope: str) -> str:
        if not self.tenant_id:
            raise Unauthorized("the request carries no tenant (authorizer context missing)")
        if scope not in self.scopes:
            raise Forbidden(f"this API key does not have the {scope!r} scope")
        return self.tenant_id


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, model: BaseModel) -> Response:
        return cls(status, model.model_dump_json(by_alias=True, exclude_none=False))


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    success: int
    response_model: type[BaseModel] | None
    request_model: type[BaseModel] | None = None
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON schema type, description)
    authenticated: bool = True

    @property
    def idempotent(self) -> bool:
        """Every authenticated POST takes an `Idempotency-Key` (applied once, in `dispatch`)."""
        return self.method == "POST" and self.authenticated

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


def validation_problem(exc: ValidationError, what: str = "request body") -> InvalidRequest:
    """A 422 listing every failure with a JSON pointer into the body (RFC 6901)."""
    errors = [
        {"pointer": json_pointer(err["loc"]), "detail": str(err["msg"]).removeprefix("Value error, ")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:3])
    return InvalidRequest(f"the {what} is not valid: {summary}", errors=errors)


def json_pointer(path: Sequence[str | int]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def within(error: PetrelError, prefix: str) -> PetrelError:
    """`error` with the pointers of its `errors` made absolute under `prefix` (e.g. `/emails/2`)."""
    errors = error.extra.get("errors")
    if isinstance(errors, list):
        error.extra["errors"] = [
            {**item, "pointer": prefix + item["pointer"]} if "pointer" in item else item for item in errors
        ]
    return error


def problem_body(error: PetrelError, instance: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + error.slug,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance:
        body["instance"] = instance
    body.update(error.extra)
    return body


def problem(error: PetrelError, instance: str | None = None) -> Response:
    return Response(error.status, json.dumps(problem_body(error, instance)), PROBLEM_JSON)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        self.routes.append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            allowed = True
        if allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        raise NotFound(f"no route {path}")


def parse_event(event: Mapping[str, Any]) -> Request:
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    # surrogatepass: a lone surrogate cannot come from HTTP; if an event holds one, JSON parsing refuses it.
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8", "surrogatepass")
    context = event.get("requestContext") or {}
    authorizer = context.get("authorizer") or {}
    scopes = frozenset(str(authorizer.get("scopes") or "").split())
    return Request(
        method=str(event.get("httpMethod", "GET")).upper(),
        path=str(event.get("path") or "/"),
        headers=headers,
        query={str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()},
        body=body,
        params={},
        tenant_id=authorizer.get("tenant_id"),
        scopes=scopes,
        request_id=str(context.get("requestId", "")),
    )


def to_proxy(response: Response) -> dict[str, Any]:
    return {
        "statusCode": response.status,
        "headers": {"Content-Type": response.content_type, "Cache-Control": "no-store", **response.headers},
        "body": response.body,
        "isBase64Encoded": False,
    }
