"""The REST API: authorizer, routes, stage, access logs and problem+json gateway responses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

pytestmark = pytest.mark.infra


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


def test_openapi_document_is_public(resources_of: Any) -> None:
    openapi = _resource_id(resources_of, "openapi.json")
    assert resources_of("AWS::ApiGateway::Resource")[openapi]["Properties"]["ParentId"] == {
        "Ref": _resource_id(resources_of, "v1")
    }
    method = _method(resources_of, "openapi.json")
    assert method["HttpMethod"] == "GET"
    assert method["AuthorizationType"] == "NONE"
    assert "AuthorizerId" not in method


def test_only_two_methods(template: Template) -> None:
    template.resource_count_is("AWS::ApiGateway::Method", 2)


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
    assert set(responses) == {"UNAUTHORIZED", "ACCESS_DENIED", "DEFAULT_4XX", "DEFAULT_5XX"}
    for response_type, props in responses.items():
        assert props["ResponseParameters"] == {"gatewayresponse.header.Content-Type": "'application/problem+json'"}, (
            response_type
        )
        body = props["ResponseTemplates"]["application/json"]
        # Fill in what API Gateway substitutes, then the body must be an RFC 9457 problem.
        rendered = body.replace("$context.error.messageString", '"Unauthorized"').replace("$context.requestId", "r-1")
        problem = json.loads(rendered)
        assert problem["type"] == "about:blank"
        assert isinstance(problem["title"], str) and problem["title"]
        assert problem["detail"] == "Unauthorized"
        if "status" in problem:
            assert str(problem["status"]) == props["StatusCode"]
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert responses["ACCESS_DENIED"]["StatusCode"] == "403"


def test_api_url_output(template: Template) -> None:
    template.has_output("ApiUrl", {"Value": Match.any_value()})
