"""The public HTTPS API: an API Gateway REST API (v1) in front of the api function.

* stage `api`; every route starts with `/v1`;
* `ANY /v1/{proxy+}` goes to the api function through a Lambda REQUEST authorizer that reads the
  `Authorization` header (results cached 60 s). The routes themselves are the api function's own
  table (`petrel.api.routes`, published as openapi.json): every tenant route, e.g.
  `DELETE /v1/emails/{id}` or `GET|POST /v1/suppressions`, reaches it through this one method, so
  a new route needs no change here. No route gets a resource of its own: API Gateway picks the
  most specific resource first and does not fall back to `{proxy+}` for a method that resource
  lacks, so a partial copy of the table here would turn the missing methods into 403s;
* `GET /v1/openapi.json` and `GET /v1/docs` (Swagger UI) are public (no authorizer):
  `petrel.api.openapi.PUBLIC_PATHS`;
* `ANY /v1/admin/{proxy+}` goes to the admin_api function (`petrel.api.admin`) with IAM
  authorization: API Gateway checks each request's SigV4 signature and the caller's
  `execute-api:Invoke` permission before the function runs, so no API key, tenant's or other, reaches
  the admin routes (a literal `admin` beats `{proxy+}`: such requests never reach the tenant
  authorizer), and the admin function trusts the caller API Gateway names (`$context.identity.userArn`,
  in the access log);
* errors produced by API Gateway itself (no or bad key, unknown route, throttling, integration
  failure, a body over its 10 MB) are `application/problem+json` bodies shaped like RFC 9457, as the
  api function's own are;
* every request body reaches the function base64-encoded (binary media type `*/*`): its size in the
  event is then 4/3 of the body whatever the body holds (JSON escaping could multiply it), so the
  API's own limit (`MAX_REQUEST_BYTES`, refused with a 413 problem) always fits Lambda's 6 MB; raw
  mail pushed to `POST /v1/inbound/raw` as `message/rfc822` arrives byte for byte the same way;
* a larger body that API Gateway takes but Lambda's event cannot hold is refused before the
  invocation, with the same 413 problem, by the stage's web ACL (`infra/constructs/waf.py`, where
  the environment has `waf: true`).
"""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.access_log import access_log_format
from infra.config import EnvironmentConfig
from infra.constructs.common import acknowledge, log_group, logical_ref
from infra.constructs.functions import ADMIN_API, API, AUTHORIZER, FunctionDependencies, PetrelFunction
from petrel import resources
from petrel.api.http import PROBLEM_TYPE_BASE
from petrel.api.openapi import PUBLIC_PATHS
from petrel.errors import RequestTooLarge, TooManyRequests

STAGE_NAME = "api"
API_VERSION_PATH = "v1"
ADMIN_PATH = "admin"  # /v1/admin/...: the admin API's routes (IAM)
AUTHORIZATION_HEADER = "Authorization"
AUTHORIZER_CACHE_SECONDS = 60
PROBLEM_CONTENT_TYPE = "application/problem+json"
BINARY_MEDIA_TYPES = ["*/*"]  # every body reaches the function base64-encoded (see above)
# Lambda's limit on a synchronous invocation's event (bytes).
LAMBDA_SYNC_PAYLOAD_BYTES = 6_291_456

# (response type, HTTP status or None to keep API Gateway's, problem title, problem type)
_GATEWAY_PROBLEMS: tuple[tuple[apigw.ResponseType, str | None, str, str], ...] = (
    (apigw.ResponseType.UNAUTHORIZED, "401", "Unauthorized", "about:blank"),
    (apigw.ResponseType.ACCESS_DENIED, "403", "Forbidden", "about:blank"),
    # IAM authorization (the admin routes): no signature, a wrong one, or expired credentials.
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "403", "Forbidden", "about:blank"),
    (apigw.ResponseType.INVALID_SIGNATURE, "403", "Forbidden", "about:blank"),
    (apigw.ResponseType.EXPIRED_TOKEN, "403", "Forbidden", "about:blank"),
    (
        apigw.ResponseType.REQUEST_TOO_LARGE,
        "413",
        RequestTooLarge.title,
        PROBLEM_TYPE_BASE + RequestTooLarge.slug,
    ),
    # A tenant over its usage plan's throttle or quota (the API's own 429 problem type; no Retry-After:
    # API Gateway does not say when a token is back).
    (apigw.ResponseType.THROTTLED, "429", TooManyRequests.title, PROBLEM_TYPE_BASE + TooManyRequests.slug),
    (apigw.ResponseType.QUOTA_EXCEEDED, "429", TooManyRequests.title, PROBLEM_TYPE_BASE + TooManyRequests.slug),
    # A tenant whose usage key is in no usage plan (made before usage plans and not yet enrolled:
    # `petrel tenant enroll --all`).
    (apigw.ResponseType.INVALID_API_KEY, "403", "Forbidden", "about:blank"),
    (apigw.ResponseType.DEFAULT_4_XX, None, "Request rejected", "about:blank"),
    (apigw.ResponseType.DEFAULT_5_XX, None, "Gateway error", "about:blank"),
)


