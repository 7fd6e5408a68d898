"""Property-based tests of the API from its OpenAPI document (issue 7): no generated request, valid or
not, gets a 5xx. Schemathesis draws requests (bodies, path and query parameters, headers) from the
committed document's own schemas, in both modes (conforming and violating the schemas), and they run
through the API's handler (`create_api` over the in-memory fakes) in-process, with an authorizer context."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from petrel.api.openapi import document
from tests.fakes import FakeWorld
from tests.unit.api_fakes import Api


def _raw_message(_ctx: Any, value: Any) -> bytes:
    """POST /v1/inbound/raw's body: the drawn value as bytes, whatever it is (a message or not)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8", "surrogatepass")


schemathesis.serializer("message/rfc822")(_raw_message)


schema = schemathesis.openapi.from_dict(json.loads(json.dumps(document())))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[Api, str]]:
    world = FakeWorld()
    seeded = world.seed(domain="example.com")
    yield Api(world), seeded.tenant.tenant_id


def _event(case: Any, tenant_id: str) -> dict[str, Any]:
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    body = case.body
    binary = case.media_type == "message/rfc822"
    if binary and type(body).__name__ != "NotSet":  # API Gateway hands a binary body over base64-encoded
        headers.setdefault("Content-Type", "message/rfc822")
        body = base64.b64encode(_raw_message(None, body)).decode()
    elif body is not None and not isinstance(body, (str, bytes)) and type(body).__name__ != "NotSet":
        body = json.dumps(body)
        headers.setdefault("Content-Type", case.media_type or "application/json")
    elif type(body).__name__ == "NotSet":
        body = None
    elif isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return {
        "path": case.formatted_path,
        "httpMethod": case.method.upper(),
        "headers": headers,
        "queryStringParameters": {str(k): str(v) for k, v in (case.query or {}).items()} or None,
        "body": body,
        "isBase64Encoded": binary and body is not None,
        "requestContext": {
            "requestId": "req-prop",
            "authorizer": {"tenant_id": tenant_id, "scopes": "send read"},
        },
    }


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, api: tuple[Api, str]) -> None:
    handler, tenant_id = api
    result = handler(_event(case, tenant_id))
    assert result["statusCode"] < 500, (case.method, case.formatted_path, result["body"])
    if result["statusCode"] >= 400:
        assert result["headers"]["Content-Type"] == "application/problem+json"
