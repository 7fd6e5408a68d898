"""Create Petrel's tables, queues, bucket and schedule group on an AWS endpoint (moto, LocalStack)
from petrel.resources.

The same specs drive the CDK constructs, so local and deployed resources cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from petrel import resources as r

if TYPE_CHECKING:
    from petrel.container.admin import AdminSettings

# Who may assume the schedules' role (infra/constructs/schedules.py trusts the same service).
SCHEDULER_SERVICE = "scheduler.amazonaws.com"


@dataclass(frozen=True)
class LocalResources:
    prefix: str
    tables: dict[str, str]
    queue_urls: dict[str, str]
    queue_arns: dict[str, str]
    dlq_urls: dict[str, str]
    bucket: str
    secrets_prefix: str
    schedule_group: str
    scheduler_role_arn: str
    schedules_dlq_url: str
    schedules_dlq_arn: str
    # The DNS servers every function asks (PETREL_DNS_RESOLVERS, "host:port,..."): the local stack's Knot;
    # empty: the system's resolvers.
    dns_resolvers: str = ""

    def environment(self) -> dict[str, str]:
        """The PETREL_* variables the functions read (petrel.settings)."""
        env = {spec.env_var: self.tables[spec.name] for spec in r.TABLES}
        for spec in r.QUEUES:
            env[spec.env_var] = self.queue_urls[spec.name]
            if spec.arn_env_var is not None:
                env[spec.arn_env_var] = self.queue_arns[spec.name]
        env[r.BODIES_BUCKET_ENV] = self.bucket
        env[r.SECRETS_PREFIX_ENV] = self.secrets_prefix
        env[r.SCHEDULES.group_env_var] = self.schedule_group
        env[r.SCHEDULES.role_env_var] = self.scheduler_role_arn
        env[r.SCHEDULES.dlq_arn_env_var] = self.schedules_dlq_arn
        if self.dns_resolvers:
            env[r.DNS_RESOLVERS_ENV] = self.dns_resolvers
        return env

    def admin_settings(self, **fields: Any) -> AdminSettings:
        """The operator's settings (the CLI's, petrel.container.admin) for these resources; `fields`: the
        rest (region, endpoints, the max_age_hours limit)."""
        from petrel.container.admin import AdminSettings

        return AdminSettings(
            name_prefix=self.prefix,
            tenants_table=self.tables[r.TENANTS.name],
            messages_table=self.tables[r.MESSAGES.name],
            secrets_prefix=self.secrets_prefix,
            **fields,
        )


def _table_args(spec: r.TableSpec, name: str) -> dict[str, Any]:
    keys = [spec.partition_key] + ([spec.sort_key] if spec.sort_key else [])
    for index in spec.indexes:
        keys += [index.partition_key] + ([index.sort_key] if index.sort_key else [])
    definitions = {k.name: k.type for k in keys}

    def schema(pk: r.Key, sk: r.Key | None) -> list[dict[str, str]]:
        return [{"AttributeName": pk.name, "KeyType": "HASH"}] + (
            [{"AttributeName": sk.name, "KeyType": "RANGE"}] if sk else []
        )

    args: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in definitions.items()],
        "KeySchema": schema(spec.partition_key, spec.sort_key),
    }
    if spec.indexes:
        args["GlobalSecondaryIndexes"] = [
            {
                "IndexName": i.name,
                "KeySchema": schema(i.partition_key, i.sort_key),
                "Projection": _projection(i),
            }
            for i in spec.indexes
        ]
    return args


def _projection(index: r.IndexSpec) -> dict[str, Any]:
    if index.projection is None:
        return {"ProjectionType": "ALL"}
    if not index.projection:
        return {"ProjectionType": "KEYS_ONLY"}
    return {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(index.projection)}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _queue_arn(sqs: Any, url: str) -> str:
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return arn


def _like(sqs: Any, service: str) -> Any:
    """A client for `service` on the same region (and the same endpoint, if `sqs` was given one) as `sqs`."""
    endpoint = sqs.meta.endpoint_url
    custom = {} if ".amazonaws.com" in endpoint else {"endpoint_url": endpoint}
    return boto3.session.Session().client(service, region_name=sqs.meta.region_name, **custom)  # type: ignore[call-overload]


def provision_schedule_group(scheduler: Any, name: str) -> str:
    """The schedule group, created unless it exists (moto's create_schedule_group would replace it, and
    with it every schedule it holds)."""
    try:
        scheduler.get_schedule_group(Name=name)
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        scheduler.create_schedule_group(Name=name)
    return name


def provision_scheduler_role(iam: Any, name: str) -> str:
    """The role Scheduler assumes to put a schedule's input on its queue (and on the DLQ); its ARN.

    Locally nothing checks the role: it exists so that the ARN the code passes is a real one.
    """
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": SCHEDULER_SERVICE}, "Action": "sts:AssumeRole"}],
    }
    try:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    except ClientError as exc:
        if _error_code(exc) != "EntityAlreadyExists":
            raise
        role = iam.get_role(RoleName=name)["Role"]
    arn: str = role["Arn"]
    return arn


def provision(
    dynamodb: Any,
    sqs: Any,
    s3: Any,
    *,
    prefix: str,
    visibility_timeout: int,
    max_receive_count: int,
    scheduler: Any = None,
    iam: Any = None,
) -> LocalResources:
    """Everything `LocalResources.environment()` names. `scheduler` and `iam` default to clients built
    like `sqs` (same region; same endpoint if it is not AWS's)."""
    scheduler = scheduler if scheduler is not None else _like(sqs, "scheduler")
    iam = iam if iam is not None else _like(sqs, "iam")
    tables: dict[str, str] = {}
    for spec in r.TABLES:
        name = r.physical_name(prefix, spec.name)
        dynamodb.create_table(**_table_args(spec, name))
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
        )
        tables[spec.name] = name
    queue_urls: dict[str, str] = {}
    queue_arns: dict[str, str] = {}
    dlq_urls: dict[str, str] = {}
    for queue in r.QUEUES:
        dlq_url = sqs.create_queue(QueueName=r.physical_name(prefix, r.dlq_name(queue)))["QueueUrl"]
        queue_urls[queue.name] = sqs.create_queue(
            QueueName=r.physical_name(prefix, queue.name),
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": _queue_arn(sqs, dlq_url), "maxReceiveCount": max_receive_count}
                ),
            },
        )["QueueUrl"]
        queue_arns[queue.name] = _queue_arn(sqs, queue_urls[queue.name])
        dlq_urls[queue.name] = dlq_url
    # Scheduler's own DLQ: a plain queue (Scheduler refuses FIFO ones), no DLQ of its own.
    schedules_dlq_url = sqs.create_queue(QueueName=r.physical_name(prefix, r.SCHEDULES.dlq))["QueueUrl"]
    group = provision_schedule_group(scheduler, r.physical_name(prefix, r.SCHEDULES.group))
    role_arn = provision_scheduler_role(iam, r.physical_name(prefix, f"{r.SCHEDULES.group}-role"))
    bucket = f"{prefix}-bodies"
    s3.create_bucket(Bucket=bucket)
    return LocalResources(
        prefix=prefix,
        tables=tables,
        queue_urls=queue_urls,
        queue_arns=queue_arns,
        dlq_urls=dlq_urls,
        bucket=bucket,
        secrets_prefix=r.secrets_prefix(prefix),
        schedule_group=group,
        scheduler_role_arn=role_arn,
        schedules_dlq_url=schedules_dlq_url,
        schedules_dlq_arn=_queue_arn(sqs, schedules_dlq_url),
    )
