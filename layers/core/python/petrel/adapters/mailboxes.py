"""DynamoDB MailboxStore: the mailboxes a tenant has Petrel read, and the poller's memory of each.

Everything lives in the tenant's partition of the tenants table: the mailbox (sk `MAILBOX#<id>`), the
claim on its address (`MAILBOXADDR#<address>`: one mailbox per address), one cursor per folder
(`CURSOR#<id>#<folder>`) and the last poll's health (`HEALTH#<id>`). Passwords are
never here: a mailbox names its Secrets Manager secret only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from petrel import resources
from petrel.adapters.dynamodb import (
    _conditional_failed,
    _decode,
    _dump,
    _encode,
    _first_condition_failed,
    _query_all,
    _scan_sk_prefix,
)
from petrel.models.records import FolderCursor, Mailbox, MailboxHealth
from petrel.ports import AlreadyExists, RecordNotFound, WriteConflict

if TYPE_CHECKING:
    from types_boto3_dynamodb.client import DynamoDBClient
    from types_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

# TransactWriteItems takes at most 100 actions: the mailbox, its address claim, its health and this
# many cursors.
_CURSORS_PER_DELETE = 97


def _cursor_prefix(mailbox_id: str) -> str:
    """The sort-key prefix of one mailbox's cursors (the `#` keeps `mb_1` from matching `mb_10`)."""
    return resources.cursor_sk(mailbox_id, "")


class DynamoMailboxStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def _key(self, tenant_id: str, sk: str) -> dict[str, Any]:
        return {"pk": tenant_id, "sk": sk}

    def _get(self, tenant_id: str, sk: str) -> dict[str, Any] | None:
        found = self._db.get_item(TableName=self._table, Key=_encode(self._key(tenant_id, sk)), ConsistentRead=True)
        return _decode(found["Item"]) if "Item" in found else None

    def _query(self, tenant_id: str, prefix: str) -> list[dict[str, Any]]:
        return _query_all(
            self._db,
            {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                "ExpressionAttributeValues": _encode({":pk": tenant_id, ":p": prefix}),
                "ConsistentRead": True,
            },
        )

    def create_mailbox(self, mailbox: Mailbox) -> None:
        """One transaction: the mailbox, and the item that claims its address for it, each only if it
        is not there yet (so of two creates for one address, one wins)."""
        item = _dump(mailbox, pk=mailbox.tenant_id, sk=resources.mailbox_sk(mailbox.mailbox_id))
        claim = {
            "pk": mailbox.tenant_id,
            "sk": resources.mailbox_address_sk(mailbox.address),
            "mailbox_id": mailbox.mailbox_id,
        }
        actions: list[TransactWriteItemTypeDef] = [
            {"Put": {"TableName": self._table, "Item": _encode(it), "ConditionExpression": "attribute_not_exists(pk)"}}
            for it in (item, claim)
        ]
        try:
            self._db.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if _conditional_failed(exc):
                what = "mailbox " + mailbox.mailbox_id if _first_condition_failed(exc) else mailbox.address
                raise AlreadyExists(f"tenant {mailbox.tenant_id} has a mailbox for {what} already") from exc
            raise

    def put_mailbox(self, mailbox: Mailbox) -> None:
        item = _dump(mailbox, pk=mailbox.tenant_id, sk=resources.mailbox_sk(mailbox.mailbox_id))
        self._db.put_item(TableName=self._table, Item=_encode(item))

    def get_mailbox(self, tenant_id: str, mailbox_id: str) -> Mailbox | None:
        item = self._get(tenant_id, resources.mailbox_sk(mailbox_id))
        return Mailbox.model_validate(item) if item else None

    def list_mailboxes(self, tenant_id: str) -> list[Mailbox]:
        return [Mailbox.model_validate(i) for i in self._query(tenant_id, resources.MAILBOX_SK_PREFIX)]

    def list_all_mailboxes(self) -> list[Mailbox]:
        """A Scan of the tenants table for mailbox items, every page (the poller's work list is small:
        tenants times their mailboxes), in the order a tenant's own listing has."""
        items = _scan_sk_prefix(self._db, self._table, resources.MAILBOX_SK_PREFIX)
        return sorted((Mailbox.model_validate(i) for i in items), key=lambda m: (m.tenant_id, m.mailbox_id))

    def delete_mailbox(self, tenant_id: str, mailbox_id: str) -> None:
        """The mailbox goes in one transaction with its health and cursors (a mailbox with more folders
        than a transaction holds loses the extra cursors first), so a crash leaves it whole or gone:
        a mailbox made again under the same id never starts from an old cursor."""
        mailbox = self.get_mailbox(tenant_id, mailbox_id)
        if mailbox is None:
            raise RecordNotFound(f"no mailbox {mailbox_id}")
        cursors = [i["sk"] for i in self._query(tenant_id, _cursor_prefix(mailbox_id))]
        extra, cursors = cursors[_CURSORS_PER_DELETE:], cursors[:_CURSORS_PER_DELETE]
        for sk in extra:
            self._db.delete_item(TableName=self._table, Key=_encode(self._key(tenant_id, sk)))
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _encode(self._key(tenant_id, resources.mailbox_sk(mailbox_id))),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ]
        for sk in [resources.mailbox_address_sk(mailbox.address), resources.health_sk(mailbox_id), *cursors]:
            actions.append({"Delete": {"TableName": self._table, "Key": _encode(self._key(tenant_id, sk))}})
        try:
            self._db.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if _first_condition_failed(exc):
                raise RecordNotFound(f"no mailbox {mailbox_id}") from exc
            raise

    def get_cursor(self, tenant_id: str, mailbox_id: str, folder: str) -> FolderCursor | None:
        item = self._get(tenant_id, resources.cursor_sk(mailbox_id, folder))
        return FolderCursor.model_validate(item) if item else None

    def save_cursor(self, cursor: FolderCursor, *, expected: FolderCursor | None) -> None:
        """A Put conditional on the stored (uidvalidity, last_uid) being the expected one, or on there
        being none: of two pollers that read the same cursor, one moves it and the other loses."""
        item = _dump(cursor, pk=cursor.tenant_id, sk=resources.cursor_sk(cursor.mailbox_id, cursor.folder))
        if expected is None:
            condition, values = "attribute_not_exists(pk)", None
        else:
            condition = "uidvalidity = :v AND last_uid = :u"
            values = _encode({":v": expected.uidvalidity, ":u": expected.last_uid})
        try:
            if values is None:
                self._db.put_item(TableName=self._table, Item=_encode(item), ConditionExpression=condition)
            else:
                self._db.put_item(
                    TableName=self._table,
                    Item=_encode(item),
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise WriteConflict(f"the cursor of {cursor.mailbox_id}/{cursor.folder} moved meanwhile") from exc
            raise

    def put_health(self, health: MailboxHealth) -> None:
        item = _dump(health, pk=health.tenant_id, sk=resources.health_sk(health.mailbox_id))
        self._db.put_item(TableName=self._table, Item=_encode(item))

    def get_health(self, tenant_id: str, mailbox_id: str) -> MailboxHealth | None:
        item = self._get(tenant_id, resources.health_sk(mailbox_id))
        return MailboxHealth.model_validate(item) if item else None
