"""Least privilege (issue 7): table actions per function, index grants, bodies-bucket prefixes, the
attachments' lifecycle rule, and the API's binary pass-through that keeps bodies within Lambda's limit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import EnvironmentConfig
from infra.constructs.api import LAMBDA_SYNC_PAYLOAD_BYTES
from infra.constructs.functions import API, AUTHORIZER, FUNCTIONS, SEND_WORKER, FunctionDefinition
from petrel import resources
from petrel.models.api import MAX_REQUEST_BYTES

pytestmark = pytest.mark.infra


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> list[dict[str, Any]]:
    name = resources.physical_name(config.name_prefix, definition.slug)
    [function] = [f for f in resources_of("AWS::Lambda::Function").values() if f["Properties"]["FunctionName"] == name]
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in resources_of("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _table_id(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec) -> str:
    name = config.physical_name(spec.name)
    [lid] = [lid for lid, t in resources_of("AWS::DynamoDB::Table").items() if t["Properties"]["TableName"] == name]
    return lid


def _actions_on(statements: list[dict[str, Any]], resource: Any) -> set[str]:
    return {action for s in statements if resource in _as_list(s["Resource"]) for action in _as_list(s["Action"])}


def _table_arn(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec) -> Any:
    return {"Fn::GetAtt": [_table_id(resources_of, config, spec), "Arn"]}


def _index_arn(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec, index: str) -> Any:
    return {"Fn::Join": ["", [_table_arn(resources_of, config, spec), f"/index/{index}"]]}


def test_the_worker_may_not_delete_or_batch_write(resources_of: Any, config: EnvironmentConfig) -> None:
    statements = _statements(resources_of, config, SEND_WORKER)
    for spec in (resources.MESSAGES, resources.SUPPRESSIONS):
        actions = _actions_on(statements, _table_arn(resources_of, config, spec))
        assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"} <= actions, spec.name
        assert not actions & {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}, spec.name
    everything = {a for s in statements for a in _as_list(s["Action"])}
    assert "dynamodb:DeleteItem" not in everything and "dynamodb:BatchWriteItem" not in everything


def test_the_api_deletes_only_where_it_must(resources_of: Any, config: EnvironmentConfig) -> None:
    statements = _statements(resources_of, config, API)
    messages = _actions_on(statements, _table_arn(resources_of, config, resources.MESSAGES))
    assert "dynamodb:DeleteItem" not in messages and "dynamodb:BatchWriteItem" not in messages
    for spec in (resources.IDEMPOTENCY, resources.SUPPRESSIONS):  # a claim released, a suppression removed
        assert "dynamodb:DeleteItem" in _actions_on(statements, _table_arn(resources_of, config, spec))


def test_only_the_authorizer_may_query_the_key_hash_index(resources_of: Any, config: EnvironmentConfig) -> None:
    key_hash = _index_arn(resources_of, config, resources.TENANTS, "by_key_hash")
    for definition in FUNCTIONS:
        allowed = _actions_on(_statements(resources_of, config, definition), key_hash)
        assert allowed == ({"dynamodb:Query"} if definition is AUTHORIZER else set()), definition.name
    every_policy = json.dumps([p["Properties"] for p in resources_of("AWS::IAM::Policy").values()])
    assert every_policy.count("/index/by_key_hash") == 1


def test_the_api_queries_the_listing_indexes_and_the_worker_none(resources_of: Any, config: EnvironmentConfig) -> None:
    api = _statements(resources_of, config, API)
    for index in ("by_tenant", "by_tenant_status", "by_message_id"):
        assert _actions_on(api, _index_arn(resources_of, config, resources.MESSAGES, index)) == {"dynamodb:Query"}
    worker = json.dumps(_statements(resources_of, config, SEND_WORKER))
    assert "/index/" not in worker


def _bucket_id(resources_of: Any) -> str:
    [lid] = [lid for lid, b in resources_of("AWS::S3::Bucket").items() if "LoggingConfiguration" in b["Properties"]]
    return lid


def _object_arn(bucket_id: str, prefix: str) -> Any:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}*"]]}


def test_bodies_grants_stop_at_each_functions_prefixes(resources_of: Any, config: EnvironmentConfig) -> None:
    bucket = _bucket_id(resources_of)
    worker = _statements(resources_of, config, SEND_WORKER)
    s3_resources = [
        r for s in worker if any(a.startswith("s3:") for a in _as_list(s["Action"])) for r in _as_list(s["Resource"])
    ]
    assert s3_resources == [_object_arn(bucket, resources.BODIES_PREFIX)]
    assert _actions_on(worker, _object_arn(bucket, resources.BODIES_PREFIX)) == {"s3:GetObject"}

    api = _statements(resources_of, config, API)
    api_objects = {
        json.dumps(r, sort_keys=True)
        for s in api
        if "s3:PutObject" in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    }
    expected = (resources.BODIES_PREFIX, resources.ATTACHMENTS_PREFIX, resources.IDEMPOTENCY_PREFIX)
    assert api_objects == {json.dumps(_object_arn(bucket, p), sort_keys=True) for p in expected}
    assert _actions_on(api, {"Fn::GetAtt": [bucket, "Arn"]}) == {"s3:ListBucket"}
    s3_statements = [s for s in api + worker if any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    assert '"/*"' not in json.dumps([s["Resource"] for s in s3_statements])  # no whole-bucket object grant


def test_uploaded_attachments_expire_after_a_day(resources_of: Any, config: EnvironmentConfig) -> None:
    rules = resources_of("AWS::S3::Bucket")[_bucket_id(resources_of)]["Properties"]["LifecycleConfiguration"]["Rules"]
    by_id = {rule["Id"]: rule for rule in rules}
    assert by_id["attachments"] == {
        "Id": "attachments",
        "Prefix": resources.ATTACHMENTS_PREFIX,
        "ExpirationInDays": resources.ATTACHMENT_RETENTION_DAYS,
        "Status": "Enabled",
    }
    assert by_id["bodies"]["ExpirationInDays"] == config.body_retention_days


def test_bodies_reach_the_function_base64_encoded_within_lambdas_limit(resources_of: Any) -> None:
    [api] = resources_of("AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["BinaryMediaTypes"] == ["*/*"]
    # The largest body the api function takes, base64-encoded, plus room for headers and context.
    assert 4 * MAX_REQUEST_BYTES // 3 + 64 * 1024 < LAMBDA_SYNC_PAYLOAD_BYTES
