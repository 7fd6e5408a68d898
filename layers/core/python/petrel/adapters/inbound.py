"""DynamoDB InboundStore: incoming mail's records and contents (the inbound table).

One partition per incoming message (`<tenant>#<inbound id>`): the record (sk INBOUND), which alone
carries the listing indexes' attributes, and its content (sk CONTENT), written in one transaction.
The content is kept as zlib-compressed JSON in a binary attribute (mail text compresses several
times over, and the write units follow the stored size); when even that is too large for an item
(DynamoDB's limit is 400 KB), the compressed JSON goes to the bodies bucket under the message's own
prefix and the content item names its key. Nothing is ever truncated.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from petrel import resources
from petrel.adapters.dynamodb import (
    _cursor_json,
    _decode,
    _dump,
    _encode,
    _first_condition_failed,
    _json_cursor,
    _lost,
)
from petrel.models.inbound import InboundContent, InboundKind, InboundRecord
from petrel.ports import AlreadyExists, BlobStore, InboundPage, InvalidCursor

if TYPE_CHECKING:
    from types_boto3_dynamodb.client import DynamoDBClient
    from types_boto3_dynamodb.type_defs import QueryInputTypeDef

    from petrel.adapters.dynamodb import Item

# Compressed content above this many bytes goes to the bucket: the item's other attributes and the
# attribute names fit in what is left of DynamoDB's 400 KB.
INLINE_CONTENT_LIMIT = 350_000

_RECEIVED_KEY = resources.INBOUND_RECEIVED_KEY
_TENANT_KIND = resources.BY_TENANT_KIND.partition_key.name
_TENANT_EMAIL = resources.BY_TENANT_EMAIL.partition_key.name
_CONTENT = "content"  # the compressed JSON, inline
_CONTENT_KEY = "content_key"  # or the bucket key holding it


def tenant_kind(tenant_id: str, kind: InboundKind) -> str:
    return f"{tenant_id}#{kind.value}"


def tenant_email(tenant_id: str, email_id: str) -> str:
    return f"{tenant_id}#{email_id}"


def content_blob_key(tenant_id: str, inbound_id: str, packed: bytes) -> str:
    """Where a large content is kept: under the message's prefix (the bucket's retention applies), named
    by its digest, so writing it for a create that then loses changes nothing the winner points to."""
    digest = hashlib.sha256(packed).hexdigest()[:32]
    return f"{resources.INBOUND_PREFIX}{tenant_id}/{inbound_id}/content-{digest}.json.z"


class DynamoInboundStore:
    def __init__(self, client: DynamoDBClient, table: str, blobs: BlobStore) -> None:
        self._db = client
        self._table = table
        self._blobs = blobs

    def _key(self, tenant_id: str, inbound_id: str, sk: str) -> Item:
        return _encode({"pk": resources.inbound_pk(tenant_id, inbound_id), "sk": sk})

    def create_inbound(self, record: InboundRecord, content: InboundContent, *, expires_at: int) -> None:
        pk = resources.inbound_pk(record.tenant_id, record.inbound_id)
        ttl = resources.INBOUND.ttl_attribute
        record_item = _dump(
            record,
            pk=pk,
            sk=resources.INBOUND_SK,
            **{
                _RECEIVED_KEY: resources.received_key(record.received_at, record.inbound_id),
                _TENANT_KIND: tenant_kind(record.tenant_id, record.kind),
                ttl: expires_at,
            },
        )
        if record.related is not None:  # sparse: only mail about a Petrel email is in that index
            record_item[_TENANT_EMAIL] = tenant_email(record.tenant_id, record.related.email_id)
        content_item: dict[str, Any] = {"pk": pk, "sk": resources.INBOUND_CONTENT_SK, ttl: expires_at}
        packed = zlib.compress(content.model_dump_json().encode(), 6)
        if len(packed) > INLINE_CONTENT_LIMIT:
            key = content_blob_key(record.tenant_id, record.inbound_id, packed)
            self._blobs.put(key, packed, "application/zlib")
            content_item[_CONTENT_KEY] = key
        else:
            content_item[_CONTENT] = packed
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _encode(record_item),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": _encode(content_item)}},
                ]
            )
        except ClientError as exc:
            if _first_condition_failed(exc):
                raise AlreadyExists(f"incoming message {record.inbound_id} exists") from exc
            raise

    def _get(self, tenant_id: str, inbound_id: str, sk: str) -> dict[str, Any] | None:
        found = self._db.get_item(TableName=self._table, Key=self._key(tenant_id, inbound_id, sk), ConsistentRead=True)
        return _decode(found["Item"]) if "Item" in found else None

    def get_inbound(self, tenant_id: str, inbound_id: str) -> InboundRecord | None:
        item = self._get(tenant_id, inbound_id, resources.INBOUND_SK)
        return InboundRecord.model_validate(item) if item else None

    def get_content(self, tenant_id: str, inbound_id: str) -> InboundContent | None:
        item = self._get(tenant_id, inbound_id, resources.INBOUND_CONTENT_SK)
        if item is None:
            return None
        packed = self._blobs.get(item[_CONTENT_KEY]) if _CONTENT_KEY in item else item[_CONTENT]
        return InboundContent.model_validate_json(zlib.decompress(packed))

    def set_outcome(self, tenant_id: str, inbound_id: str, outcome: str) -> None:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, inbound_id, resources.INBOUND_SK),
                UpdateExpression="SET outcome = :o",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_encode({":o": outcome}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            raise _lost(exc, f"incoming message {inbound_id}") from exc

    def list_inbound(
        self,
        tenant_id: str,
        *,
        kind: InboundKind | None,
        email_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> InboundPage:
        """A Query of one index, newest first: the email's index (filtered on kind when both are asked),
        else the kind's, else the tenant's. It asks for one record more than the page, so a cursor is
        handed out only when there is more to read; a filtered Query may need several calls for that."""
        if email_id is not None:
            index, value = resources.BY_TENANT_EMAIL, tenant_email(tenant_id, email_id)
        elif kind is not None:
            index, value = resources.BY_TENANT_KIND, tenant_kind(tenant_id, kind)
        else:
            index, value = resources.BY_TENANT_RECEIVED, tenant_id
        key_name = index.partition_key.name
        listing = _Listing(key_name, value, kind.value if email_id is not None and kind is not None else None)
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "IndexName": index.name,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": key_name},
            "ExpressionAttributeValues": _encode({":k": value}),
            "ScanIndexForward": False,
        }
        if listing.kind is not None:
            kwargs["FilterExpression"] = "#kind = :kind"
            kwargs["ExpressionAttributeNames"] = {"#k": key_name, "#kind": "kind"}
            kwargs["ExpressionAttributeValues"] = _encode({":k": value, ":kind": listing.kind})
        if cursor:
            kwargs["ExclusiveStartKey"] = listing.decode(cursor)
        items: list[dict[str, Any]] = []
        while len(items) <= limit:
            kwargs["Limit"] = limit + 1 - len(items)
            page = self._db.query(**kwargs)
            items += [_decode(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        records = [InboundRecord.model_validate(i) for i in items[:limit]]
        more = len(items) > limit
        return InboundPage(records=records, cursor=listing.encode(items[limit - 1]) if more and limit else None)


class _Listing:
    """One listing's cursors: the start key of the index (its partition value included) and the kind
    it filters on, so a cursor is refused by every other listing."""

    def __init__(self, key_name: str, value: str, kind: str | None) -> None:
        self.key_name = key_name
        self.value = value
        self.kind = kind

    def _start(self, item: dict[str, Any]) -> dict[str, str]:
        return {name: str(item[name]) for name in ("pk", "sk", _RECEIVED_KEY, self.key_name)}

    def encode(self, item: dict[str, Any]) -> str:
        return _json_cursor({"key": self._start(item), "kind": self.kind})

    def decode(self, cursor: str) -> Item:
        raw = _cursor_json(cursor)
        key = raw.get("key") if isinstance(raw, dict) else None
        if (
            not isinstance(raw, dict)
            or set(raw) != {"key", "kind"}
            or raw["kind"] != self.kind
            or not isinstance(key, dict)
            or set(key) != {"pk", "sk", _RECEIVED_KEY, self.key_name}
            or key.get(self.key_name) != self.value
            or not all(isinstance(v, str) for v in key.values())
        ):
            raise InvalidCursor("cursor does not belong to this listing")
        return _encode(key)
