"""The committed openapi.json is exactly what the routes and models generate."""

from __future__ import annotations

import json
from pathlib import Path

from petrel.api.openapi import document
from petrel.api.routes import router

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


def test_committed_document_matches_the_code() -> None:
    assert COMMITTED.exists(), "openapi.json is missing at the repository root: run `make openapi`"
    committed = json.dumps(json.loads(COMMITTED.read_text()), indent=2, sort_keys=True)
    generated = json.dumps(document(), indent=2, sort_keys=True)
    assert committed == generated, "openapi.json is out of date with the API models: run `make openapi` and commit it"


def test_every_route_is_documented() -> None:
    paths = document()["paths"]
    for route in router.routes:
        operation = paths[route.path][route.method.lower()]
        assert str(route.success) in operation["responses"]
        assert operation["operationId"] == route.handler.__name__


def test_send_email_schema_comes_from_the_request_model() -> None:
    doc = document()
    body = doc["paths"]["/v1/emails"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    schema = doc["components"]["schemas"][name]
    assert "from" in schema["properties"] and "from_" not in schema["properties"]
    assert schema["additionalProperties"] is False
    assert {"from", "subject"} <= set(schema["required"])
