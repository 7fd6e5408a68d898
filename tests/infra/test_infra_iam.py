"""Least privilege (issue 7, issue 9): table actions per function, index grants, bodies-bucket prefixes,
the lifecycle rules, and the API's binary pass-through that keeps bodies within Lambda's limit."""

from __future__ import annotations

import json
from fnmatch import fnmatch
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
    for index in (resources.BY_TENANT.name, resources.BY_TENANT_STATUS.name, resources.BY_MESSAGE_ID.name):
        assert _actions_on(api, _index_arn(resources_of, config, resources.MESSAGES, index)) == {"dynamodb:Query"}
    worker = json.dumps(_statements(resources_of, config, SEND_WORKER))
    assert "/index/" not in worker


def _bucket_id(resources_of: Any) -> str:
    [lid] = [lid for lid, b in resources_of("AWS::S3::Bucket").items() if "LoggingConfiguration" in b["Properties"]]
    return lid


def _object_arn(bucket_id: str, prefix: str) -> Any:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}*"]]}


def _s3_grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(action, resource as JSON) of every S3 action in `statements`."""
    return {
        (action, json.dumps(resource, sort_keys=True))
        for s in statements
        for action in _as_list(s["Action"])
        if action.startswith("s3:")
        for resource in _as_list(s["Resource"])
    }


# What each function may do in the bodies bucket, written out here (not read from the function table):
# key prefix -> object actions.
BODY_GRANTS: dict[str, dict[str, set[str]]] = {
    "authorizer": {},
    "api": {
        prefix: {"s3:GetObject", "s3:PutObject"}
        for prefix in (
            resources.BODIES_PREFIX,
            resources.ATTACHMENTS_PREFIX,
            resources.IDEMPOTENCY_PREFIX,
            resources.INBOUND_PREFIX,  # POST /v1/inbound/raw stores; GET signs attachment links
        )
    },
    "send_worker": {resources.BODIES_PREFIX: {"s3:GetObject"}, resources.INBOUND_PREFIX: {"s3:PutObject"}},
    "sweeper": {},
    "imap_poller": {resources.INBOUND_PREFIX: {"s3:PutObject"}},  # stores what it fetched, reads nothing
    "ingest_worker": {resources.INBOUND_PREFIX: {"s3:GetObject", "s3:PutObject"}},  # raw in, attachments out
    "admin_api": {},  # tenants, keys, servers, mailboxes, domains: no message body
    "domain_checker": {},
}


@pytest.mark.parametrize("definition", FUNCTIONS, ids=lambda d: d.name)
def test_bodies_grants_stop_at_each_functions_prefixes(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    bucket = _bucket_id(resources_of)
    expected = {
        (action, json.dumps(_object_arn(bucket, prefix), sort_keys=True))
        for prefix, actions in BODY_GRANTS[definition.name].items()
        for action in actions
    }
    if resources.ATTACHMENTS_PREFIX in BODY_GRANTS[definition.name]:  # a missing upload is a 404, not a 403
        expected.add(("s3:ListBucket", json.dumps({"Fn::GetAtt": [bucket, "Arn"]}, sort_keys=True)))
    statements = _statements(resources_of, config, definition)
    assert _s3_grants(statements) == expected
    assert '"/*"' not in json.dumps([s["Resource"] for s in statements])  # no whole-bucket object grant


def test_every_prefix_a_function_may_write_expires(resources_of: Any, config: EnvironmentConfig) -> None:
    """No object outlives its rule: each prefix granted has its own expiration, and no rule spans the
    whole bucket (S3 applies the shortest of overlapping expirations, which would cut incoming mail)."""
    rules = resources_of("AWS::S3::Bucket")[_bucket_id(resources_of)]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = {rule["Prefix"]: rule["ExpirationInDays"] for rule in rules if "ExpirationInDays" in rule}
    assert all("Prefix" in rule for rule in rules if "ExpirationInDays" in rule)
    written = {
        prefix for grants in BODY_GRANTS.values() for prefix, actions in grants.items() if "s3:PutObject" in actions
    }
    assert written <= set(expiring)
    assert expiring[resources.INBOUND_PREFIX] == config.inbound_retention_days
    assert expiring[resources.BODIES_PREFIX] == config.body_retention_days
    assert expiring[resources.IDEMPOTENCY_PREFIX] == config.body_retention_days
    [uploads] = [rule for rule in rules if "AbortIncompleteMultipartUpload" in rule]
    assert uploads["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1} and "Prefix" not in uploads


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


def test_raw_mail_pushed_as_message_rfc822_reaches_the_function_base64_encoded(resources_of: Any) -> None:
    """POST /v1/inbound/raw: the body is MIME bytes, which only a binary media type keeps intact."""
    [api] = resources_of("AWS::ApiGateway::RestApi").values()
    assert any(fnmatch("message/rfc822", pattern) for pattern in api["Properties"]["BinaryMediaTypes"])