def problem_template(title: str, status: str | None, problem_type: str = "about:blank") -> str:
    """A gateway response body in RFC 9457 shape; `detail` is API Gateway's own message."""
    status_member = f'"status":{status},' if status else ""
    return (
        f'{{"type":{json.dumps(problem_type)},'
        f'"title":{json.dumps(title)},'
        f"{status_member}"
        '"detail":$context.error.messageString,'
        '"request_id":"$context.requestId"}'
    )


class PetrelApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, deps: FunctionDependencies) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.handler = PetrelFunction(self, "Handler", definition=API, deps=deps)
        self.authorizer_function = PetrelFunction(self, "AuthorizerFunction", definition=AUTHORIZER, deps=deps)
        self.admin_handler = PetrelFunction(self, "AdminHandler", definition=ADMIN_API, deps=deps)

        api_name = config.physical_name("api")
        access_logs = log_group(self, "AccessLogs", config, f"/aws/apigateway/{api_name}/access")
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=api_name,
            description=(
                "Petrel: send and track email (tenants authenticate with an API key; operators call "
                "/v1/admin with SigV4)"
            ),
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=BINARY_MEDIA_TYPES,
            # The usage key is the authorizer's `usageIdentifierKey` (the tenant's), never a header a
            # client sends: per-tenant throttling by usage plan, without a second credential.
            api_key_source_type=apigw.ApiKeySourceType.AUTHORIZER,
            # Execution logging needs the account-wide API Gateway CloudWatch role; it is kept
            # when the stack goes, so the account setting never points at a deleted role.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.custom(access_log_format()),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request or response bodies
                metrics_enabled=True,
                tracing_enabled=config.tracing,
                throttling_rate_limit=config.api_throttle_rate_limit,
                throttling_burst_limit=config.api_throttle_burst_limit,
            ),
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level role API Gateway uses for execution logging; this AWS-managed policy "
            "is the one AWS documents for it and only lets API Gateway write its own log groups.",
        )
        if not config.waf:  # otherwise infra/constructs/waf.py associates a web ACL with the stage
            acknowledge(
                self.rest_api.deployment_stage,
                "AwsSolutions-APIG3",
                "This environment has no WAFv2 web ACL (`waf: false` in cdk.json): every tenant route "
                "needs a valid API key (Lambda authorizer, cached) and is throttled per tenant by its "
                "usage plan (api_plans in cdk.json), the whole stage by api_throttle_*; an "
                "unauthenticated flood is refused by the authorizer (401, cached) but not rate-limited "
                "per IP, and a body over the API's limit that Lambda cannot take gets API Gateway's 5xx "
                "integration failure instead of the 413 problem.",
            )
        acknowledge(
            self.rest_api,
            "AwsSolutions-COG4",
            "Tenants are machines holding API keys, not Cognito users: every tenant route is "
            "protected by the Lambda REQUEST authorizer instead of a Cognito user pool authorizer; "
            "operators are IAM principals, and the admin routes use IAM (SigV4) authorization.",
        )

        for response_type, status, title, problem_type in _GATEWAY_PROBLEMS:
            self.rest_api.add_gateway_response(
                f"Problem{response_type.response_type}",
                type=response_type,
                status_code=status,
                response_headers={"Content-Type": f"'{PROBLEM_CONTENT_TYPE}'"},
                templates={"application/json": problem_template(title, status, problem_type)},
            )

        self.authorizer = apigw.RequestAuthorizer(
            self,
            "TenantAuthorizer",
            authorizer_name=config.physical_name("tenant-key"),
            handler=self.authorizer_function.function,
            identity_sources=[apigw.IdentitySource.header(AUTHORIZATION_HEADER)],
            results_cache_ttl=Duration.seconds(AUTHORIZER_CACHE_SECONDS),
        )
        # Checks that the Authorization header is there before the authorizer runs. Bodies have no
        # API Gateway model (the api function validates them with its pydantic models), so the body
        # half of this validator applies only to methods that declare a model.
        validator = self.rest_api.add_request_validator(
            "RequestValidator",
            request_validator_name=config.physical_name("api-requests"),
            validate_request_body=True,
            validate_request_parameters=True,
        )

        integration = apigw.LambdaIntegration(self.handler.function, proxy=True, allow_test_invoke=False)
        version = self.rest_api.root.add_resource(API_VERSION_PATH)
        # The api function's public paths (its OpenAPI document and Swagger UI), each its own resource:
        # API Gateway prefers it to `{proxy+}`, so no key is asked for.
        self.public_methods = {path: self._public_method(version, path, integration) for path in sorted(PUBLIC_PATHS)}
        self.proxy_method = version.add_resource("{proxy+}").add_method(
            "ANY",
            integration,
            authorizer=self.authorizer,
            authorization_type=apigw.AuthorizationType.CUSTOM,
            request_validator=validator,
            request_parameters={f"method.request.header.{AUTHORIZATION_HEADER}": True},
            # Throttled by the tenant's usage plan (the authorizer names its key).
            api_key_required=True,
        )
        self.usage_plans = self._usage_plans(config)
        # The admin API: a resource of its own, so API Gateway never runs the tenant authorizer for it.
        admin_integration = apigw.LambdaIntegration(self.admin_handler.function, proxy=True, allow_test_invoke=False)
        self.admin_method = (
            version.add_resource(ADMIN_PATH)
            .add_resource("{proxy+}")
            .add_method("ANY", admin_integration, authorization_type=apigw.AuthorizationType.IAM)
        )
        self.admin_policy = self._admin_policy(config)

    def _usage_plans(self, config: EnvironmentConfig) -> dict[str, apigw.UsagePlan]:
        """One usage plan per API plan of the environment, on the stage: its throttle (and quota) apply
        per API key, i.e. per tenant. The admin function enrolls tenants' keys in them: it gets their ids
        (PETREL_API_PLANS) and may manage API keys and these plans' keys, nothing else of API Gateway."""
        plans: dict[str, apigw.UsagePlan] = {}
        for name, plan in sorted(config.api_plans.items()):
            plans[name] = self.rest_api.add_usage_plan(
                f"UsagePlan-{name}",
                name=resources.usage_plan_name(config.name_prefix, name),
                description=f"Petrel API plan {name!r}: each tenant on it, throttled by its own API key",
                throttle=apigw.ThrottleSettings(rate_limit=plan.rate_per_second, burst_limit=plan.burst),
                quota=(
                    apigw.QuotaSettings(limit=plan.requests_per_day, period=apigw.Period.DAY)
                    if plan.requests_per_day is not None
                    else None
                ),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)],
            )
        self._grant_enrollment(config)
        return plans

    def _grant_enrollment(self, config: EnvironmentConfig) -> None:
        """What the admin function needs to enroll tenants (petrel.adapters.usage_plans): find the
        plans by name, find, create and delete API keys, and put keys in and out of plans. Nothing else
        of API Gateway (no plan, stage or API changes)."""
        stack = Stack.of(self)
        base = f"arn:{stack.partition}:apigateway:{stack.region}::"
        self.admin_handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="EnrollTenantsInUsagePlans",
                actions=["apigateway:GET", "apigateway:POST", "apigateway:DELETE"],
                resources=[
                    f"{base}/apikeys",  # GET: a tenant's key by name; POST: create it
                    f"{base}/apikeys/*",  # DELETE a key
                    f"{base}/usageplans/*/keys",  # GET a plan's keys; POST: add one
                    f"{base}/usageplans/*/keys/*",  # DELETE: take one out
                ],
            )
        )
        self.admin_handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="FindUsagePlansByName", actions=["apigateway:GET"], resources=[f"{base}/usageplans"]
            )
        )
        for resource in ("apikeys/*", "usageplans/*/keys", "usageplans/*/keys/*"):
            acknowledge(
                self.admin_handler,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:apigateway:<AWS::Region>::/{resource}]",
                "Enrolling a tenant creates its API key (an id API Gateway assigns) and puts it in its plan's "
                "usage plan, whose id cannot be named in this policy: the plans depend on the stage, which "
                "depends on the admin route and so on this function (a cycle). The wildcard covers only API "
                "keys and usage-plan key links of this account and region, never a plan, stage or API.",
            )
        del config

    def _admin_policy(self, config: EnvironmentConfig) -> iam.ManagedPolicy:
        """What an operator's IAM user or role is given to call the admin API (and nothing else of it):
        `execute-api:Invoke` on `/v1/admin/*` of this stage, any method."""
        admin_routes = self.rest_api.arn_for_execute_api("*", f"/{API_VERSION_PATH}/{ADMIN_PATH}/*", STAGE_NAME)
        policy = iam.ManagedPolicy(
            self,
            "AdminPolicy",
            managed_policy_name=config.physical_name("admin-api-invoke"),
            description=f"Calls the {config.name_prefix} admin API (/v1/admin/...): attach to operators",
            statements=[iam.PolicyStatement(actions=["execute-api:Invoke"], resources=[admin_routes])],
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:"
            f"<{logical_ref(self.rest_api)}>/{STAGE_NAME}/*/{API_VERSION_PATH}/{ADMIN_PATH}/*]",
            "The admin routes are one greedy resource (/v1/admin/{proxy+}, any method): the wildcard "
            "stops at this API's stage and the /v1/admin/ path, the narrowest ARN that spans the routes.",
        )
        return policy

    @staticmethod
    def _public_method(version: apigw.Resource, path: str, integration: apigw.Integration) -> apigw.Method:
        """`GET <path>` without the authorizer; `path` must be a direct child of `/v1`."""
        part = path.removeprefix(f"/{API_VERSION_PATH}/")
        if part == path or "/" in part:
            raise ValueError(f"public path {path!r} is not a direct child of /{API_VERSION_PATH}")
        method = version.add_resource(part).add_method(
            "GET", integration, authorization_type=apigw.AuthorizationType.NONE
        )
        acknowledge(
            method,
            "AwsSolutions-APIG4",
            "The OpenAPI document and its Swagger UI are public on purpose (DESIGN.md section 4): they "
            "describe the API and hold no tenant data.",
        )
        return method

    @property
    def url(self) -> str:
        return self.rest_api.url
