"""What the end-to-end tests read or change in the platform's embedded AWS directly: dead-letter queue
depths, a message's age, a redrive as `petrel dlq redrive` does it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from local.platform import LocalPlatform


def aws_client(platform: LocalPlatform, service: str) -> Any:
    """A client of `service` on the platform's embedded AWS."""
    assert platform.aws is not None, "the platform is not running"
    return platform.aws.client(service)


def dead_letters(platform: LocalPlatform) -> dict[str, int]:
    """Jobs in each dead-letter queue (visible + in flight)."""
    sqs = aws_client(platform, "sqs")
    depth: dict[str, int] = {}
    for name, url in platform.info["aws"]["dlqs"].items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        depth[name] = int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )
    return depth


def backdate_message(platform: LocalPlatform, tenant_id: str, email_id: str, message_id: str, hours: float) -> None:
    """Move one message's `created_at` back, straight in the (moto) messages table.

    The key layout is petrel.adapters.dynamodb's: pk `<tenant id>#<email id>`, sk `MSG#<message id>`.
    """
    aws = platform.info["aws"]
    db = aws_client(platform, "dynamodb")
    key = {"pk": {"S": f"{tenant_id}#{email_id}"}, "sk": {"S": f"MSG#{message_id}"}}
    item = db.get_item(TableName=aws["tables"]["messages"], Key=key, ConsistentRead=True)["Item"]
    created = datetime.fromisoformat(item["created_at"]["S"])
    db.update_item(
        TableName=aws["tables"]["messages"],
        Key=key,
        UpdateExpression="SET created_at = :c",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":c": {"S": (created - timedelta(hours=hours)).isoformat()}},
    )


def redrive(platform: LocalPlatform, queue: str) -> Any:
    """What `petrel dlq redrive <queue>` does: put each letter back, reopening the messages it ended."""
    from petrel.services.redrive import reopen_for_redrive

    admin = platform.admin
    assert admin is not None, "the platform is not running"
    return admin.dead_letters.redrive(queue, prepare=lambda job: reopen_for_redrive(admin.redrive, job))
