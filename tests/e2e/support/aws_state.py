"""What the end-to-end tests read or change in the platform's embedded AWS directly: dead-letter queue
depths, how many of a tenant's messages are in given statuses, a message's age, a redrive as
`petrel dlq redrive` does it."""

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
    depths = _depths(platform, platform.info["aws"]["dlqs"])
    return {name: depth["Visible"] + depth["NotVisible"] for name, depth in depths.items()}


def count_messages(platform: LocalPlatform, tenant_id: str, statuses: tuple[str, ...]) -> int:
    """How many of the tenant's messages are in one of `statuses`, read from the embedded DynamoDB (a
    Scan of keys and statuses only). A test's wait uses it to learn when to look; what it then asserts
    it reads through the API. Walking the API's listing of `queued` or `sending` to its end (those
    statuses have no index: each call examines up to a thousand messages) every few seconds would cost
    the embedded AWS more than the traffic under test."""
    return len(_in_statuses(platform, tenant_id, statuses))


def _in_statuses(platform: LocalPlatform, tenant_id: str, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """The tenant's message items in `statuses` (keys, status, attempt, lease), from a consistent Scan.
    An email of one message that has no item of its own yet stands for it, `queued` (petrel.adapters.
    dynamodb.DynamoMessageStore): its email item is counted then, with that status."""
    db = aws_client(platform, "dynamodb")
    kwargs: dict[str, Any] = {
        "TableName": platform.info["aws"]["tables"]["messages"],
        "FilterExpression": (
            "begins_with(pk, :tenant) AND (begins_with(sk, :msg) OR (sk = :email AND attribute_exists(lt)))"
        ),
        "ProjectionExpression": "pk, sk, #status, #attempt, #lease",
        "ExpressionAttributeNames": {"#status": "status", "#attempt": "attempt", "#lease": "lease_until"},
        "ExpressionAttributeValues": {
            ":tenant": {"S": f"{tenant_id}#"},
            ":msg": {"S": "MSG#"},
            ":email": {"S": "EMAIL"},
        },
        "ConsistentRead": True,
    }
    found: list[dict[str, Any]] = []
    while True:
        page = db.scan(**kwargs)
        found += [{name: next(iter(value.values())) for name, value in item.items()} for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    with_items = {item["pk"] for item in found if item["sk"] != "EMAIL"}
    pending = [{**item, "status": "queued"} for item in found if item["sk"] == "EMAIL" and item["pk"] not in with_items]
    return [item for item in [*found, *pending] if item.get("status") in statuses]


def queue_depths(platform: LocalPlatform) -> dict[str, dict[str, int]]:
    """Jobs on each queue: visible, in flight and delayed (what a stuck wait is asked about)."""
    return _depths(platform, platform.info["aws"]["queues"])


_DEPTHS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


def _depths(platform: LocalPlatform, urls: dict[str, str]) -> dict[str, dict[str, int]]:
    """Each queue's jobs by state (`Visible`, `NotVisible`, `Delayed`), by the queue's name."""
    sqs = aws_client(platform, "sqs")
    depths: dict[str, dict[str, int]] = {}
    for name, url in urls.items():
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(_DEPTHS))["Attributes"]
        depths[name] = {
            key.removeprefix("ApproximateNumberOfMessages") or "Visible": int(attributes[key]) for key in _DEPTHS
        }
    return depths


def waiting_sample(
    platform: LocalPlatform, tenant_id: str, statuses: tuple[str, ...], limit: int = 5
) -> list[dict[str, Any]]:
    """Up to `limit` of the tenant's message items in one of `statuses` (keys, status, attempt, lease),
    as `count_messages` finds them (a stuck wait's failure shows them)."""
    return _in_statuses(platform, tenant_id, statuses)[:limit]


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
