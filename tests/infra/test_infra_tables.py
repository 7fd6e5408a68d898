"""DynamoDB tables, asserted against petrel.resources.TABLES (the one definition of keys and indexes)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import EnvironmentConfig
from infra.constructs.tables import ACCESS_ACTIONS
from petrel import resources

pytestmark = pytest.mark.infra


def _key_schema(partition: resources.Key, sort: resources.Key | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition.name, "KeyType": "HASH"}]
    if sort:
        schema.append({"AttributeName": sort.name, "KeyType": "RANGE"})
    return schema


@pytest.mark.parametrize("spec", resources.TABLES, ids=lambda spec: spec.name)
def test_table_matches_its_spec(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec) -> None:
    name = resources.physical_name(config.name_prefix, spec.name)
    [table] = [t for t in resources_of("AWS::DynamoDB::Table").values() if t["Properties"]["TableName"] == name]
    props = table["Properties"]

    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["TimeToLiveSpecification"] == {"AttributeName": spec.ttl_attribute, "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert "KMSMasterKeyId" not in props["SSESpecification"]  # the AWS-managed key
    assert props["KeySchema"] == _key_schema(spec.partition_key, spec.sort_key)

    expected_attributes = {spec.partition_key.name: spec.partition_key.type}
    if spec.sort_key:
        expected_attributes[spec.sort_key.name] = spec.sort_key.type
    for index in spec.indexes:
        expected_attributes[index.partition_key.name] = index.partition_key.type
        if index.sort_key:
            expected_attributes[index.sort_key.name] = index.sort_key.type
    attributes = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert attributes == expected_attributes

    indexes = {gsi["IndexName"]: gsi for gsi in props.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in spec.indexes}
    for index in spec.indexes:
        assert indexes[index.name]["KeySchema"] == _key_schema(index.partition_key, index.sort_key)
        if index.projection is None:
            assert indexes[index.name]["Projection"] == {"ProjectionType": "ALL"}
        elif not index.projection:
            assert indexes[index.name]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
        else:
            assert indexes[index.name]["Projection"] == {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": list(index.projection),
            }


def test_one_table_per_spec(resources_of: Any) -> None:
    assert len(resources_of("AWS::DynamoDB::Table")) == len(resources.TABLES)


def test_dev_tables_are_destroyed_with_the_stack(resources_of: Any, config: EnvironmentConfig) -> None:
    assert config.removal_policy == "destroy"
    for table in resources_of("AWS::DynamoDB::Table").values():
        assert table["DeletionPolicy"] == "Delete"


# function -> access to the suppressions table: the API lists, adds and removes entries; the worker
# checks each recipient and adds the address of a hard bounce (never deletes); the authorizer never reads it.
SUPPRESSIONS_ACCESS = {"api": "read_write", "send-worker": "read_update", "authorizer": None}
# ... and to the buckets table: only the worker shapes traffic (conditional updates; idle items expire).
BUCKETS_ACCESS = {"send-worker": "read_update", "api": None, "authorizer": None, "sweeper": None}


@pytest.mark.parametrize(
    ("spec", "slug", "access"),
    [(resources.SUPPRESSIONS, slug, access) for slug, access in SUPPRESSIONS_ACCESS.items()]
    + [(resources.BUCKETS, slug, access) for slug, access in BUCKETS_ACCESS.items()],
)
def test_table_grants(
    resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec, slug: str, access: str | None
) -> None:
    [(table_id, _)] = [
        (lid, t)
        for lid, t in resources_of("AWS::DynamoDB::Table").items()
        if t["Properties"]["TableName"] == config.physical_name(spec.name)
    ]
    [function] = [
        f["Properties"]
        for f in resources_of("AWS::Lambda::Function").values()
        if f["Properties"]["FunctionName"] == config.physical_name(slug)
    ]
    env = function["Environment"]["Variables"]
    role_id = function["Role"]["Fn::GetAtt"][0]
    table_arn = {"Fn::GetAtt": [table_id, "Arn"]}
    granted: set[str] = set()
    for policy in resources_of("AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if table_arn in targets:
                actions = statement["Action"]
                granted.update(actions if isinstance(actions, list) else [actions])
    if access is None:
        assert granted == set()
        assert spec.env_var not in env
        return
    assert env[spec.env_var] == {"Ref": table_id}
    assert granted == set(ACCESS_ACTIONS[access])
