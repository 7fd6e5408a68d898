"""The REST API: authorizer, routes, stage, access logs and problem+json gateway responses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.access_log import ACCESS_LOG_FIELDS, access_log_format, access_log_line
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
    ("POST", "/v1/domains"),
    ("GET", "/v1/domains"),
    ("GET", "/v1/domains/{domain}"),
    ("DELETE", "/v1/domains/{domain}"),
    ("POST", "/v1/domains/{domain}/verify"),
)
_SAMPLE_PARAMETERS = {"id": "01JD0000000000000000000000", "email": "someone@example.com", "domain": "example.com"}


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


def _child(resources_of: Any, parent_id: str, path_part: str) -> str:
    found: list[str] = [
        lid
        for lid, r in resources_of("AWS::ApiGateway::Resource").items()
        if r["Properties"]["ParentId"] == {"Ref": parent_id} and r["Properties"]["PathPart"] == path_part
    ]
    [resource_id] = found
    return resource_id


def _methods_of(resources_of: Any, resource_id: str) -> list[dict[str, Any]]:
    return [
        m["Properties"]
        for m in resources_of("AWS::ApiGateway::Method").values()
        if m["Properties"]["ResourceId"] == {"Ref": resource_id}
    ]


def test_proxy_route_uses_the_authorizer(resources_of: Any) -> None:
    [authorizer_id] = resources_of("AWS::ApiGateway::Authorizer")
    proxy_id = _child(resources_of, _resource_id(resources_of, "v1"), "{proxy+}")
    [method] = _methods_of(resources_of, proxy_id)
    assert method["HttpMethod"] == "ANY"
    assert method["AuthorizationType"] == "CUSTOM"
    assert method["AuthorizerId"] == {"Ref": authorizer_id}
    assert method["Integration"]["Type"] == "AWS_PROXY"
    assert method["RequestParameters"] == {"method.request.header.Authorization": True}
    assert "RequestValidatorId" in method
    assert method["ApiKeyRequired"] is True  # throttled by the tenant's usage plan


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


def test_only_the_proxies_and_the_public_methods(template: Template) -> None:
    """The tenant proxy, the admin proxy, and the public documents."""
    template.resource_count_is("AWS::ApiGateway::Method", 2 + len(PUBLIC_PATHS))


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
    assert set(responses) == {
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "MISSING_AUTHENTICATION_TOKEN",  # an admin request without a signature
        "INVALID_SIGNATURE",
        "EXPIRED_TOKEN",
        "REQUEST_TOO_LARGE",
        "THROTTLED",  # a tenant over its usage plan's throttle
        "QUOTA_EXCEEDED",  # or its quota
        "INVALID_API_KEY",  # a tenant not enrolled in any usage plan
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    }
    for response_type, props in responses.items():
        assert props["ResponseParameters"] == {"gatewayresponse.header.Content-Type": "'application/problem+json'"}, (
            response_type
        )
        body = props["ResponseTemplates"]["application/json"]
        # Fill in what API Gateway substitutes, then the body must be an RFC 9457 problem.
        rendered = body.replace("$context.error.messageString", '"Unauthorized"').replace("$context.requestId", "r-1")
        problem = json.loads(rendered)
        assert problem["type"] == {
            "REQUEST_TOO_LARGE": "urn:petrel:problem:request-too-large",
            "THROTTLED": "urn:petrel:problem:too-many-requests",
            "QUOTA_EXCEEDED": "urn:petrel:problem:too-many-requests",
        }.get(response_type, "about:blank")
        assert isinstance(problem["title"], str) and problem["title"]
        assert problem["detail"] == "Unauthorized"
        if "status" in problem:
            assert str(problem["status"]) == props["StatusCode"]
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    for response_type in ("ACCESS_DENIED", "MISSING_AUTHENTICATION_TOKEN", "INVALID_SIGNATURE", "EXPIRED_TOKEN"):
        assert responses[response_type]["StatusCode"] == "403", response_type
    # A body over API Gateway's own 10 MB: the same problem the api function gives over its limit.
    assert responses["REQUEST_TOO_LARGE"]["StatusCode"] == "413"
    assert responses["THROTTLED"]["StatusCode"] == responses["QUOTA_EXCEEDED"]["StatusCode"] == "429"
    assert responses["INVALID_API_KEY"]["StatusCode"] == "403"


def test_the_api_key_of_a_request_is_the_authorizers(resources_of: Any) -> None:
    [api] = resources_of("AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["ApiKeySourceType"] == "AUTHORIZER"


def test_one_usage_plan_per_api_plan_on_the_stage(resources_of: Any, config: Any) -> None:
    [stage_id] = resources_of("AWS::ApiGateway::Stage")
    [api_id] = resources_of("AWS::ApiGateway::RestApi")
    plans = {
        p["Properties"]["UsagePlanName"]: p["Properties"] for p in resources_of("AWS::ApiGateway::UsagePlan").values()
    }
    assert set(plans) == {f"petrel-dev-plan-{name}" for name in config.api_plans}
    for name, plan in config.api_plans.items():
        props = plans[f"petrel-dev-plan-{name}"]
        assert props["Throttle"] == {"RateLimit": plan.rate_per_second, "BurstLimit": plan.burst}
        assert ("Quota" in props) == (plan.requests_per_day is not None)
        [stage] = props["ApiStages"]
        assert stage["ApiId"] == {"Ref": api_id} and stage["Stage"] == {"Ref": stage_id}


def test_the_admin_function_knows_the_plans_and_may_enroll_keys_only(resources_of: Any, config: Any) -> None:
    admin_id = _function_id(resources_of, "petrel-dev-admin-api")
    [admin] = [f for i, f in resources_of("AWS::Lambda::Function").items() if i == admin_id]
    env = admin["Properties"]["Environment"]["Variables"]
    assert json.loads(env["PETREL_API_PLANS"]) == {n: f"petrel-dev-plan-{n}" for n in config.api_plans}
    assert env["PETREL_USAGE_KEY_PREFIX"] == "petrel-dev"
    statements = [
        st
        for policy in resources_of("AWS::IAM::Policy").values()
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(str(a).startswith("apigateway:") for a in _as_list(st["Action"]))
    ]
    actions = {a for st in statements for a in _as_list(st["Action"])}
    assert actions <= {"apigateway:GET", "apigateway:POST", "apigateway:DELETE"}
    resources = {json.dumps(r) for st in statements for r in _as_list(st["Resource"])}
    for resource in resources:
        assert any(part in resource for part in ("/apikeys", "/usageplans")), resource
        assert "/restapis" not in resource
    # Only the admin function's role holds them.
    [role] = {
        policy["Properties"]["Roles"][0]["Ref"]
        for policy in resources_of("AWS::IAM::Policy").values()
        if any(
            any(str(a).startswith("apigateway:") for a in _as_list(st["Action"]))
            for st in policy["Properties"]["PolicyDocument"]["Statement"]
        )
    }
    assert admin["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}


def test_the_authorizer_knows_the_usage_key_prefix(resources_of: Any) -> None:
    authorizer_id = _function_id(resources_of, "petrel-dev-authorizer")
    [authorizer] = [f for i, f in resources_of("AWS::Lambda::Function").items() if i == authorizer_id]
    assert authorizer["Properties"]["Environment"]["Variables"]["PETREL_USAGE_KEY_PREFIX"] == "petrel-dev"


def test_the_api_function_leaves_the_access_log_to_the_stage(resources_of: Any) -> None:
    """The stage writes one access line per request; the function, deployed, writes no second one."""
    api_id = _function_id(resources_of, "petrel-dev-api")
    [api] = [f for i, f in resources_of("AWS::Lambda::Function").items() if i == api_id]
    assert api["Properties"]["Environment"]["Variables"]["PETREL_API_ACCESS_LOG"] == "false"
    [stage] = resources_of("AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["AccessLogSetting"]["Format"] == access_log_format()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


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


# Admin routes (petrel.api.admin), each reaching the admin_api function with IAM auth.
ADMIN_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/admin/tenants"),
    ("GET", "/v1/admin/tenants"),
    ("PATCH", "/v1/admin/tenants/t_1"),
    ("POST", "/v1/admin/tenants/t_1/suspend"),
    ("POST", "/v1/admin/tenants/t_1/keys"),
    ("DELETE", "/v1/admin/tenants/t_1/keys/k_1"),
    ("PUT", "/v1/admin/tenants/t_1/servers/s_1/password"),
    ("GET", "/v1/admin/domains/example.com"),
)


def _function_id(resources_of: Any, name: str) -> str:
    found: list[str] = [
        lid for lid, f in resources_of("AWS::Lambda::Function").items() if f["Properties"]["FunctionName"] == name
    ]
    [function_id] = found
    return function_id


def test_the_admin_proxy_is_its_own_resource_with_iam_authorization(resources_of: Any) -> None:
    admin_id = _child(resources_of, _resource_id(resources_of, "v1"), "admin")
    assert _methods_of(resources_of, admin_id) == []  # /v1/admin itself: API Gateway's 403
    [method] = _methods_of(resources_of, _child(resources_of, admin_id, "{proxy+}"))
    assert method["HttpMethod"] == "ANY"
    assert method["AuthorizationType"] == "AWS_IAM"
    assert "AuthorizerId" not in method
    assert not method.get("ApiKeyRequired")  # operators have no usage plan: IAM only
    assert method["Integration"]["Type"] == "AWS_PROXY"
    admin_function = _function_id(resources_of, "petrel-dev-admin-api")
    assert {"Fn::GetAtt": [admin_function, "Arn"]} in method["Integration"]["Uri"]["Fn::Join"][1]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_reach_the_admin_function_signed_and_never_the_tenant_authorizer(
    resources_of: Any, method: str, path: str
) -> None:
    found = _route(resources_of, method, path)
    assert found is not None
    assert found["AuthorizationType"] == "AWS_IAM"
    uri = found["Integration"]["Uri"]["Fn::Join"][1]
    assert {"Fn::GetAtt": [_function_id(resources_of, "petrel-dev-admin-api"), "Arn"]} in uri
    assert {"Fn::GetAtt": [_api_function_id(resources_of), "Arn"]} not in uri


def test_a_tenant_route_next_to_admin_keeps_the_tenant_authorizer(resources_of: Any) -> None:
    """`/v1/administrators` is not `/v1/admin/...`: only the whole path part `admin` is IAM's."""
    found = _route(resources_of, "GET", "/v1/administrators")
    assert found is not None and found["AuthorizationType"] == "CUSTOM"


