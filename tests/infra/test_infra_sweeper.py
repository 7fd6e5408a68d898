"""The sweeper: its function, the EventBridge rule that runs it, and a role that can do only its job."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import EnvironmentConfig
from petrel import resources

pytestmark = pytest.mark.infra


def _sweeper(resources_of: Any, config: EnvironmentConfig) -> tuple[str, dict[str, Any]]:
    [(lid, function)] = [
        (lid, f)
        for lid, f in resources_of("AWS::Lambda::Function").items()
        if f["Properties"]["FunctionName"] == config.physical_name("sweeper")
    ]
    return lid, function


def _statements(resources_of: Any, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in resources_of("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _table_id(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec = resources.MESSAGES) -> str:
    [lid] = [
        lid
        for lid, t in resources_of("AWS::DynamoDB::Table").items()
        if t["Properties"]["TableName"] == config.physical_name(spec.name)
    ]
    return lid


def test_a_rule_runs_the_sweeper_every_interval(resources_of: Any, config: EnvironmentConfig) -> None:
    function_id, _ = _sweeper(resources_of, config)
    [rule] = [
        r["Properties"]
        for r in resources_of("AWS::Events::Rule").values()
        if r["Properties"]["Name"] == config.physical_name("sweeper")
    ]
    assert rule["ScheduleExpression"] == f"rate({config.sweep_interval_minutes} minutes)"
    assert rule["State"] == "ENABLED"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    [permission] = [
        p["Properties"]
        for p in resources_of("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "events.amazonaws.com"
        and p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    assert permission["Action"] == "lambda:InvokeFunction"


def test_the_sweeper_reads_its_settings(resources_of: Any, config: EnvironmentConfig) -> None:
    _, function = _sweeper(resources_of, config)
    env = function["Properties"]["Environment"]["Variables"]
    assert env[resources.MESSAGES.env_var] == {"Ref": _table_id(resources_of, config)}
    assert env[resources.SWEEP_GRACE_ENV] == str(config.sweep_grace_seconds)
    assert env[resources.SWEEP_BACKLOG_LIMIT_ENV] == str(config.sweep_backlog_limit)
    for queue in resources.SEND_QUEUES:
        assert queue.env_var in env
    assert env[resources.TENANTS.env_var] == {"Ref": _table_id(resources_of, config, resources.TENANTS)}
    assert resources.BODIES_BUCKET_ENV not in env


def test_the_sweeper_may_query_its_two_indexes_read_and_update_messages_scan_tenants_and_send_jobs_only(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    _, function = _sweeper(resources_of, config)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    table_arn = {"Fn::GetAtt": [_table_id(resources_of, config), "Arn"]}
    tenants_arn = {"Fn::GetAtt": [_table_id(resources_of, config, resources.TENANTS), "Arn"]}
    index_arns = [
        {"Fn::Join": ["", [table_arn, f"/index/{index.name}"]]} for index in (resources.DUE_INDEX, resources.BY_TENANT)
    ]
    granted: dict[str, list[Any]] = {}
    for statement in _statements(resources_of, role_id):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    dynamodb = {a for a in granted if a.startswith("dynamodb:")}
    assert dynamodb == {
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Scan",
    }
    assert granted["dynamodb:Query"] == index_arns
    assert granted["dynamodb:Scan"] == [tenants_arn]
    assert granted["dynamodb:UpdateItem"] == [table_arn]
    assert granted["dynamodb:BatchGetItem"] == [table_arn]
    assert granted["dynamodb:GetItem"] == [table_arn]
    assert {a for a in granted if a.startswith("sqs:")} == {"sqs:SendMessage", "sqs:GetQueueAttributes"}
    assert len(granted["sqs:SendMessage"]) == len(resources.SEND_QUEUES)
    assert sorted(map(str, granted["sqs:GetQueueAttributes"])) == sorted(map(str, granted["sqs:SendMessage"]))
    assert set(granted) == {
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Scan",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        *_log_actions(),
    }


def _log_actions() -> set[str]:
    return {"logs:CreateLogStream", "logs:PutLogEvents"}
