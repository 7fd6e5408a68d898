"""The ingest side (issue 9): the poller's rule and run limits, and what the poller, the ingest worker and
the functions that push raw mail may do (tables, indexes, queues, secrets)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import app as petrel_app
from infra.config import CONTEXT_KEY, EnvironmentConfig
from infra.constructs.functions import API, IMAP_POLLER, INGEST_WORKER, SEND_WORKER, FunctionDefinition
from infra.constructs.tables import ACCESS_ACTIONS
from petrel import resources

pytestmark = pytest.mark.infra

LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _function(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> tuple[str, Any]:
    [(lid, function)] = [
        (lid, f)
        for lid, f in resources_of("AWS::Lambda::Function").items()
        if f["Properties"]["FunctionName"] == config.physical_name(definition.slug)
    ]
    return lid, function


def _grants(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> dict[str, list[Any]]:
    """Action -> every resource its role is allowed it on."""
    _, function = _function(resources_of, config, definition)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    granted: dict[str, list[Any]] = {}
    for policy in resources_of("AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"]):
                granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    return granted


def _id_by_name(resources_of: Any, resource_type: str, key: str, name: str) -> str:
    [lid] = [lid for lid, r in resources_of(resource_type).items() if r["Properties"][key] == name]
    return lid


def _table_arn(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec) -> Any:
    table_id = _id_by_name(resources_of, "AWS::DynamoDB::Table", "TableName", config.physical_name(spec.name))
    return {"Fn::GetAtt": [table_id, "Arn"]}


def _queue_arn(resources_of: Any, name: str) -> Any:
    return {"Fn::GetAtt": [_id_by_name(resources_of, "AWS::SQS::Queue", "QueueName", name), "Arn"]}


def _on(granted: dict[str, list[Any]], resource: Any, prefix: str = "dynamodb:") -> set[str]:
    return {action for action, targets in granted.items() if action.startswith(prefix) and resource in targets}


def _index_arn(table_arn: Any, index: str) -> Any:
    return {"Fn::Join": ["", [table_arn, f"/index/{index}"]]}


def test_a_rule_runs_the_poller_every_interval(resources_of: Any, config: EnvironmentConfig) -> None:
    function_id, _ = _function(resources_of, config, IMAP_POLLER)
    [rule] = [
        r["Properties"]
        for r in resources_of("AWS::Events::Rule").values()
        if r["Properties"]["Name"] == config.physical_name("imap-poller")
    ]
    assert config.poll_interval_minutes == 1
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["State"] == "ENABLED"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    # A run missed is made up by the next one: no retry, and no backlog of runs.
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    [invoke_config] = [
        c["Properties"]
        for c in resources_of("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert invoke_config["MaximumRetryAttempts"] == 0
    assert invoke_config["MaximumEventAgeInSeconds"] == 60
    [permission] = [
        p["Properties"]
        for p in resources_of("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "events.amazonaws.com"
        and p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    assert permission["Action"] == "lambda:InvokeFunction"


def test_the_poll_interval_and_the_reservation_come_from_the_config(tmp_path: Path, synthesizer: Any) -> None:
    raw = copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY])
    raw["dev"]["poll_interval_minutes"] = 5
    raw["dev"]["poller_one_at_a_time"] = False
    assembly = synthesizer(tmp_path, "dev", environments=raw)
    found = assembly.get_stack_artifact(petrel_app.stack_id("dev")).template["Resources"].values()
    [rule] = [
        r["Properties"] for r in found if r["Type"] == "AWS::Events::Rule" and "imap-poller" in r["Properties"]["Name"]
    ]
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    [poller] = [
        r["Properties"]
        for r in found
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["FunctionName"] == "petrel-dev-imap-poller"
    ]
    assert "ReservedConcurrentExecutions" not in poller


def test_the_poller_reads_mailboxes_writes_its_cursors_and_queues_raw_mail_only(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    granted = _grants(resources_of, config, IMAP_POLLER)
    tenants = _table_arn(resources_of, config, resources.TENANTS)
    # Its own cursor and health items: puts and updates, never a delete; and a Scan for its work list.
    assert _on(granted, tenants) == {*ACCESS_ACTIONS["read_update"], "dynamodb:Scan"}
    assert granted["dynamodb:Scan"] == [tenants]  # the table itself, no index
    assert {a for a in granted if a.startswith("dynamodb:")} == _on(granted, tenants)
    assert granted["sqs:SendMessage"] == [_queue_arn(resources_of, config.physical_name(resources.INGEST.name))]
    [secrets] = granted["secretsmanager:GetSecretValue"]
    assert secrets["Fn::Join"][1][-1].endswith(":secret:" + resources.secrets_prefix(config.name_prefix) + "*")
    assert set(granted) == {
        *ACCESS_ACTIONS["read_update"],
        "dynamodb:Scan",
        "s3:PutObject",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
        *LOG_ACTIONS,
    }
    [bucket_id] = [
        lid for lid, b in resources_of("AWS::S3::Bucket").items() if "LoggingConfiguration" in b["Properties"]
    ]
    assert granted["s3:PutObject"] == [
        {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{resources.INBOUND_PREFIX}*"]]}
    ]


def test_only_the_functions_that_list_every_tenants_items_may_scan(resources_of: Any) -> None:
    """The poller (mailboxes), the admin API (tenants), the domain checker (domains) and the sweeper
    (tenants: their creation shards)."""
    text = json.dumps([p["Properties"]["PolicyDocument"] for p in resources_of("AWS::IAM::Policy").values()])
    assert text.count('"dynamodb:Scan"') == 4


def test_the_ingest_worker_may_do_its_job_only(resources_of: Any, config: EnvironmentConfig) -> None:
    granted = _grants(resources_of, config, INGEST_WORKER)
    messages = _table_arn(resources_of, config, resources.MESSAGES)
    assert _on(granted, _table_arn(resources_of, config, resources.TENANTS)) == set(ACCESS_ACTIONS["read"])
    assert _on(granted, messages) == set(ACCESS_ACTIONS["read_update"])
    assert _on(granted, _table_arn(resources_of, config, resources.SUPPRESSIONS)) == set(ACCESS_ACTIONS["read_update"])
    assert _on(granted, _table_arn(resources_of, config, resources.INBOUND)) == set(ACCESS_ACTIONS["read_write"])
    assert _on(granted, _index_arn(messages, resources.BY_MESSAGE_ID.name)) == {"dynamodb:Query"}
    indexes = {json.dumps(r) for r in granted["dynamodb:Query"] if "Fn::Join" in r}
    assert indexes == {json.dumps(_index_arn(messages, resources.BY_MESSAGE_ID.name))}
    ingest_queue = _queue_arn(resources_of, config.physical_name(resources.INGEST.name))
    # It consumes the ingest queue (the event source's actions) and sends to no queue.
    assert "sqs:SendMessage" not in granted
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        assert granted[action] == [ingest_queue], action
    assert not {a for a in granted if a.startswith(("secretsmanager:", "scheduler:", "iam:"))}


@pytest.mark.parametrize("definition", [API, SEND_WORKER, IMAP_POLLER], ids=lambda d: d.name)
def test_raw_mail_is_queued_on_the_ingest_queue(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    granted = _grants(resources_of, config, definition)
    assert _queue_arn(resources_of, config.physical_name(resources.INGEST.name)) in granted["sqs:SendMessage"]
    assert _queue_arn(resources_of, config.physical_name(resources.dlq_name(resources.INGEST))) not in granted.get(
        "sqs:SendMessage", []
    )


def test_the_api_reads_inbound_records_through_their_indexes_and_never_writes_them(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    granted = _grants(resources_of, config, API)
    inbound = _table_arn(resources_of, config, resources.INBOUND)
    assert _on(granted, inbound) == set(ACCESS_ACTIONS["read"])
    for index in resources.INBOUND.indexes:
        assert _on(granted, _index_arn(inbound, index.name)) == {"dynamodb:Query"}, index.name


def test_the_ingest_dlq_raises_an_alarm(resources_of: Any, config: EnvironmentConfig) -> None:
    dlq = config.physical_name(resources.dlq_name(resources.INGEST))
    queue_id = _id_by_name(resources_of, "AWS::SQS::Queue", "QueueName", dlq)
    [alarm] = [
        a["Properties"]
        for a in resources_of("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmName"] == f"{dlq}-not-empty"
    ]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