def test_api_gateway_may_invoke_the_admin_function_from_this_api_only(resources_of: Any) -> None:
    admin_function = _function_id(resources_of, "petrel-dev-admin-api")
    [rest_api_id] = resources_of("AWS::ApiGateway::RestApi")
    permissions = [
        p["Properties"]
        for p in resources_of("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [admin_function, "Arn"]}
    ]
    assert permissions
    for permission in permissions:
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert {"Ref": rest_api_id} in permission["SourceArn"]["Fn::Join"][1]


def test_the_access_log_is_one_json_line_with_no_field_repeated(resources_of: Any) -> None:
    """The cost model sizes this line (bench.cost): what the stage writes is what it sizes."""
    [stage] = resources_of("AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["AccessLogSetting"]["Format"] == access_log_format()
    assert len(set(ACCESS_LOG_FIELDS.values())) == len(ACCESS_LOG_FIELDS)
    line = access_log_line(
        {"$context.status": "202", "$context.authorizer.tenant_id": "tn_1", "$context.path": "/v1/emails"}
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == set(ACCESS_LOG_FIELDS)
    assert (parsed["status"], parsed["tenantId"], parsed["path"], parsed["requestId"]) == (
        "202",
        "tn_1",
        "/v1/emails",
        "-",
    )


def test_the_access_log_names_the_admin_caller(resources_of: Any) -> None:
    [stage] = resources_of("AWS::ApiGateway::Stage").values()
    fields = json.loads(stage["Properties"]["AccessLogSetting"]["Format"])
    assert fields["caller"] == "$context.identity.userArn"


def test_operators_get_a_policy_that_invokes_the_admin_routes_only(
    resources_of: Any, template_json: dict[str, Any]
) -> None:
    [(policy_id, policy)] = resources_of("AWS::IAM::ManagedPolicy").items()
    assert policy["Properties"]["ManagedPolicyName"] == "petrel-dev-admin-api-invoke"
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    [rest_api_id] = resources_of("AWS::ApiGateway::RestApi")
    parts = statement["Resource"]["Fn::Join"][1]
    assert {"Ref": rest_api_id} in parts
    assert parts[-1] == "/api/*/v1/admin/*"  # this stage, any method, the admin paths alone
    assert template_json["Outputs"]["AdminPolicyArn"]["Value"] == {"Ref": policy_id}
