"""The API stage's web ACL: a body declared over the API's limit gets the API's 413 problem from WAF."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

import app as petrel_app
from infra.config import CONTEXT_KEY, EnvironmentConfig
from infra.constructs.waf import WAF_REGEX_MAX_CHARS, decimal_over
from petrel.models.api import MAX_REQUEST_BYTES
from tests.fakes import FakeWorld
from tests.unit.api_fakes import Api

pytestmark = pytest.mark.infra

LIMIT_PATTERN = re.compile(decimal_over(MAX_REQUEST_BYTES))


def _over(value: str) -> bool:
    return LIMIT_PATTERN.search(value) is not None


@pytest.mark.parametrize(
    ("content_length", "refused"),
    [
        (str(MAX_REQUEST_BYTES - 1), False),
        (str(MAX_REQUEST_BYTES), False),
        (str(MAX_REQUEST_BYTES + 1), True),
        (str(10**7), True),
        (str(10**20), True),
        ("0", False),
        ("1", False),
        ("0" * 50 + str(MAX_REQUEST_BYTES), False),
        ("0" * 50 + str(MAX_REQUEST_BYTES + 1), True),
        ("00" + str(10**20), True),
        ("0" * 1000, False),
        (" " + str(MAX_REQUEST_BYTES + 1) + "\t", True),
        (" " + str(MAX_REQUEST_BYTES) + " ", False),
        ("9" * 7, True),  # as many digits as the limit, every one larger
        ("1" + "0" * 6, False),
        ("", False),
        ("abc", False),
    ],
)
def test_the_content_length_pattern_matches_exactly_the_values_over_the_limit(
    content_length: str, refused: bool
) -> None:
    assert _over(content_length) is refused


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 99, 100, 101, 909, 1989, 2000])
def test_decimal_over_agrees_with_integer_comparison(limit: int) -> None:
    pattern = re.compile(decimal_over(limit))
    for value in range(25_000):
        for spelling in (str(value), f"000{value}"):
            assert (pattern.search(spelling) is not None) is (value > limit), (limit, spelling)


def test_the_pattern_is_one_waf_accepts() -> None:
    pattern = decimal_over(MAX_REQUEST_BYTES)
    assert len(pattern) <= WAF_REGEX_MAX_CHARS
    assert re.compile(pattern).groups == 0  # WAF refuses capturing groups
    assert "\\d" not in pattern and "(?=" not in pattern and "(?!" not in pattern
    with pytest.raises(ValueError):
        decimal_over(-1)


def _web_acl(resources_of: Any) -> tuple[str, dict[str, Any]]:
    [(lid, acl)] = list(resources_of("AWS::WAFv2::WebACL").items())
    props: dict[str, Any] = acl["Properties"]
    return lid, props


def _rule(props: dict[str, Any], name: str) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [r for r in props["Rules"] if r["Name"] == name]
    [rule] = rules
    return rule


def test_a_regional_web_acl_allows_by_default_and_is_visible(resources_of: Any, config: EnvironmentConfig) -> None:
    _, props = _web_acl(resources_of)
    assert props["Scope"] == "REGIONAL"
    assert props["DefaultAction"] == {"Allow": {}}
    assert props["Name"] == config.physical_name("api")
    visibilities = [props["VisibilityConfig"], *(rule["VisibilityConfig"] for rule in props["Rules"])]
    for visibility in visibilities:
        assert visibility["CloudWatchMetricsEnabled"] is True
        assert visibility["SampledRequestsEnabled"] is True
    assert len({v["MetricName"] for v in visibilities}) == len(visibilities)
    assert sorted(rule["Priority"] for rule in props["Rules"]) == list(range(len(props["Rules"])))


def test_a_content_length_over_the_limit_is_blocked_with_a_413(resources_of: Any) -> None:
    _, props = _web_acl(resources_of)
    rule = _rule(props, "request-too-large")
    statement = rule["Statement"]["RegexMatchStatement"]
    assert statement["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert statement["RegexString"] == decimal_over(MAX_REQUEST_BYTES)
    assert statement["TextTransformations"] == [{"Priority": 0, "Type": "NONE"}]
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 413
    assert props["CustomResponseBodies"][response["CustomResponseBodyKey"]]["ContentType"] == "APPLICATION_JSON"


def test_the_413_body_is_the_problem_document_the_api_gives(resources_of: Any, world: FakeWorld) -> None:
    _, props = _web_acl(resources_of)
    key = _rule(props, "request-too-large")["Action"]["Block"]["CustomResponse"]["CustomResponseBodyKey"]
    from_waf = json.loads(props["CustomResponseBodies"][key]["Content"])

    body = b"{" + b" " * MAX_REQUEST_BYTES + b"}"
    result = Api(world)(
        {
            "path": "/v1/emails",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(body).decode("ascii"),
            "isBase64Encoded": True,
            "requestContext": {"requestId": "r-1", "authorizer": {"tenant_id": "tn_a"}},
        }
    )
    from_api = json.loads(result["body"])
    assert result["statusCode"] == from_waf["status"] == 413
    # A WAF response is static: no `instance`, and the detail cannot give the body's exact size.
    assert set(from_waf) == set(from_api) - {"instance"}
    assert {k: from_waf[k] for k in ("type", "title", "status")} == {
        k: from_api[k] for k in ("type", "title", "status")
    }
    assert from_waf["type"] == "urn:petrel:problem:request-too-large"
    api_advice = from_api["detail"].split(": ", 1)[1]
    assert from_waf["detail"].split(": ", 1)[1] == api_advice
    assert str(MAX_REQUEST_BYTES) in from_waf["detail"]


def test_a_body_of_undeclared_length_is_blocked_with_a_411(resources_of: Any) -> None:
    _, props = _web_acl(resources_of)
    rule = _rule(props, "length-required")
    statement = rule["Statement"]["SizeConstraintStatement"]
    assert statement["FieldToMatch"] == {"SingleHeader": {"Name": "transfer-encoding"}}
    assert (statement["ComparisonOperator"], statement["Size"]) == ("GE", 0)  # present, whatever its value
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 411
    problem = json.loads(props["CustomResponseBodies"][response["CustomResponseBodyKey"]]["Content"])
    assert problem["type"] == "urn:petrel:problem:length-required" and problem["status"] == 411


def test_the_web_acl_is_associated_with_the_api_stage(resources_of: Any) -> None:
    acl_id, _ = _web_acl(resources_of)
    [rest_api_id] = resources_of("AWS::ApiGateway::RestApi")
    [stage_id] = resources_of("AWS::ApiGateway::Stage")
    [association] = [a["Properties"] for a in resources_of("AWS::WAFv2::WebACLAssociation").values()]
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    parts = association["ResourceArn"]["Fn::Join"][1]
    assert parts[parts.index("::/restapis/") + 1] == {"Ref": rest_api_id}
    assert parts[parts.index("/stages/") + 1] == {"Ref": stage_id}


def test_without_the_association_cdk_nag_reports_the_stage(tmp_path: Path, synthesizer: Any) -> None:
    """With `waf: true` the stage's APIG3 finding is not acknowledged: the association is what passes it."""

    def drop_association(cdk_app: Any) -> None:
        stack = cdk_app.node.find_child(petrel_app.stack_id("dev"))
        assert stack.firewall.node.try_remove_child("Association")

    with pytest.raises(Exception, match=r"AwsSolutions-APIG3"):
        synthesizer(tmp_path, "dev", extend=drop_association)


