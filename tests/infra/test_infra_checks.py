"""Every environment passes cdk-nag (AwsSolutions) and cfn-lint; the outputs are there."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template
from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped]

import app as petrel_app
from infra.config import CONTEXT_KEY, EnvironmentConfig
from infra.constructs.functions import FUNCTIONS
from petrel import resources

pytestmark = pytest.mark.infra


def test_every_environment_synthesizes_without_cdk_nag_findings(
    all_environments: tuple[Path, Any], environments: dict[str, EnvironmentConfig]
) -> None:
    outdir, assembly = all_environments
    names = {stack.stack_name for stack in assembly.stacks}
    assert names == {config.name_prefix for config in environments.values()}
    report_path = outdir / "validation-report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        violations = [v for plugin in report.get("pluginReports", []) for v in plugin.get("violations", [])]
        assert violations == []


def test_an_unacknowledged_finding_fails_synthesis(tmp_path: Path, synthesizer: Any) -> None:
    def add_wildcard_policy(cdk_app: Any) -> None:
        stack = cdk_app.node.find_child(petrel_app.stack_id("dev"))
        iam.Policy(
            stack,
            "TooBroad",
            statements=[iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=["*"])],
            roles=[stack.workers.worker.role],
        )

    with pytest.raises(Exception, match=r"AwsSolutions-IAM5\[Resource::\*\]"):
        synthesizer(tmp_path, "dev", extend=add_wildcard_policy)


def test_environments_differ_as_configured(
    all_environments: tuple[Path, Any], environments: dict[str, EnvironmentConfig]
) -> None:
    _, assembly = all_environments
    for name, config in environments.items():
        stack = assembly.get_stack_artifact(petrel_app.stack_id(name))
        found = stack.template["Resources"].values()
        assert stack.termination_protection is (config.removal_policy == "retain")
        tables = [r for r in found if r["Type"] == "AWS::DynamoDB::Table"]
        assert {t["DeletionPolicy"] for t in tables} == {"Delete" if config.destroy_on_delete else "Retain"}
        functions = {
            lid: r["Properties"]["FunctionName"]
            for lid, r in stack.template["Resources"].items()
            if r["Type"] == "AWS::Lambda::Function"
        }
        for mapping in (r["Properties"] for r in found if r["Type"] == "AWS::Lambda::EventSourceMapping"):
            assert mapping.get("MaximumBatchingWindowInSeconds", 0) == config.max_batching_window_seconds
            ingest = functions[mapping["FunctionName"]["Ref"]] == config.physical_name("ingest-worker")
            assert mapping["BatchSize"] == (config.ingest_batch_size if ingest else config.batch_size)
        for queue in (r["Properties"] for r in found if r["Type"] == "AWS::SQS::Queue"):
            if "RedrivePolicy" in queue:
                ingest = queue["QueueName"] == config.physical_name(resources.INGEST.name)
                timeout = config.ingest_timeout_seconds if ingest else config.worker_timeout_seconds
                assert queue["VisibilityTimeout"] == 6 * timeout
                assert queue["RedrivePolicy"]["maxReceiveCount"] == config.dlq_max_receive_count
        [poll_rule] = [
            r["Properties"]
            for r in found
            if r["Type"] == "AWS::Events::Rule" and r["Properties"]["Name"] == config.physical_name("imap-poller")
        ]
        assert poll_rule["ScheduleExpression"] == (
            "rate(1 minute)" if config.poll_interval_minutes == 1 else f"rate({config.poll_interval_minutes} minutes)"
        )
        [bodies] = [
            r["Properties"]
            for r in found
            if r["Type"] == "AWS::S3::Bucket" and "LoggingConfiguration" in r["Properties"]
        ]
        [inbound_rule] = [r for r in bodies["LifecycleConfiguration"]["Rules"] if r["Id"] == "inbound"]
        assert inbound_rule["ExpirationInDays"] == config.inbound_retention_days
        assert all(
            r["Properties"]["QueueName"].startswith(config.name_prefix + "-")
            for r in found
            if r["Type"] == "AWS::SQS::Queue"
        )


def test_tracing_is_switched_on_by_config(tmp_path: Path, synthesizer: Any) -> None:
    raw = copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY])
    raw["dev"]["tracing"] = True
    assembly = synthesizer(tmp_path, "dev", environments=raw)  # cdk-nag must still pass
    found = assembly.get_stack_artifact(petrel_app.stack_id("dev")).template["Resources"].values()
    functions = [r["Properties"] for r in found if r["Type"] == "AWS::Lambda::Function"]
    assert [f["TracingConfig"] for f in functions] == [{"Mode": "Active"}] * len(FUNCTIONS)
    [stage] = [r["Properties"] for r in found if r["Type"] == "AWS::ApiGateway::Stage"]
    assert stage["TracingEnabled"] is True


def test_cfn_lint_finds_nothing(all_environments: tuple[Path, Any], tmp_path: Path) -> None:
    _, assembly = all_environments
    config = ManualArgs(ignore_checks=["W3005"], regions=["us-east-1"])
    for stack in assembly.stacks:
        path = tmp_path / f"{stack.stack_name}.template.json"
        path.write_text(json.dumps(stack.template))
        problems = [f"{m.rule.id} {m.message} ({m.path})" for m in lint_file(path, config=config)]
        assert problems == [], stack.stack_name


def test_outputs(template: Template) -> None:
    outputs = template.to_json()["Outputs"]
    assert "ApiUrl" in outputs
    assert outputs["SecretsPrefix"]["Value"] == resources.secrets_prefix("petrel-dev")
    assert {f"{spec.name.capitalize()}TableName" for spec in resources.TABLES} <= set(outputs)
    assert "SuppressionsTableName" in outputs
    assert {"SendTransactionalQueueUrl", "SendBulkQueueUrl", "BodiesBucketName"} <= set(outputs)
    assert {"InboundTableName", "IngestQueueUrl", "IngestDlqUrl"} <= set(outputs)


def test_bodies_bucket_is_private_encrypted_tls_only_and_expires(resources_of: Any, config: EnvironmentConfig) -> None:
    buckets = resources_of("AWS::S3::Bucket")
    [(bodies_id, bodies)] = [(lid, b) for lid, b in buckets.items() if "LoggingConfiguration" in b["Properties"]]
    props = bodies["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    expirations = [r.get("ExpirationInDays") for r in props["LifecycleConfiguration"]["Rules"]]
    assert config.body_retention_days in expirations
    assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"] in buckets
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources_of("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bodies_id}
    ]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for statements in policies
        for s in statements
    )
