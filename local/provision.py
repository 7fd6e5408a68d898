"""Create Petrel's tables, queues and bucket on an AWS endpoint (moto, LocalStack) from petrel.resources.

The same specs drive the CDK constructs, so local and deployed resources cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from petrel import resources as r


@dataclass(frozen=True)
class LocalResources:
    prefix: str
    tables: dict[str, str]
    queue_urls: dict[str, str]
    dlq_urls: dict[str, str]
    bucket: str
    secrets_prefix: str

    def environment(self) -> dict[str, str]:
        """The PETREL_* variables the functions read (petrel.settings)."""
        env = {spec.env_var: self.tables[spec.name] for spec in r.TABLES}
        env.update({spec.env_var: self.queue_urls[spec.name] for spec in r.SEND_QUEUES})
        env[r.BODIES_BUCKET_ENV] = self.bucket
        env[r.SECRETS_PREFIX_ENV] = self.secrets_prefix
        return env


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
                "Projection": {"ProjectionType": "ALL"},
            }
            for i in spec.indexes
        ]
    return args


def provision(
    dynamodb: Any, sqs: Any, s3: Any, *, prefix: str, visibility_timeout: int, max_receive_count: int
) -> LocalResources:
    tables: dict[str, str] = {}
    for spec in r.TABLES:
        name = r.physical_name(prefix, spec.name)
        dynamodb.create_table(**_table_args(spec, name))
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute}
        )
        tables[spec.name] = name
    queue_urls: dict[str, str] = {}
    dlq_urls: dict[str, str] = {}
    for queue in r.SEND_QUEUES:
        dlq_url = sqs.create_queue(QueueName=r.physical_name(prefix, r.dlq_name(queue)))["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_urls[queue.name] = sqs.create_queue(
            QueueName=r.physical_name(prefix, queue.name),
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}),
            },
        )["QueueUrl"]
        dlq_urls[queue.name] = dlq_url
    bucket = f"{prefix}-bodies"
    s3.create_bucket(Bucket=bucket)
    return LocalResources(
        prefix=prefix,
        tables=tables,
        queue_urls=queue_urls,
        dlq_urls=dlq_urls,
        bucket=bucket,
        secrets_prefix=r.secrets_prefix(prefix),
    )
