"""Every environment passes cdk-nag (AwsSolutions) and cfn-lint; the outputs are there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped]

from infra.config import EnvironmentConfig
from petrel import resources

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def all_environments(tmp_path_factory: pytest.TempPathFactory, synthesizer: Any) -> tuple[Path, Any]:
    outdir = tmp_path_factory.mktemp("cdk-all")
    # Raises (jsii RuntimeError "Validation failed") on any unacknowledged cdk-nag finding.
    return outdir, synthesizer(outdir, None)


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
    assert {"TenantsTableName", "MessagesTableName", "IdempotencyTableName"} <= set(outputs)
    assert {"SendTransactionalQueueUrl", "SendBulkQueueUrl", "BodiesBucketName"} <= set(outputs)


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
