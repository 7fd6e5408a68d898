"""The API's front door and problem documents, over the fakes: routing errors, scopes before validation,
body parsing, RFC 9457 problems, the access log."""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from petrel.api.http import PROBLEM_JSON, body_bytes, problem_body, request_problem
from petrel.entrypoints.api import create_api
from petrel.errors import MalformedBody, PetrelError
from petrel.observability import Telemetry, telemetry
from tests.fakes import FakeWorld, Seeded
from tests.unit.api_fakes import Api, FakeApiContainer, LambdaContext, event


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


@pytest.fixture
def api(world: FakeWorld) -> Api:
    return Api(world)


def _problem(result: dict[str, Any], status: int) -> dict[str, Any]:
    assert result["statusCode"] == status, result
    assert result["headers"]["Content-Type"] == PROBLEM_JSON
    assert result["headers"]["Cache-Control"] == "no-store"
    body: dict[str, Any] = json.loads(result["body"])
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert body["type"].startswith("urn:petrel:problem:")
    return body


def test_unknown_path_is_a_404_problem(api: Api) -> None:
    body = _problem(api(event("GET", "/v1/nothing-here")), 404)
    assert body["type"] == "urn:petrel:problem:not-found"
    assert body["title"] == "Not found"
    assert body["instance"] == "/v1/nothing-here"
    assert "/v1/nothing-here" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/emails"), ("PUT", "/v1/emails/batch"), ("POST", "/v1/openapi.json"), ("HEAD", "/v1/docs")],
)
def test_wrong_method_is_a_405_problem(api: Api, method: str, path: str) -> None:
    body = _problem(api(event(method, path)), 405)
    assert body["type"] == "urn:petrel:problem:method-not-allowed"
    assert method in body["detail"]


def test_no_tenant_context_is_401(api: Api) -> None:
    body = _problem(api(event("GET", "/v1/emails", tenant_id=None)), 401)
    assert body["type"] == "urn:petrel:problem:unauthorized"


def test_a_missing_scope_is_403_before_the_body_is_validated(api: Api, world: FakeWorld) -> None:
    body = _problem(api(event("POST", "/v1/emails", {"to": "x"}, scopes="read")), 403)
    assert body["detail"] == "this API key does not have the 'send' scope"
    assert world.messages.emails == {}


def test_malformed_json_is_400(api: Api, seeded: Seeded) -> None:
    body = _problem(api(event("POST", "/v1/emails", "{not json", tenant_id=seeded.tenant.tenant_id)), 400)
    assert body["type"] == "urn:petrel:problem:malformed-body"


