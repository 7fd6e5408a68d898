"""The DynamoDB tables, one per `petrel.resources.TABLES` entry."""

from __future__ import annotations

from typing import Literal

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import removal_policy
from petrel import resources

TableAccess = Literal["read", "read_write"]

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}

# Item-level actions only: no Scan, no table management, no streams.
READ_ACTIONS: tuple[str, ...] = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
WRITE_ACTIONS: tuple[str, ...] = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",  # a condition check inside TransactWriteItems
)


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
                    projection_type=dynamodb.ProjectionType.ALL,
                )
            self.tables[spec.name] = table

    def table(self, spec: resources.TableSpec) -> dynamodb.Table:
        return self.tables[spec.name]

    def grant(self, grantee: iam.IGrantable, spec: resources.TableSpec, access: TableAccess) -> None:
        """Item-level access to one table and to each of its indexes, named one by one (no wildcard)."""
        table = self.table(spec)
        index_arns = [f"{table.table_arn}/index/{index.name}" for index in spec.indexes]
        actions = [*READ_ACTIONS, *WRITE_ACTIONS] if access == "read_write" else list(READ_ACTIONS)
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=actions,
            resource_arns=[table.table_arn, *index_arns],
        )


def _construct_id(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Table"
