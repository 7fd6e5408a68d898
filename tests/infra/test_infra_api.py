"""The REST API: authorizer, routes, stage, access logs and problem+json gateway responses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from petrel.api.openapi import PUBLIC_PATHS

pytestmark = pytest.mark.infra

OPENAPI_DOCUMENT = Path(__file__).resolve().parents[2] / "openapi.json"

# Tenant routes the api function serves (DESIGN.md section 4), each behind the tenant authorizer.
TENANT_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/emails"),
    ("POST", "/v1/emails/batch"),
    ("GET", "/v1/emails"),
    ("GET", "/v1/emails/{id}"),
    ("DELETE", "/v1/emails/{id}"),
    ("GET", "/v1/suppressions"),
    ("POST", "/v1/suppressions"),
    ("GET", "/v1/suppressions/{email}"),
    ("DELETE", "/v1/suppressions/{email}"),
    ("GET", "/v1/inbound"),
    ("POST", "/v1/inbound/raw"),
    ("GET", "/v1/inbound/{id}"),
)
_SAMPLE_PARAMETERS = {"id": "01JD0000000000000000000000", "email": "someone@example.com"}


def _resource_id(resources_of: Any, path_part: str) -> str:
    matches: list[str] = [
        lid for lid, r in resources_of("AWS::ApiGateway::Resource").items() if r["Properties"]["PathPart"] == path_part
    ]
    [resource_id] = matches
    return resource_id


def _method(resources_of: Any, path_part: str) -> dict[str, Any]:
    resource_id = _resource_id(resources_of, path_part)
    methods: list[dict[str, Any]] = [
        m["Properties"]
        for m in resources_of("AWS::ApiGateway::Method").values()
        if m["Properties"]["ResourceId"] == {"Ref": resource_id}
    ]
    [method] = methods
    return method


def test_request_authorizer_reads_the_authorization_header(template: Template) -> None:
    template.resource_count_is("AWS::ApiGateway::Authorizer", 1)
    template.has_resource_properties(
        "AWS::ApiGateway::Authorizer",
        {
            "Type": "REQUEST",
            "IdentitySource": "method.request.header.Authorization",
            "AuthorizerResultTtlInSeconds": 60,
        },
    )


def test_proxy_route_uses_the_authorizer(resources_of: Any) -> None:
    [authorizer_id] = resources_of("AWS::ApiGateway::Authorizer")
    v1 = _resource_id(resources_of, "v1")
    proxy_id = _resource_id(resources_of, "{proxy+}")
    assert resources_of("AWS::ApiGateway::Resource")[proxy_id]["Properties"]["ParentId"] == {"Ref": v1}
    method = _method(resources_of, "{proxy+}")
    assert method["HttpMethod"] == "ANY"
    assert method["AuthorizationType"] == "CUSTOM"
    assert method["AuthorizerId"] == {"Ref": authorizer_id}
    assert method["Integration"]["Type"] == "AWS_PROXY"
    assert method["RequestParameters"] == {"method.request.header.Authorization": True}
    assert "RequestValidatorId" in method


@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS))
def test_the_openapi_document_and_swagger_ui_are_public(resources_of: Any, path: str) -> None:
    part = path.removeprefix("/v1/")
    resource = _resource_id(resources_of, part)
    assert resources_of("AWS::ApiGateway::Resource")[resource]["Properties"]["ParentId"] == {
        "Ref": _resource_id(resources_of, "v1")
    }
    method = _method(resources_of, part)
    assert method["HttpMethod"] == "GET"
    assert method["AuthorizationType"] == "NONE"
    assert "AuthorizerId" not in method
    _assert_serves(resources_of, "GET", path, authenticated=False)


def test_the_public_paths_include_the_document_and_swagger_ui() -> None:
    assert {"/v1/openapi.json", "/v1/docs"} <= PUBLIC_PATHS


def test_only_the_proxy_and_the_public_methods(template: Template) -> None:
    template.resource_count_is("AWS::ApiGateway::Method", 1 + len(PUBLIC_PATHS))


def test_stage_is_api_with_access_logs(template: Template, resources_of: Any) -> None:
    [stage] = resources_of("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "api"
    log_group_id = props["AccessLogSetting"]["DestinationArn"]["Fn::GetAtt"][0]
    assert resources_of("AWS::Logs::LogGroup")[log_group_id]["Properties"]["RetentionInDays"] > 0
    fields = json.loads(props["AccessLogSetting"]["Format"])
    assert fields["requestId"] == "$context.requestId"
    [settings] = props["MethodSettings"]
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "ERROR"
    template.has_resource_properties("AWS::ApiGateway::RestApi", {"EndpointConfiguration": {"Types": ["REGIONAL"]}})


def test_gateway_responses_are_problem_json(resources_of: Any) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in resources_of("AWS::ApiGateway::GatewayResponse").values()
    }
    assert set(responses) == {"UNAUTHORIZED", "ACCESS_DENIED", "REQUEST_TOO_LARGE", "DEFAULT_4XX", "DEFAULT_5XX"}
    for response_type, props in responses.items():
        assert props["ResponseParameters"] == {"gatewayresponse.header.Content-Type": "'application/problem+json'"}, (
            response_type
        )
        body = props["ResponseTemplates"]["application/json"]
        # Fill in what API Gateway substitutes, then the body must be an RFC 9457 problem.
        rendered = body.replace("$context.error.messageString", '"Unauthorized"').replace("$context.requestId", "r-1")
        problem = json.loads(rendered)
        assert problem["type"] == (
            "urn:petrel:problem:request-too-large" if response_type == "REQUEST_TOO_LARGE" else "about:blank"
        )
        assert isinstance(problem["title"], str) and problem["title"]
        assert problem["detail"] == "Unauthorized"
        if "status" in problem:
            assert str(problem["status"]) == props["StatusCode"]
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert responses["ACCESS_DENIED"]["StatusCode"] == "403"
    # A body over API Gateway's own 10 MB: the same problem the api function gives over its limit.
    assert responses["REQUEST_TOO_LARGE"]["StatusCode"] == "413"


def test_api_url_output(template: Template) -> None:
    template.has_output("ApiUrl", {"Value": Match.any_value()})


def _route(resources_of: Any, method: str, path: str) -> dict[str, Any] | None:
    """The method API Gateway runs for `method path`, or None (it answers 403 itself).

    API Gateway's matching: at each level a literal path part beats a `{parameter}`, which beats a
    greedy `{name+}` (which takes the rest of the path); then the resource's own method or its `ANY`.
    A resource that matches but lacks the method does not fall back to a less specific one.
    """
    resources = resources_of("AWS::ApiGateway::Resource")
    children: dict[str | None, list[str]] = {}
    for lid, resource in resources.items():
        parent = resource["Properties"]["ParentId"]
        children.setdefault(parent.get("Ref"), []).append(lid)  # the root is a GetAtt, not a Ref

    def part(lid: str) -> str:
        value: str = resources[lid]["Properties"]["PathPart"]
        return value

    def match(node: str | None, segments: list[str]) -> str | None:
        if not segments:
            return node
        kids = children.get(node, [])
        literal = [k for k in kids if part(k) == segments[0]]
        single = [k for k in kids if part(k).startswith("{") and not part(k).endswith("+}")]
        for kid in literal + single:
            found = match(kid, segments[1:])
            if found is not None:
                return found
        greedy = [k for k in kids if part(k).endswith("+}")]
        return greedy[0] if greedy else None

    concrete = re.sub(r"\{(\w+)\}", lambda m: _SAMPLE_PARAMETERS[m.group(1)], path)
    resource_id = match(None, concrete.strip("/").split("/"))
    if resource_id is None:
        return None
    methods = {
        m["Properties"]["HttpMethod"]: m["Properties"]
        for m in resources_of("AWS::ApiGateway::Method").values()
        if m["Properties"]["ResourceId"] == {"Ref": resource_id}
    }
    return methods.get(method, methods.get("ANY"))


def _api_function_id(resources_of: Any) -> str:
    [function_id] = [
        lid
        for lid, f in resources_of("AWS::Lambda::Function").items()
        if f["Properties"]["FunctionName"] == "petrel-dev-api"
    ]
    return function_id


def _assert_serves(resources_of: Any, method: str, path: str, *, authenticated: bool) -> None:
    found = _route(resources_of, method, path)
    assert found is not None, f"API Gateway has no method for {method} {path}"
    assert found["Integration"]["Type"] == "AWS_PROXY"
    assert {"Fn::GetAtt": [_api_function_id(resources_of), "Arn"]} in found["Integration"]["Uri"]["Fn::Join"][1], (
        f"{method} {path} does not reach the api function"
    )
    if authenticated:
        [authorizer_id] = resources_of("AWS::ApiGateway::Authorizer")
        assert found["AuthorizationType"] == "CUSTOM", f"{method} {path}"
        assert found["AuthorizerId"] == {"Ref": authorizer_id}, f"{method} {path}"
    else:
        assert found["AuthorizationType"] == "NONE", f"{method} {path}"


@pytest.mark.parametrize(("method", "path"), TENANT_ROUTES)
def test_tenant_route_reaches_the_api_function_through_the_authorizer(
    resources_of: Any, method: str, path: str
) -> None:
    _assert_serves(resources_of, method, path, authenticated=True)


def test_every_documented_operation_is_served_with_its_security(resources_of: Any) -> None:
    """openapi.json is generated from the api function's route table (tests/unit/test_openapi.py)."""
    document = json.loads(OPENAPI_DOCUMENT.read_text())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            _assert_serves(resources_of, method.upper(), path, authenticated=bool(operation.get("security")))


def test_an_unknown_path_outside_v1_is_not_routed(resources_of: Any) -> None:
    assert _route(resources_of, "GET", "/v2/emails") is None