def test_an_environment_without_waf_has_no_web_acl(tmp_path: Path, synthesizer: Any) -> None:
    raw = copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY])
    raw["dev"]["waf"] = False
    assembly = synthesizer(tmp_path, "dev", environments=raw)  # cdk-nag passes: APIG3 acknowledged
    found = assembly.get_stack_artifact(petrel_app.stack_id("dev")).template["Resources"].values()
    assert [r for r in found if r["Type"].startswith("AWS::WAFv2::")] == []
    assert [r for r in found if r["Type"] == "AWS::ApiGateway::Stage"]


def test_every_configured_environment_has_its_web_acl(
    all_environments: tuple[Path, Any], environments: dict[str, EnvironmentConfig]
) -> None:
    _, assembly = all_environments
    for name, config in environments.items():
        found = assembly.get_stack_artifact(petrel_app.stack_id(name)).template["Resources"].values()
        acls = [r for r in found if r["Type"] == "AWS::WAFv2::WebACL"]
        associations = [r for r in found if r["Type"] == "AWS::WAFv2::WebACLAssociation"]
        assert len(acls) == len(associations) == (1 if config.waf else 0), name


def test_a_rate_limit_is_the_first_rule_and_answers_the_apis_429(tmp_path: Path, synthesizer: Any) -> None:
    """`waf_rate_limit` adds a rate-based rule per IP, first in the web ACL, answering the API's
    too-many-requests problem with Retry-After; cdk-nag stays clean (synthesis raises otherwise)."""
    raw = copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY])
    raw["dev"]["waf_rate_limit"] = 3000
    assembly = synthesizer(tmp_path, "dev", environments=raw)
    found = assembly.get_stack_artifact(petrel_app.stack_id("dev")).template["Resources"].values()
    [acl] = [r["Properties"] for r in found if r["Type"] == "AWS::WAFv2::WebACL"]
    rule = _rule(acl, "rate-limit")
    assert rule["Priority"] == 0
    assert rule["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "Limit": 3000,
        "EvaluationWindowSec": 300,
    }
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429
    assert response["ResponseHeaders"] == [{"Name": "Retry-After", "Value": "60"}]
    problem = json.loads(acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]["Content"])
    assert (problem["type"], problem["status"]) == ("urn:petrel:problem:too-many-requests", 429)
    assert "3000 requests in 5 minutes" in problem["detail"]
    # The other rules keep their order after it.
    assert [r["Name"] for r in sorted(acl["Rules"], key=lambda r: r["Priority"])] == [
        "rate-limit",
        "request-too-large",
        "length-required",
    ]


def test_without_a_rate_limit_there_is_no_rate_rule(resources_of: Any, config: EnvironmentConfig) -> None:
    _, props = _web_acl(resources_of)
    assert config.waf_rate_limit is None  # dev
    assert "rate-limit" not in {rule["Name"] for rule in props["Rules"]}


def test_a_rate_limit_without_waf_is_refused() -> None:
    from infra.config import ConfigError, parse_environment

    raw = copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY]["dev"])
    raw.update(waf=False, waf_rate_limit=1000)
    with pytest.raises(ConfigError, match="waf_rate_limit needs waf: true"):
        parse_environment("dev", raw)
    raw.update(waf=True, waf_rate_limit=5)
    with pytest.raises(ConfigError, match="waf_rate_limit"):
        parse_environment("dev", raw)
