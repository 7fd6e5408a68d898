"""Property-based tests of the API from its OpenAPI document (issue 7): no generated request, valid or
not, gets a 5xx. Schemathesis draws requests (bodies, path and query parameters, headers) from the
committed document's own schemas, in both modes (conforming and violating the schemas), and they run
through `petrel.api.routes.dispatch` in-process, with an authorizer context, over the fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from petrel import container
from petrel.api import routes
from petrel.api.openapi import document
from petrel.services.attachments import AttachmentDeps
from tests.fakes import FakeWorld

schema = schemathesis.openapi.from_dict(json.loads(json.dumps(document())))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


class _Api:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    def __getattr__(self, name: str) -> Any:
        if name == "submit":
            return self.world.submit_deps()
        if name == "attachments":
            return AttachmentDeps(blobs=self.world.blobs, clock=self.world.clock)
        if name == "cancel":
            return self.world.cancel_deps()
        return getattr(self.world, name)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeWorld]:
    world = FakeWorld()
    seeded = world.seed(domain="example.com")
    world.tenant_id = seeded.tenant.tenant_id  # type: ignore[attr-defined]
    patch = pytest.MonkeyPatch()
    patch.setattr(container, "api", lambda: _Api(world))
    yield world
    patch.undo()


def _event(case: Any, tenant_id: str) -> dict[str, Any]:
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    body = case.body
    if body is not None and not isinstance(body, (str, bytes)) and type(body).__name__ != "NotSet":
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
        "isBase64Encoded": False,
        "requestContext": {
            "requestId": "req-prop",
            "authorizer": {"tenant_id": tenant_id, "scopes": "emails:send emails:read"},
        },
    }


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, api: FakeWorld) -> None:
    result = routes.dispatch(_event(case, api.tenant_id))  # type: ignore[attr-defined]
    assert result["statusCode"] < 500, (case.method, case.formatted_path, result["body"])
    if result["statusCode"] >= 400:
        assert result["headers"]["Content-Type"] == "application/problem+json"
