"""The API stage's web ACL (AWS WAFv2, regional): what API Gateway would let through but the api
function cannot take is refused before it costs an invocation, with the API's own problem document.

* a `Content-Length` over `MAX_REQUEST_BYTES` (any spelling of the number: leading zeros, a value
  of any length) gets 413 `request-too-large`. Without the web ACL such a body, up to API Gateway's
  own 10 MB, reaches Lambda base64-encoded, over its 6 MB synchronous event, and the client gets a
  5xx integration failure;
* a `Transfer-Encoding` header (a chunked body, whose size nobody knows before it has arrived) gets
  411 `length-required`: every body the API takes is JSON or MIME of a known length;
* where the environment sets `waf_rate_limit`, an address that sent more than that many requests in
  the last 5 minutes gets 429 `too-many-requests` until its rate falls under it again: what caps an
  unauthenticated flood (a tenant's own requests are throttled by its usage plan, infra/constructs/api.py);
* anything else is allowed; every rule has its CloudWatch metrics and sampled requests.

WAF sets the content type of a custom response itself (`application/json`: it refuses a
`content-type` response header); the body is the RFC 9457 document the API gives, without
`instance` (a custom response is static).

A new rule (e.g. a rate limit) is one more `BlockRule` in `block_rules`: priorities follow the order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.config import EnvironmentConfig
from petrel.api.http import PROBLEM_TYPE_BASE, problem_body
from petrel.errors import RequestTooLarge, TooManyRequests
from petrel.models.api import MAX_REQUEST_BYTES

WAF_SCOPE = "REGIONAL"  # an API Gateway REST stage (CLOUDFRONT is for distributions)
CONTENT_LENGTH_HEADER = "content-length"  # WAF matches header names case-insensitively
TRANSFER_ENCODING_HEADER = "transfer-encoding"
RATE_WINDOW_SECONDS = 300  # the window WAF counts a rate-based rule's requests over (its default)
# WAF's limit on a RegexMatchStatement's RegexString.
WAF_REGEX_MAX_CHARS = 512
_NO_TRANSFORMATION = [wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")]


def decimal_over(limit: int) -> str:
    """A regular expression matching exactly the decimal numbers greater than `limit`.

    Leading zeros and optional surrounding blanks are allowed; the value may be of any length. No
    capturing group, backreference or lookaround: AWS WAF's regex engine refuses them.
    """
    if limit < 0:
        raise ValueError(f"limit must be a non-negative integer, got {limit}")
    digits = str(limit)
    # Same number of digits as `limit`: equal on a prefix, then a greater digit, then any digits.
    branches = [
        digits[:i] + _digit_range(int(digit) + 1) + _any_digits(len(digits) - i - 1)
        for i, digit in enumerate(digits)
        if digit != "9"
    ]
    # More digits than `limit` (after the leading zeros).
    branches.append(f"[1-9][0-9]{{{len(digits)},}}")
    return rf"^[ \t]*0*(?:{'|'.join(branches)})[ \t]*$"


def _digit_range(low: int) -> str:
    return "9" if low == 9 else f"[{low}-9]"


def _any_digits(count: int) -> str:
    return {0: "", 1: "[0-9]"}.get(count, f"[0-9]{{{count}}}")


@dataclass(frozen=True)
class BlockRule:
    """A rule whose matching requests get `status` with `problem` (an RFC 9457 document) as body."""

    name: str
    statement: wafv2.CfnWebACL.StatementProperty
    status: int
    problem: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # besides the body (WAF sets the content type)

    @property
    def body_key(self) -> str:
        return self.name


def request_too_large_problem() -> dict[str, Any]:
    """The API's 413 problem document (petrel.api.routes), for a body whose Content-Length is too large."""
    error = RequestTooLarge(
        f"the body is over {MAX_REQUEST_BYTES} bytes; the API takes at most {MAX_REQUEST_BYTES}: "
        "upload large files first (POST /v1/attachments) and reference them by attachment_id"
    )
    return problem_body(error)


def length_required_problem() -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + "length-required",
        "title": "The request body has no declared length",
        "status": 411,
        "detail": "send the body with a Content-Length header, not with a Transfer-Encoding",
    }


def too_many_requests_problem(limit: int) -> dict[str, Any]:
    """The API's 429 problem (petrel.errors.TooManyRequests), for an address over the rate rule."""
    error = TooManyRequests(
        f"more than {limit} requests in {RATE_WINDOW_SECONDS // 60} minutes from this address: slow down",
        retry_after=60,
    )
    return problem_body(error)


def rate_rule(limit: int) -> BlockRule:
    """Requests per 5 minutes from one IP address over `limit`: 429 until the address slows down."""
    return BlockRule(
        name="rate-limit",
        statement=wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                aggregate_key_type="IP", limit=limit, evaluation_window_sec=RATE_WINDOW_SECONDS
            )
        ),
        status=429,
        problem=too_many_requests_problem(limit),
        # WAF re-evaluates an address's rate continually; a minute is a fair hint of when to try again.
        headers={"Retry-After": "60"},
    )


def block_rules(config: EnvironmentConfig) -> tuple[BlockRule, ...]:
    """The web ACL's rules, in priority order: the rate rule first (when the environment has one), so a
    flood is counted and refused before anything else is looked at."""
    rate = (rate_rule(config.waf_rate_limit),) if config.waf_rate_limit is not None else ()
    statement = wafv2.CfnWebACL.StatementProperty
    return (
        *rate,
        BlockRule(
            name="request-too-large",
            statement=statement(
                regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                    field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(single_header={"Name": CONTENT_LENGTH_HEADER}),
                    regex_string=decimal_over(MAX_REQUEST_BYTES),
                    text_transformations=_NO_TRANSFORMATION,
                )
            ),
            status=413,
            problem=request_too_large_problem(),
        ),
        BlockRule(
            name="length-required",
            statement=statement(
                size_constraint_statement=wafv2.CfnWebACL.SizeConstraintStatementProperty(
                    field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                        single_header={"Name": TRANSFER_ENCODING_HEADER}
                    ),
                    comparison_operator="GE",
                    size=0,  # the header is there, whatever its value
                    text_transformations=_NO_TRANSFORMATION,
                )
            ),
            status=411,
            problem=length_required_problem(),
        ),
    )


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric_name, sampled_requests_enabled=True
    )


class ApiFirewall(Construct):
    """A regional web ACL (default action: allow) with `block_rules`, associated with `stage`."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, stage: apigw.Stage) -> None:
        super().__init__(scope, construct_id)
        name = config.physical_name("api")
        rules = block_rules(config)
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            description="Petrel API: refuses bodies the api function cannot take, with its problem documents",
            scope=WAF_SCOPE,
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(name),
            custom_response_bodies={
                rule.body_key: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON", content=json.dumps(rule.problem)
                )
                for rule in rules
            },
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name=rule.name,
                    priority=priority,
                    statement=rule.statement,
                    action=wafv2.CfnWebACL.RuleActionProperty(
                        block=wafv2.CfnWebACL.BlockActionProperty(
                            custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                                response_code=rule.status,
                                custom_response_body_key=rule.body_key,
                                response_headers=[
                                    wafv2.CfnWebACL.CustomHTTPHeaderProperty(name=name, value=value)
                                    for name, value in rule.headers.items()
                                ]
                                or None,
                            )
                        )
                    ),
                    visibility_config=_visibility(f"{name}-{rule.name}"),
                )
                for priority, rule in enumerate(rules)
            ],
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=stage.stage_arn, web_acl_arn=self.web_acl.attr_arn
        )
