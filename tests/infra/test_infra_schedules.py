"""EventBridge Scheduler: the group, its dead-letter queue, the role Scheduler assumes, and what the
functions that create schedules are given (environment, IAM)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import EnvironmentConfig
from infra.constructs.functions import API, AUTHORIZER, FUNCTIONS, SEND_WORKER, FunctionDefinition
from infra.constructs.schedules import MANAGE_ACTIONS
from petrel import resources

pytestmark = pytest.mark.infra

SCHEDULES = resources.SCHEDULES
SCHEDULE_FUNCTIONS = (API, SEND_WORKER)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _one(found: dict[str, dict[str, Any]], what: str) -> tuple[str, dict[str, Any]]:
    assert len(found) == 1, f"expected one {what}, found {sorted(found)}"
    [(lid, resource)] = found.items()
    return lid, resource


def _queue_id(resources_of: Any, name: str) -> str:
    queues = resources_of("AWS::SQS::Queue")
    lid, _ = _one({k: q for k, q in queues.items() if q["Properties"]["QueueName"] == name}, f"queue {name}")
    return lid


def _scheduler_role_id(resources_of: Any) -> str:
    roles = resources_of("AWS::IAM::Role")
    trusted = {
        lid: r
        for lid, r in roles.items()
        if any(
            s["Principal"].get("Service") == "scheduler.amazonaws.com"
            for s in r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        )
    }
    lid, _ = _one(trusted, "role assumed by scheduler.amazonaws.com")
    return lid


def _statements(resources_of: Any, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in resources_of("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _function(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> dict[str, Any]:
    name = config.physical_name(definition.slug)
    _, function = _one(
        {k: f for k, f in resources_of("AWS::Lambda::Function").items() if f["Properties"]["FunctionName"] == name},
        f"function {name}",
    )
    return function


def _function_statements(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> list[Any]:
    role_id = _function(resources_of, config, definition)["Properties"]["Role"]["Fn::GetAtt"][0]
    return _statements(resources_of, role_id)


def test_schedule_group(resources_of: Any, config: EnvironmentConfig) -> None:
    _, group = _one(resources_of("AWS::Scheduler::ScheduleGroup"), "schedule group")
    assert group["Properties"]["Name"] == config.physical_name(SCHEDULES.group) == "petrel-dev-schedules"
    assert group["DeletionPolicy"] == "Delete"  # dev; staging and prod retain
    assert resources_of("AWS::Scheduler::Schedule") == {}  # schedules are made at run time


def test_dead_letter_queue_is_encrypted_tls_only_and_plain(resources_of: Any, config: EnvironmentConfig) -> None:
    dlq_id = _queue_id(resources_of, config.physical_name(SCHEDULES.dlq))
    props = resources_of("AWS::SQS::Queue")[dlq_id]["Properties"]
    assert props["SqsManagedSseEnabled"] is True
    assert props["MessageRetentionPeriod"] == SCHEDULES.dlq_retention_days * 86_400
    assert "RedrivePolicy" not in props
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources_of("AWS::SQS::QueuePolicy").values()
        if {"Ref": dlq_id} in p["Properties"]["Queues"]
    ]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for statements in policies
        for s in statements
    )


def test_scheduler_role_is_assumed_by_scheduler_for_this_account_only(resources_of: Any) -> None:
    role = resources_of("AWS::IAM::Role")[_scheduler_role_id(resources_of)]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Action": "sts:AssumeRole",
        "Effect": "Allow",
        "Principal": {"Service": "scheduler.amazonaws.com"},
        "Condition": {
            "StringEquals": {
                "aws:SourceAccount": {"Ref": "AWS::AccountId"},
                "aws:SourceArn": {
                    "Fn::GetAtt": [_one(resources_of("AWS::Scheduler::ScheduleGroup"), "group")[0], "Arn"]
                },
            }
        },
    }
    assert "ManagedPolicyArns" not in role


def test_scheduler_role_may_only_send_to_the_send_queues_and_its_dlq(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    statements = _statements(resources_of, _scheduler_role_id(resources_of))
    assert {a for s in statements for a in _as_list(s["Action"])} == {"sqs:SendMessage"}
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in statements)
    targets = {json.dumps(r, sort_keys=True) for s in statements for r in _as_list(s["Resource"])}
    expected_queues = [config.physical_name(q.name) for q in resources.SEND_QUEUES]
    expected_queues.append(config.physical_name(SCHEDULES.dlq))
    expected = {
        json.dumps({"Fn::GetAtt": [_queue_id(resources_of, name), "Arn"]}, sort_keys=True) for name in expected_queues
    }
    assert targets == expected


@pytest.mark.parametrize("definition", SCHEDULE_FUNCTIONS, ids=lambda d: d.name)
def test_function_environment_names_the_group_role_dlq_and_targets(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    env = _function(resources_of, config, definition)["Properties"]["Environment"]["Variables"]
    assert env[SCHEDULES.group_env_var] == config.physical_name(SCHEDULES.group)
    assert env[SCHEDULES.role_env_var] == {"Fn::GetAtt": [_scheduler_role_id(resources_of), "Arn"]}
    dlq_id = _queue_id(resources_of, config.physical_name(SCHEDULES.dlq))
    assert env[SCHEDULES.dlq_arn_env_var] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    for queue in resources.SEND_QUEUES:
        assert queue.arn_env_var is not None
        queue_id = _queue_id(resources_of, config.physical_name(queue.name))
        assert env[queue.arn_env_var] == {"Fn::GetAtt": [queue_id, "Arn"]}


@pytest.mark.parametrize("definition", SCHEDULE_FUNCTIONS, ids=lambda d: d.name)
def test_function_manages_schedules_of_the_group_only(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    statements = _function_statements(resources_of, config, definition)
    scheduler = [s for s in statements if any(a.startswith("scheduler:") for a in _as_list(s["Action"]))]
    [statement] = scheduler
    assert sorted(_as_list(statement["Action"])) == sorted(MANAGE_ACTIONS)
    assert "Condition" not in statement
    [resource] = _as_list(statement["Resource"])
    parts = resource["Fn::Join"][1]
    assert parts[0] == "arn:" and {"Ref": "AWS::Partition"} in parts
    assert {"Ref": "AWS::Region"} in parts and {"Ref": "AWS::AccountId"} in parts
    assert parts[-1] == f":schedule/{config.physical_name(SCHEDULES.group)}/*"


@pytest.mark.parametrize("definition", SCHEDULE_FUNCTIONS, ids=lambda d: d.name)
def test_function_may_pass_the_scheduler_role_to_scheduler_only(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    statements = _function_statements(resources_of, config, definition)
    [pass_role] = [s for s in statements if "iam:PassRole" in _as_list(s["Action"])]
    assert _as_list(pass_role["Action"]) == ["iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [_scheduler_role_id(resources_of), "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    assert {a for s in statements for a in _as_list(s["Action"]) if a.startswith("iam:")} == {"iam:PassRole"}


def test_only_the_api_and_the_worker_touch_schedules(resources_of: Any, config: EnvironmentConfig) -> None:
    assert {d.name for d in FUNCTIONS if d.schedules} == {d.name for d in SCHEDULE_FUNCTIONS}
    env = _function(resources_of, config, AUTHORIZER)["Properties"]["Environment"]["Variables"]
    assert SCHEDULES.group_env_var not in env
    actions = {a for s in _function_statements(resources_of, config, AUTHORIZER) for a in _as_list(s["Action"])}
    assert not {a for a in actions if a.startswith(("scheduler:", "iam:"))}


def test_every_scheduler_and_pass_role_grant_in_the_stack(resources_of: Any, config: EnvironmentConfig) -> None:
    """Nothing anywhere may manage other groups' schedules or pass another role to Scheduler."""
    text = json.dumps([p["Properties"]["PolicyDocument"] for p in resources_of("AWS::IAM::Policy").values()])
    assert text.count('"iam:PassRole"') == len(SCHEDULE_FUNCTIONS)
    assert text.count(":schedule/") == len(SCHEDULE_FUNCTIONS)
    assert ":schedule/*" not in text and "schedule-group" not in text


def test_outputs(template_json: dict[str, Any], resources_of: Any, config: EnvironmentConfig) -> None:
    outputs = template_json["Outputs"]
    assert outputs["ScheduleGroupName"]["Value"] == config.physical_name(SCHEDULES.group)
    assert outputs["SchedulerRoleArn"]["Value"] == {"Fn::GetAtt": [_scheduler_role_id(resources_of), "Arn"]}
    dlq_id = _queue_id(resources_of, config.physical_name(SCHEDULES.dlq))
    assert outputs["SchedulesDlqUrl"]["Value"] == {"Ref": dlq_id}
