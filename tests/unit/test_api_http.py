"""api.http and api.routes without AWS: routing, RFC 9457 problems, request parsing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from petrel import container
from petrel.api import routes
from petrel.api.http import PROBLEM_JSON, Router, parse_event, problem_body
from petrel.errors import MethodNotAllowed, NotFound, PetrelError


def _event(method: str, path: str, body: Any = None, *, scopes: str | None = "emails:send emails:read", **extra: Any):
    context: dict[str, Any] = {"requestId": "req-1", "stage": "api"}
    if scopes is not None:
        context["authorizer"] = {"tenant_id": "tn_a", "key_id": "key_1", "scopes": scopes}
    event: dict[str, Any] = {
        "resource": "/v1/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "queryStringParameters": None,
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": context,
    }
    event.update(extra)
    return event


def _problem(result: dict[str, Any], status: int) -> dict[str, Any]:
    assert result["statusCode"] == status, result
    assert result["headers"]["Content-Type"] == PROBLEM_JSON
    body: dict[str, Any] = json.loads(result["body"])
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert body["type"].startswith("urn:petrel:problem:")
    return body


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """These routes must answer before anything would touch AWS."""

    def refuse() -> None:
        raise AssertionError("the container was used")

    monkeypatch.setattr(container, "api", refuse)


def test_unknown_path_is_a_404_problem() -> None:
    body = _problem(routes.dispatch(_event("GET", "/v1/nothing-here")), 404)
    assert body["type"] == "urn:petrel:problem:not-found"
    assert body["title"] == "Not found"
    assert body["instance"] == "/v1/nothing-here"
    assert "/v1/nothing-here" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", "/v1/emails"), ("PUT", "/v1/emails/batch"), ("POST", "/v1/openapi.json")]
)
def test_wrong_method_is_a_405_problem(method: str, path: str) -> None:
    body = _problem(routes.dispatch(_event(method, path)), 405)
    assert body["type"] == "urn:petrel:problem:method-not-allowed"
    assert method in body["detail"]


def test_no_tenant_context_is_401() -> None:
    body = _problem(routes.dispatch(_event("GET", "/v1/emails", scopes=None)), 401)
    assert body["type"] == "urn:petrel:problem:unauthorized"


def test_missing_scope_is_403() -> None:
    body = _problem(routes.dispatch(_event("POST", "/v1/emails", {"to": "x"}, scopes="emails:read")), 403)
    assert "emails:send" in body["detail"]


def test_malformed_json_is_400() -> None:
    body = _problem(routes.dispatch(_event("POST", "/v1/emails", "{not json")), 400)
    assert body["type"] == "urn:petrel:problem:malformed-body"


def test_wrong_content_type_is_400() -> None:
    event = _event("POST", "/v1/emails", "to=bob")
    event["headers"] = {"content-type": "application/x-www-form-urlencoded"}
    assert _problem(routes.dispatch(event), 400)["type"] == "urn:petrel:problem:malformed-body"


def test_validation_failure_is_422_with_pointers() -> None:
    body = _problem(
        routes.dispatch(_event("POST", "/v1/emails", {"from": "nope", "to": [], "subject": "", "extra": 1})), 422
    )
    assert body["type"] == "urn:petrel:problem:invalid-request"
    pointers = {e["pointer"] for e in body["errors"]}
    assert {"/from", "/subject", "/extra"} <= pointers
    assert all(set(e) == {"pointer", "detail"} for e in body["errors"])
    assert not any(e["detail"].startswith("Value error") for e in body["errors"])


def test_batch_body_must_be_a_list_of_emails() -> None:
    body = _problem(routes.dispatch(_event("POST", "/v1/emails/batch", {"emails": []})), 422)
    assert body["errors"] == [{"pointer": "/emails", "detail": "a list of 1 to 100 emails"}]


def test_unexpected_errors_are_a_500_problem_without_details(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(container, "api", broken)
    body = _problem(routes.dispatch(_event("GET", "/v1/emails")), 500)
    assert "secret internals" not in json.dumps(body)
    assert "req-1" in body["detail"]


def test_openapi_route_is_public() -> None:
    result = routes.dispatch(_event("GET", "/v1/openapi.json", scopes=None))
    assert result["statusCode"] == 200 and result["headers"]["Content-Type"] == "application/json"
    assert json.loads(result["body"])["openapi"] == "3.1.0"
    assert result["headers"]["Cache-Control"] == "no-store"


def test_parse_event() -> None:
    raw = json.dumps({"a": 1}).encode()
    event = _event("post", "/v1/emails", base64.b64encode(raw).decode(), isBase64Encoded=True)
    event["headers"] = {"Idempotency-Key": "k1", "X-Other": "v"}
    event["queryStringParameters"] = {"limit": "5"}

    request = parse_event(event)

    assert request.method == "POST" and request.body == raw and request.json() == {"a": 1}
    assert request.header("idempotency-key") == "k1" and request.header("IDEMPOTENCY-KEY") == "k1"
    assert request.query == {"limit": "5"}
    assert request.tenant_id == "tn_a" and request.scopes == frozenset({"emails:send", "emails:read"})
    assert request.request_id == "req-1"


def test_router_matching() -> None:
    router = Router()
    for route in routes.router.routes:
        router.add(route)

    route, params = router.match("GET", "/v1/emails/em_123")
    assert route.handler is routes.get_email and params == {"id": "em_123"}
    assert router.match("GET", "/v1/emails")[0].handler is routes.list_emails
    assert router.match("POST", "/v1/emails/batch")[0].handler is routes.send_batch
    with pytest.raises(NotFound):
        router.match("GET", "/v1/emails/em_1/extra")
    with pytest.raises(MethodNotAllowed):
        router.match("PATCH", "/v1/emails/em_1")


def test_problem_body_carries_extra_members() -> None:
    class Teapot(PetrelError):
        status = 418
        slug = "teapot"
        title = "I'm a teapot"

    body = problem_body(Teapot("short and stout", extra={"spout": True}), "/v1/tea")
    assert body == {
        "type": "urn:petrel:problem:teapot",
        "title": "I'm a teapot",
        "status": 418,
        "detail": "short and stout",
        "instance": "/v1/tea",
        "spout": True,
    }
