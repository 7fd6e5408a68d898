"""The DynamoDB tables, one per `petrel.resources.TABLES` entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import removal_policy
from petrel import resources

# read: GetItem, BatchGetItem, Query. read_update: also PutItem, UpdateItem and ConditionCheckItem, no
# DeleteItem or BatchWriteItem (a function that only creates and transitions items). read_write: all.
TableAccess = Literal["read", "read_update", "read_write"]

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}

# Item-level actions only: no Scan (SCAN_ACTIONS), no table management, no streams.
READ_ACTIONS: tuple[str, ...] = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
UPDATE_ACTIONS: tuple[str, ...] = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",  # a condition check inside TransactWriteItems
)
WRITE_ACTIONS: tuple[str, ...] = (*UPDATE_ACTIONS, "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
# Reads every partition (granted on its own, to the functions that name the table in `scans`).
SCAN_ACTIONS: tuple[str, ...] = ("dynamodb:Scan",)
ACCESS_ACTIONS: dict[str, tuple[str, ...]] = {
    "read": READ_ACTIONS,
    "read_update": (*READ_ACTIONS, *UPDATE_ACTIONS),
    "read_write": (*READ_ACTIONS, *WRITE_ACTIONS),
}


def _attribute(key: resources.Key) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_ATTRIBUTE_TYPES[key.type])


class PetrelTables(Construct):
    """On-demand tables with point-in-time recovery, TTL and AWS-managed encryption."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.tables: dict[str, dynamodb.Table] = {}
        for spec in resources.TABLES:
            table = dynamodb.Table(
                self,
                _construct_id(spec.name),
                table_name=config.physical_name(spec.name),
                partition_key=_attribute(spec.partition_key),
                sort_key=_attribute(spec.sort_key) if spec.sort_key else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                time_to_live_attribute=spec.ttl_attribute,
                removal_policy=removal_policy(config),
                deletion_protection=not config.destroy_on_delete,
            )
            for index in spec.indexes:
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=_attribute(index.partition_key),
                    sort_key=_attribute(index.sort_key) if index.sort_key else None,
                    projection_type=_projection_type(index),
                    non_key_attributes=list(index.projection) if index.projection else None,
                )
            self.tables[spec.name] = table

    def table(self, spec: resources.TableSpec) -> dynamodb.Table:
        return self.tables[spec.name]

    def grant(
        self,
        grantee: iam.IGrantable,
        spec: resources.TableSpec,
        access: TableAccess,
        indexes: Sequence[str] = (),
    ) -> None:
        """Item-level access to one table, and Query on the indexes named in `indexes` (each by its
        ARN, no wildcard; an index not named cannot be queried, e.g. the API key hashes)."""
        table = self.table(spec)
        known = {index.name for index in spec.indexes}
        unknown = sorted(set(indexes) - known)
        if unknown:
            raise ValueError(f"table {spec.name} has no index {unknown}")
        iam.Grant.add_to_principal(
            grantee=grantee, actions=list(ACCESS_ACTIONS[access]), resource_arns=[table.table_arn]
        )
        if indexes:
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=["dynamodb:Query"],
                resource_arns=[f"{table.table_arn}/index/{name}" for name in indexes],
            )

    def grant_scan(self, grantee: iam.IGrantable, spec: resources.TableSpec) -> None:
        """`dynamodb:Scan` on one table itself (not its indexes): for a function whose work list spans
        every tenant's partition, e.g. the poller's mailboxes."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=list(SCAN_ACTIONS), resource_arns=[self.table(spec).table_arn]
        )


def _construct_id(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Table"


def _projection_type(index: resources.IndexSpec) -> dynamodb.ProjectionType:
    """ALL for no projection given, KEYS_ONLY for an empty one, INCLUDE for a list of attributes."""
    if index.projection is None:
        return dynamodb.ProjectionType.ALL
    return dynamodb.ProjectionType.INCLUDE if index.projection else dynamodb.ProjectionType.KEYS_ONLY
