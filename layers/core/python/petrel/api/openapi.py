"""The OpenAPI 3.1 document, generated from the routes and the same models that validate requests."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from petrel import __version__
from petrel.api.http import PROBLEM_JSON
from petrel.api.routes import router
from petrel.models.api import Problem

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "Malformed body",
    "401": "Missing or invalid API key",
    "403": "Missing scope",
    "404": "Not found",
    "409": "Idempotency-Key conflict or request in flight",
    "413": "Message too large",
    "422": "Validation failed",
}


@cache
def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [Problem]
    for route in router.routes:
        models += [m for m in (route.request_model, route.response_model) if m is not None and m not in models]
    refs, schema = models_json_schema(
        [
            (m, "validation" if m is not None and any(r.request_model is m for r in router.routes) else "serialization")
            for m in models
        ],
        ref_template=_REF,
    )
    problem_ref = {"$ref": _REF.format(model="Problem")}
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                str(route.success): {
                    "description": route.summary,
                    "content": {"application/json": {"schema": refs[(route.response_model, "serialization")]}}
                    if route.response_model
                    else {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
        if route.authenticated:
            operation["security"] = [{"bearer": []}]
            operation["responses"].update(
                {
                    code: {"description": text, "content": {PROBLEM_JSON: {"schema": problem_ref}}}
                    for code, text in _ERRORS.items()
                }
            )
        else:
            operation["security"] = []
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.pattern.groupindex
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}
            for name, kind, text in route.query
        ]
        if route.idempotent:
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                    "description": "Replays the first response for 24 hours; another body under the same key is a 409",
                }
            )
        if parameters:
            operation["parameters"] = parameters
        if route.request_model is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(route.request_model, "validation")]}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Petrel",
            "version": __version__,
            "description": "Send email through your own MailU servers.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A Petrel API key"}},
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(document(), indent=2, sort_keys=True))
