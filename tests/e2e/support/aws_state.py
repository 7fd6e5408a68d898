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
    """Move one message's creation time back, straight in the (moto) messages table.

    The key layout is petrel.adapters.dynamodb's: pk `<tenant id>#<email id>`, sk `MSG#<message id>`;
    the compact stored form (petrel.adapters.message_items) keeps the creation time only in
    `created_key` (`<ISO time>#<message id>`), older items in `created_at` too.
    """
    aws = platform.info["aws"]
    db = aws_client(platform, "dynamodb")
    key = {"pk": {"S": f"{tenant_id}#{email_id}"}, "sk": {"S": f"MSG#{message_id}"}}
    item = db.get_item(TableName=aws["tables"]["messages"], Key=key, ConsistentRead=True)["Item"]
    if "created_at" in item:
        attribute, created = "created_at", datetime.fromisoformat(item["created_at"]["S"])
        value = (created - timedelta(hours=hours)).isoformat()
    else:
        attribute, created = "created_key", datetime.fromisoformat(item["created_key"]["S"].rpartition("#")[0])
        value = f"{(created - timedelta(hours=hours)).isoformat()}#{message_id}"
    db.update_item(
        TableName=aws["tables"]["messages"],
        Key=key,
        UpdateExpression="SET #c = :c",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeNames={"#c": attribute},
        ExpressionAttributeValues={":c": {"S": value}},
    )


def redrive(platform: LocalPlatform, queue: str) -> Any:
    """What `petrel dlq redrive <queue>` does: put each letter back, reopening the messages it ended."""
    from petrel.services.redrive import reopen_for_redrive

    admin = platform.admin
    assert admin is not None, "the platform is not running"
    return admin.dead_letters.redrive(queue, prepare=lambda job: reopen_for_redrive(admin.redrive, job))
