"""RFC 9457 problem documents and the proxy-event plumbing around Powertools' resolver.

Nothing here imports Powertools: the infra (gateway responses) and the local front build the same
problem documents from it without paying for the event handler's import.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from petrel.errors import InvalidRequest, MalformedBody, PetrelError

PROBLEM_TYPE_BASE = "urn:petrel:problem:"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
# The request headers the API reads, as its documentation spells them (problems name them so).
HEADER_NAMES = {"idempotency-key": "Idempotency-Key", "authorization": "Authorization"}


def validation_problem(exc: ValidationError, what: str = "request body") -> InvalidRequest:
    """A 422 listing every failure with a JSON pointer into the body (RFC 6901)."""
    return body_problem([(tuple(err["loc"]), str(err["msg"])) for err in exc.errors()], what)


def body_problem(failures: Sequence[tuple[Sequence[str | int], str]], what: str = "request body") -> InvalidRequest:
    """A 422 from (location in the body, message) pairs; pydantic's "Value error, " prefix dropped."""
    errors = [{"pointer": json_pointer(loc), "detail": msg.removeprefix("Value error, ")} for loc, msg in failures]
    summary = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors[:3])
    return InvalidRequest(f"the {what} is not valid: {summary}", errors=errors)


def request_problem(errors: Sequence[Mapping[str, Any]]) -> PetrelError:
    """What Powertools' request validation found, as Petrel's problem: a body that is not JSON is a
    400; otherwise a 422 whose `errors` point into the body (`pointer`) or name a query, path or
    header parameter (`parameter`), every failure listed."""
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error") or "not JSON"
            return MalformedBody(f"the body is not valid JSON: {reason}")
    body = [(tuple(e["loc"][1:]), str(e["msg"])) for e in errors if e["loc"][:1] == ("body",)]
    params = [
        {"parameter": _parameter_name(e["loc"]), "detail": str(e["msg"]).removeprefix("Value error, ")}
        for e in errors
        if e["loc"][:1] != ("body",)
    ]
    if not params:
        return body_problem(body)
    problem = body_problem(body) if body else InvalidRequest("the request is not valid")
    listed: list[dict[str, str]] = problem.extra["errors"] + params
    summary = "; ".join(f"{e.get('pointer', e.get('parameter'))}: {e['detail']}" for e in listed[:3])
    return InvalidRequest(f"the request is not valid: {summary}", errors=listed)


def _parameter_name(loc: Sequence[Any]) -> str:
    name = str(loc[1]) if len(loc) > 1 else str(loc[0])
    return HEADER_NAMES.get(name.lower(), name) if loc[0] == "header" else name


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


def proxy_response(
    status: int, body: str, content_type: str = JSON, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway proxy response: single-value headers, never cached by clients or proxies."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_type, "Cache-Control": "no-store", **(headers or {})},
        "body": body,
        "isBase64Encoded": False,
    }


def problem_response(error: PetrelError, instance: str | None = None) -> dict[str, Any]:
    return proxy_response(error.status, json.dumps(problem_body(error, instance)), PROBLEM_JSON, error.headers())


def single_value_headers(result: Mapping[str, Any]) -> dict[str, str]:
    """The headers of a proxy response, whichever of the two forms it used (the last value wins)."""
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if values:
            headers[str(name)] = str(values[-1])
    return headers


def access_fields(event: Mapping[str, Any], result: Mapping[str, Any], started: float) -> dict[str, Any]:
    """The fields of a request's one access log line, for both APIs (each adds who called): method,
    path, status, duration since `started` (time.perf_counter) and API Gateway's request id."""
    return {
        "method": str(event.get("httpMethod", "")).upper(),
        "path": event.get("path"),
        "status": result["statusCode"],
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "request_id": (event.get("requestContext") or {}).get("requestId"),
    }


def body_bytes(event: Mapping[str, Any]) -> bytes:
    """The request body as the client sent it: base64-decoded when the gateway encoded it. A text
    body is encoded back with `surrogateescape`, so bytes that were not UTF-8 survive the round trip."""
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(raw)
    return str(raw).encode("utf-8", "surrogateescape")


def media_type(headers: Mapping[str, Any]) -> str:
    """The request's media type, lower-cased, without parameters ("" when it names none)."""
    for name, value in headers.items():
        if str(name).lower() == "content-type":
            return str(value).split(";")[0].strip().lower()
    return ""


def is_json(media: str) -> bool:
    """JSON, or a JSON-based type (`+json`); no content type at all counts as JSON."""
    return not media or media == JSON or media.endswith("+json")
