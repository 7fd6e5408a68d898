"""The API's request-body limit: a 413 problem from the function, and the same from the local front."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from local.front import ApiFront
from petrel.api.http import PROBLEM_JSON
from petrel.models.api import MAX_REQUEST_BYTES
from tests.fakes import FakeWorld
from tests.unit.api_fakes import Api

# Lambda's limit on a synchronous invocation's event; API Gateway's own limit on a body.
LAMBDA_SYNC_PAYLOAD_BYTES = 6_291_456
API_GATEWAY_BODY_BYTES = 10 * 1024 * 1024


def _event(body: bytes) -> dict[str, Any]:
    return {
        "resource": "/v1/{proxy+}",
        "path": "/v1/emails",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": True,
        "requestContext": {
            "requestId": "req-1",
            "authorizer": {"tenant_id": "tn_a", "scopes": "send"},
        },
    }


def test_the_limit_fits_lambda_once_base64_encoded_with_room_for_headers() -> None:
    event = json.dumps(_event(b"x" * MAX_REQUEST_BYTES)).encode()
    # API Gateway REST takes at most 10,240 bytes of headers; the event holds them twice (single and
    # multi-value) with the request context beside them.
    assert len(event) + 2 * 10_240 + 4096 < LAMBDA_SYNC_PAYLOAD_BYTES
    assert MAX_REQUEST_BYTES < API_GATEWAY_BODY_BYTES


def test_a_body_over_the_limit_is_a_413_problem(world: FakeWorld) -> None:
    result = Api(world)(_event(b"{" + b" " * MAX_REQUEST_BYTES + b"}"))

    assert result["statusCode"] == 413
    assert result["headers"]["Content-Type"] == PROBLEM_JSON
    problem = json.loads(result["body"])
    assert problem["type"] == "urn:petrel:problem:request-too-large"
    assert str(MAX_REQUEST_BYTES) in problem["detail"] and "/v1/attachments" in problem["detail"]


def test_a_body_at_the_limit_reaches_the_route(world: FakeWorld) -> None:
    # Not valid JSON: the route answers 400, so the size check let it through.
    result = Api(world)(_event(b"{" + b" " * (MAX_REQUEST_BYTES - 1)))
    assert result["statusCode"] == 400


class _Api:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": "{}"}


def _allow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "principalId": "key_1",
        "policyDocument": {"Statement": [{"Effect": "Allow"}]},
        "context": {"tenant_id": "tn_a", "scopes": "send"},
    }


@pytest.fixture
def front() -> Iterator[tuple[ApiFront, _Api]]:
    api = _Api()
    server = ApiFront("127.0.0.1", 0, _allow, api)
    server.start()
    yield server, api
    server.stop()


def _post(front: ApiFront, body: bytes) -> tuple[int, str, dict[str, Any]]:
    host, port = front.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/emails", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    content_type = response.getheader("Content-Type") or ""
    connection.close()
    return response.status, content_type, payload


def test_the_local_front_refuses_the_same_bodies_with_the_same_problem(front: tuple[ApiFront, _Api]) -> None:
    server, api = front
    status, content_type, problem = _post(server, b" " * (MAX_REQUEST_BYTES + 1))

    assert (status, content_type) == (413, PROBLEM_JSON)
    assert problem["type"] == "urn:petrel:problem:request-too-large" and problem["status"] == 413
    assert api.events == []  # never reached the function


def test_the_local_front_passes_bodies_base64_encoded_as_deployed(front: tuple[ApiFront, _Api]) -> None:
    server, api = front
    body = json.dumps({"subject": "caf\u00e9 \u2603"}).encode()

    assert _post(server, body)[0] == 202
    [event] = api.events
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