def test_a_body_that_is_not_utf8_is_400(api: Api, seeded: Seeded) -> None:
    raw = '{"from": "jane@example.com", "subject": "caf\xe9"}'.encode("latin-1")
    request = event("POST", "/v1/emails", base64.b64encode(raw).decode(), tenant_id=seeded.tenant.tenant_id)
    request["isBase64Encoded"] = True
    body = _problem(api(request), 400)
    assert "UTF-8" in body["detail"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_a_body_not_sent_as_json_is_400(api: Api, seeded: Seeded, content_type: str) -> None:
    request = event("POST", "/v1/emails", "to=bob", tenant_id=seeded.tenant.tenant_id)
    request["headers"] = {"content-type": content_type}
    assert _problem(api(request), 400)["type"] == "urn:petrel:problem:malformed-body"


def test_a_json_based_media_type_is_json(api: Api, seeded: Seeded) -> None:
    email = {"from": "jane@example.com", "to": "bob@example.org", "subject": "Hi", "text": "x"}
    request = event("POST", "/v1/emails", email, tenant_id=seeded.tenant.tenant_id)
    request["headers"] = {"Content-Type": "application/vnd.petrel+json; charset=utf-8"}
    assert api(request)["statusCode"] == 202


def test_validation_failure_is_422_with_pointers(api: Api, seeded: Seeded) -> None:
    bad = {"from": "nope", "to": [], "subject": "", "extra": 1}
    body = _problem(api(event("POST", "/v1/emails", bad, tenant_id=seeded.tenant.tenant_id)), 422)
    assert body["type"] == "urn:petrel:problem:invalid-request"
    pointers = {e["pointer"] for e in body["errors"]}
    assert {"/from", "/subject", "/extra"} <= pointers
    assert all(set(e) == {"pointer", "detail"} for e in body["errors"])
    assert not any(e["detail"].startswith("Value error") for e in body["errors"])


def test_an_empty_body_is_a_422_on_the_whole_body(api: Api, seeded: Seeded) -> None:
    body = _problem(api(event("POST", "/v1/suppressions", None, tenant_id=seeded.tenant.tenant_id)), 422)
    assert [e["pointer"] for e in body["errors"]] == [""]


def test_batch_body_must_be_a_list_of_emails(api: Api, seeded: Seeded) -> None:
    tenant_id = seeded.tenant.tenant_id
    not_a_list_of_1_to_100: list[object] = [[], [{}] * 101, {"from": "jane@example.com"}]
    for emails in not_a_list_of_1_to_100:
        body = _problem(api(event("POST", "/v1/emails/batch", {"emails": emails}, tenant_id=tenant_id)), 422)
        assert body["errors"] == [{"pointer": "/emails", "detail": "a list of 1 to 100 emails"}]
    body = _problem(api(event("POST", "/v1/emails/batch", {"emails": "x", "more": 1}, tenant_id=tenant_id)), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/more"]


def test_query_and_header_errors_name_their_parameter(api: Api, seeded: Seeded) -> None:
    result = api(event("GET", "/v1/suppressions", tenant_id=seeded.tenant.tenant_id, query={"limit": "0"}))
    assert [e["parameter"] for e in _problem(result, 422)["errors"]] == ["limit"]
    email = {"from": "jane@example.com", "to": "bob@example.org", "subject": "Hi", "text": "x"}
    request = event("POST", "/v1/emails", email, tenant_id=seeded.tenant.tenant_id, headers={"Idempotency-Key": ""})
    assert [e["parameter"] for e in _problem(api(request), 422)["errors"]] == ["Idempotency-Key"]


def test_unexpected_errors_are_a_500_problem_without_details(
    world: FakeWorld, seeded: Seeded, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged with its traceback, answered without it."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(world.messages, "list_messages", broken)
    body = _problem(Api(world)(event("GET", "/v1/emails", tenant_id=seeded.tenant.tenant_id)), 500)
    assert "secret internals" not in json.dumps(body)
    assert "req-1" in body["detail"]
    [logged] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged.exc_info is not None and "secret internals" in str(logged.exc_info[1])


def test_openapi_and_docs_are_public(api: Api) -> None:
    result = api(event("GET", "/v1/openapi.json", tenant_id=None))
    assert result["statusCode"] == 200 and result["headers"]["Content-Type"] == "application/json"
    assert json.loads(result["body"])["openapi"] == "3.1.0"
    assert result["headers"]["Cache-Control"] == "no-store"
    docs = api(event("GET", "/v1/docs", tenant_id=None))
    assert docs["statusCode"] == 200 and docs["headers"]["Content-Type"] == "text/html"
    assert "SwaggerUIBundle" in docs["body"] and '"/v1/emails/batch"' in docs["body"]


def test_every_request_leaves_one_access_log_line(api: Api, seeded: Seeded, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="petrel-api"):
        api(event("GET", "/v1/emails", tenant_id=seeded.tenant.tenant_id, query={"limit": "5"}))
        api(event("GET", "/v1/nothing", tenant_id=seeded.tenant.tenant_id))

    access = [r.__dict__ for r in caplog.records if r.name == "petrel-api" and r.getMessage() == "request"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("GET", "/v1/emails", 200),
        ("GET", "/v1/nothing", 404),
    ]
    assert all(a["tenant_id"] == seeded.tenant.tenant_id and a["request_id"] == "req-1" for a in access)
    assert all(a["duration_ms"] >= 0 for a in access)


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


def test_request_problem_mixes_pointers_and_parameters() -> None:
    problem = request_problem(
        [
            {"type": "missing", "loc": ("body", "to", 0), "msg": "Value error, bad"},
            {"type": "int_parsing", "loc": ("query", "limit"), "msg": "not a number"},
            {"type": "string_too_long", "loc": ("header", "idempotency-key"), "msg": "too long"},
        ]
    )
    assert problem.status == 422
    assert problem.extra["errors"] == [
        {"pointer": "/to/0", "detail": "bad"},
        {"parameter": "limit", "detail": "not a number"},
        {"parameter": "Idempotency-Key", "detail": "too long"},
    ]
    assert isinstance(request_problem([{"type": "json_invalid", "loc": ("body", 3), "msg": "x"}]), MalformedBody)


def test_body_bytes_round_trip() -> None:
    raw = b'{"a": "\xff"}'
    assert body_bytes({"body": base64.b64encode(raw).decode(), "isBase64Encoded": True}) == raw
    assert body_bytes({"body": '{"a": 1}'}) == b'{"a": 1}'
    assert body_bytes({"body": None}) == b""


def test_deployed_the_function_writes_no_access_line_and_its_lines_name_the_request(
    world: FakeWorld, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployed, the stage's access log is the access log (infra/access_log.py): the function writes no
    line of its own for a request, and an error's line names API Gateway's request id to find it by."""
    stream = io.StringIO()
    logger = Logger(service=f"petrel-api-{uuid.uuid4().hex[:8]}", stream=stream)
    quiet = Telemetry(function="api", logger=logger, metrics=telemetry("api").metrics)
    handler = create_api(FakeApiContainer(world, telemetry=quiet, access_log=False))
    tenant_id = seeded.tenant.tenant_id

    assert handler(event("GET", "/v1/emails", tenant_id=tenant_id), LambdaContext())["statusCode"] == 200
    assert stream.getvalue() == ""  # nothing for a request that went well

    def broken(tenant_id: str) -> None:
        raise RuntimeError("the store is down")

    monkeypatch.setattr(world.tenants, "get_tenant", broken)
    email = {"from": "a@example.com", "to": "b@example.org", "subject": "Hi", "text": "Hello"}
    failed = handler(event("POST", "/v1/emails", email, tenant_id=tenant_id), LambdaContext())

    assert failed["statusCode"] == 500
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["unhandled error"]
    assert lines[0]["request_id"] == "req-1" and lines[0]["level"] == "ERROR"
