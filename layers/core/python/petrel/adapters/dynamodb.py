"""DynamoDB adapters for the tenant, message, suppression and idempotency stores.

Table, index and attribute names, and every key format, come from petrel.resources (the same
specs the CDK constructs deploy). Failures are reported in the ports' own vocabulary
(petrel.ports: RecordNotFound, AlreadyExists, WriteConflict, InvalidCursor), never as API errors.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel

from petrel import resources
from petrel.adapters import message_items as items
from petrel.ids import email_id_of
from petrel.ids import message_id as positional_message_id
from petrel.models.due import creation_due_time, due_time
from petrel.models.records import (
    LEASABLE_STATUSES,
    ApiKey,
    EmailRecord,
    Event,
    MessageRecord,
    MessageStatus,
    SendingDomain,
    ServerEvent,
    SmtpServer,
    Suppression,
    Tenant,
)
from petrel.ports import (
    AlreadyExists,
    DueMessage,
    DuePage,
    EmailKey,
    IdempotencyRecord,
    InvalidCursor,
    MessageKey,
    Page,
    RecordNotFound,
    SuppressionPage,
    Transition,
    WriteConflict,
)
from petrel.resources import IndexSpec, Key

if TYPE_CHECKING:
    from typing import TypeAlias

    from types_boto3_dynamodb.client import DynamoDBClient
    from types_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        DeleteTypeDef,
        PutTypeDef,
        QueryInputTypeDef,
        ScanInputTypeDef,
        TransactWriteItemTypeDef,
    )

    Item: TypeAlias = dict[str, AttributeValueTypeDef]

_SER = TypeSerializer()
_DESER = TypeDeserializer()

_STATUS = "status"  # a reserved word in expressions: always written as `#s`
_TENANT_STATUS = resources.BY_TENANT_STATUS.partition_key.name
_LISTED_TENANT = resources.LISTED_TENANT
_LISTED_AT = resources.LISTED_AT
_DUE_SHARD = resources.DUE_SHARD
_DUE_AT = resources.DUE_AT


def _encode(values: Mapping[str, Any]) -> Item:
    return {k: _SER.serialize(_numbers(v)) for k, v in values.items() if v is not None}


def _decode(item: Mapping[str, AttributeValueTypeDef]) -> dict[str, Any]:
    out = {k: _DESER.deserialize(v) for k, v in item.items()}
    for k, v in out.items():
        if isinstance(v, Binary):
            out[k] = bytes(v)  # type: ignore[call-overload]
    return _plain(out)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """Decimals from DynamoDB back to int, or to float where they have a fraction (rates, thresholds)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _numbers(value: Any) -> Any:
    """Floats as Decimals, which is how boto3 sends numbers (it refuses floats): by their shortest
    repr, so 0.1 is stored as 0.1, not as its binary expansion."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _dump(model: BaseModel, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = _numbers(model.model_dump(mode="json", exclude_none=True, exclude={"body_inline"}))
    data.update(extra)
    return data


def _query_all(db: DynamoDBClient, kwargs: QueryInputTypeDef) -> list[dict[str, Any]]:
    """Every item of a Query, following LastEvaluatedKey."""
    items: list[dict[str, Any]] = []
    while True:
        page = db.query(**kwargs)
        items.extend(_decode(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def _scan_all(
    db: DynamoDBClient,
    kwargs: ScanInputTypeDef,
    read: Callable[[Mapping[str, AttributeValueTypeDef]], dict[str, Any]] = _decode,
) -> list[dict[str, Any]]:
    """Every item of a Scan, following LastEvaluatedKey, each as `read` gives it (`_raw`: numbers kept
    as Decimals)."""
    items: list[dict[str, Any]] = []
    while True:
        page = db.scan(**kwargs)
        items.extend(read(i) for i in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs = {**kwargs, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def _scan_sk_prefix(db: DynamoDBClient, table: str, prefix: str) -> list[dict[str, Any]]:
    """Every item of `table` whose sort key begins with `prefix` (one kind of item: all tenants'
    domains, all tenants' mailboxes), read consistently, every page."""
    return _scan_all(
        db,
        {
            "TableName": table,
            "FilterExpression": "begins_with(sk, :p)",
            "ExpressionAttributeValues": _encode({":p": prefix}),
            "ConsistentRead": True,
        },
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _conditional_failed(exc: ClientError) -> bool:
    return _code(exc) in ("ConditionalCheckFailedException", "TransactionCanceledException")


def _first_condition_failed(exc: ClientError) -> bool:
    """A transaction cancelled because its first action's condition failed (the one that guards it)."""
    reasons = exc.response.get("CancellationReasons", [])
    return (
        _code(exc) == "TransactionCanceledException"
        and bool(reasons)
        and reasons[0].get("Code") == "ConditionalCheckFailed"
    )


def _lost(exc: ClientError, what: str) -> Exception:
    """The port error for a conditional write refused with `ReturnValuesOnConditionCheckFailure=ALL_OLD`:
    WriteConflict when the item is there (not as expected), RecordNotFound when it is not. Any other
    failure is returned as it came."""
    if _code(exc) != "ConditionalCheckFailedException":
        return exc
    if exc.response.get("Item"):
        return WriteConflict(f"{what} is not as expected")
    return RecordNotFound(f"no {what}")


def _revision_condition(expected: int | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The condition that a domain item exists and (given `expected`) is at that revision; an item
    written before revisions has none, which counts as 0."""
    if expected is None:
        return "attribute_exists(pk)", {}, {}
    at = "#rev = :rev"
    condition = (
        f"attribute_exists(pk) AND (attribute_not_exists(#rev) OR {at})"
        if expected == 0
        else f"attribute_exists(pk) AND {at}"
    )
    return condition, {"#rev": "revision"}, {":rev": expected}


class DynamoTenantStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def _key(self, tenant_id: str, sk: str) -> Item:
        return _encode({"pk": tenant_id, "sk": sk})

    def _put(self, tenant_id: str, sk: str, model: BaseModel) -> None:
        self._db.put_item(TableName=self._table, Item=_encode(_dump(model, pk=tenant_id, sk=sk)))

    def _query(self, tenant_id: str, prefix: str) -> list[dict[str, Any]]:
        return _query_all(
            self._db,
            {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                "ExpressionAttributeValues": _encode({":pk": tenant_id, ":p": prefix}),
            },
        )

    def _get(self, tenant_id: str, sk: str) -> dict[str, Any] | None:
        found = self._db.get_item(TableName=self._table, Key=self._key(tenant_id, sk)).get("Item")
        return _decode(found) if found else None

    def put_tenant(self, tenant: Tenant) -> None:
        self._put(tenant.tenant_id, resources.TENANT_SK, tenant)

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        item = self._get(tenant_id, resources.TENANT_SK)
        return Tenant.model_validate(item) if item else None

    def list_tenants(self) -> list[Tenant]:
        items = _scan_all(
            self._db,
            {
                "TableName": self._table,
                "FilterExpression": "sk = :t",
                "ExpressionAttributeValues": _encode({":t": resources.TENANT_SK}),
            },
        )
        return sorted((Tenant.model_validate(i) for i in items), key=lambda t: t.created_at)

    def put_api_key(self, key: ApiKey) -> None:
        self._put(key.tenant_id, resources.api_key_sk(key.key_id), key)

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        index = resources.BY_KEY_HASH
        page = self._db.query(
            TableName=self._table,
            IndexName=index.name,
            KeyConditionExpression="#h = :h",
            ExpressionAttributeNames={"#h": index.partition_key.name},
            ExpressionAttributeValues=_encode({":h": key_hash}),
            Limit=2,
        )
        items = page.get("Items", [])
        return ApiKey.model_validate(_decode(items[0])) if len(items) == 1 else None

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        return [ApiKey.model_validate(i) for i in self._query(tenant_id, resources.API_KEY_SK_PREFIX)]

    def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> None:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, resources.api_key_sk(key_id)),
                UpdateExpression="SET revoked_at = :at",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues=_encode({":at": at.isoformat()}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            raise _lost(exc, f"API key {key_id}") from exc

    def create_domain(self, domain: SendingDomain) -> None:
        """One transaction: the tenant's domain record and the claim that makes the domain its alone,
        each only if it is not there yet (of two creates of one domain, by any tenants, one wins)."""
        item = _dump(domain, pk=domain.tenant_id, sk=resources.domain_sk(domain.domain))
        claim = {
            "pk": resources.domain_claim_pk(domain.domain),
            "sk": resources.DOMAIN_CLAIM_SK,
            "tenant_id": domain.tenant_id,
        }
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _encode(it),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                    for it in (item, claim)
                ]
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise AlreadyExists(f"domain {domain.domain} belongs to a tenant already") from exc
            raise

    def delete_domain(self, tenant_id: str, domain: str, expected_revision: int | None = None) -> None:
        """The record and its claim in one transaction (the claim only while it is this tenant's). A
        record stored before claims may be one of two tenants' copies: when the claim is the other's,
        the record goes alone, on the condition that the claim is still the other's."""
        condition, names, values = _revision_condition(expected_revision)
        record: DeleteTypeDef = {
            "TableName": self._table,
            "Key": self._key(tenant_id, resources.domain_sk(domain)),
            "ConditionExpression": condition,
        }
        if names:
            record["ExpressionAttributeNames"] = names
            record["ExpressionAttributeValues"] = _encode(values)
        claim_key = _encode({"pk": resources.domain_claim_pk(domain), "sk": resources.DOMAIN_CLAIM_SK})
        found = self._db.get_item(TableName=self._table, Key=claim_key, ConsistentRead=True).get("Item")
        claim: TransactWriteItemTypeDef
        if found and _decode(found).get("tenant_id") != tenant_id:
            claim = {
                "ConditionCheck": {
                    "TableName": self._table,
                    "Key": claim_key,
                    "ConditionExpression": "attribute_exists(pk) AND tenant_id <> :t",
                    "ExpressionAttributeValues": _encode({":t": tenant_id}),
                }
            }
        else:
            claim = {
                "Delete": {
                    "TableName": self._table,
                    "Key": claim_key,
                    "ConditionExpression": "attribute_not_exists(pk) OR tenant_id = :t",
                    "ExpressionAttributeValues": _encode({":t": tenant_id}),
                }
            }
        try:
            self._db.transact_write_items(TransactItems=[{"Delete": record}, claim])
        except ClientError as exc:
            if _first_condition_failed(exc):
                raise self._domain_lost(tenant_id, domain) from exc
            if _conditional_failed(exc):  # the claim changed hands since it was read: read again
                raise WriteConflict(f"the claim of domain {domain} changed") from exc
            raise

    def _domain_lost(self, tenant_id: str, domain: str) -> Exception:
        """Why a write guarded by the domain's revision was refused (a transaction does not say)."""
        if self.get_domain(tenant_id, domain) is None:
            return RecordNotFound(f"no domain {domain}")
        return WriteConflict(f"domain {domain} was changed since it was read")

    def update_domain(self, domain: SendingDomain, expected_revision: int, *, claim: bool = False) -> None:
        """A put on the condition that the stored revision is the one read; with `claim`, one transaction
        with the claim (put only while no other tenant has it)."""
        if domain.revision != expected_revision + 1:
            raise ValueError(f"a write on revision {expected_revision} stores revision {expected_revision + 1}")
        condition, names, values = _revision_condition(expected_revision)
        put: PutTypeDef = {
            "TableName": self._table,
            "Item": _encode(_dump(domain, pk=domain.tenant_id, sk=resources.domain_sk(domain.domain))),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _encode(values),
        }
        if not claim:
            put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"  # which refusal it was: _lost
            try:
                self._db.put_item(**put)
            except ClientError as exc:
                raise _lost(exc, f"domain {domain.domain}") from exc
            return
        claim_item = {"pk": resources.domain_claim_pk(domain.domain), "sk": resources.DOMAIN_CLAIM_SK}
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {"Put": put},
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _encode({**claim_item, "tenant_id": domain.tenant_id}),
                            "ConditionExpression": "attribute_not_exists(pk) OR tenant_id = :t",
                            "ExpressionAttributeValues": _encode({":t": domain.tenant_id}),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _first_condition_failed(exc):
                raise self._domain_lost(domain.tenant_id, domain.domain) from exc
            if _conditional_failed(exc):
                raise AlreadyExists(f"domain {domain.domain} belongs to another tenant") from exc
            raise

    def find_domain(self, domain: str) -> SendingDomain | None:
        claim = self._db.get_item(
            TableName=self._table,
            Key=_encode({"pk": resources.domain_claim_pk(domain), "sk": resources.DOMAIN_CLAIM_SK}),
            ConsistentRead=True,
        ).get("Item")
        if not claim:
            return None
        return self.get_domain(str(_decode(claim)["tenant_id"]), domain.lower())

    def list_all_domains(self) -> list[SendingDomain]:
        """A Scan for domain items, every page (tenants times their domains: small)."""
        items = _scan_sk_prefix(self._db, self._table, resources.DOMAIN_SK_PREFIX)
        return sorted((SendingDomain.model_validate(i) for i in items), key=lambda d: (d.tenant_id, d.domain))

    def put_domain(self, domain: SendingDomain) -> None:
        self._put(domain.tenant_id, resources.domain_sk(domain.domain), domain)

    def get_domain(self, tenant_id: str, domain: str) -> SendingDomain | None:
        """A consistent read: a write refused for its revision re-reads the one that won."""
        found = self._db.get_item(
            TableName=self._table, Key=self._key(tenant_id, resources.domain_sk(domain)), ConsistentRead=True
        ).get("Item")
        return SendingDomain.model_validate(_decode(found)) if found else None

    def list_domains(self, tenant_id: str) -> list[SendingDomain]:
        return [SendingDomain.model_validate(i) for i in self._query(tenant_id, resources.DOMAIN_SK_PREFIX)]

    def put_server(self, server: SmtpServer) -> None:
        self._put(server.tenant_id, resources.server_sk(server.server_id), server)

    def list_servers(self, tenant_id: str) -> list[SmtpServer]:
        return [SmtpServer.model_validate(i) for i in self._query(tenant_id, resources.SERVER_SK_PREFIX)]

    def delete_server(self, tenant_id: str, server_id: str) -> None:
        out = self._db.delete_item(
            TableName=self._table, Key=self._key(tenant_id, resources.server_sk(server_id)), ReturnValues="ALL_OLD"
        )
        if "Attributes" not in out:
            raise RecordNotFound(f"no SMTP server {server_id}")

    def pause_server(
        self, tenant_id: str, server_id: str, *, at: datetime, reason: str, resume_at: datetime | None
    ) -> bool:
        event = ServerEvent(type="server.paused", at=at, detail=reason).model_dump(mode="json", exclude_none=True)
        sets = "paused_at = :at, paused_reason = :reason, events = list_append(if_not_exists(events, :empty), :ev)"
        values: dict[str, Any] = {":at": at.isoformat(), ":reason": reason, ":empty": [], ":ev": [event]}
        if resume_at is not None:
            sets += ", resume_at = :resume"
            values[":resume"] = resume_at.isoformat()
        update = f"SET {sets}" + ("" if resume_at is not None else " REMOVE resume_at")
        return self._server_state(tenant_id, server_id, update, "attribute_not_exists(paused_at)", values)

    def resume_server(self, tenant_id: str, server_id: str, *, paused_at: datetime, at: datetime, detail: str) -> bool:
        event = ServerEvent(type="server.resumed", at=at, detail=detail).model_dump(mode="json", exclude_none=True)
        return self._server_state(
            tenant_id,
            server_id,
            "SET events = list_append(if_not_exists(events, :empty), :ev) REMOVE paused_at, paused_reason, resume_at",
            "paused_at = :since",
            {":since": paused_at.isoformat(), ":empty": [], ":ev": [event]},
        )

    def _server_state(
        self, tenant_id: str, server_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> bool:
        """One conditional update of a server's pause state (its other settings are never rewritten, so
        an operator's change made meanwhile is kept); False when the condition or the server is not there."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, resources.server_sk(server_id)),
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(pk) AND {condition}",
                ExpressionAttributeValues=_encode(values),
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def consume_quota(self, tenant_id: str, window: str, units: int, *, limit: int, expires_at: int) -> bool:
        if units > limit:
            return False  # the condition below would pass on a counter not made yet
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, resources.quota_sk(window)),
                UpdateExpression="ADD #c :n SET #e = if_not_exists(#e, :exp)",
                ConditionExpression="attribute_not_exists(#c) OR #c <= :room",
                ExpressionAttributeNames={"#c": "count", "#e": resources.TENANTS.ttl_attribute},
                ExpressionAttributeValues=_encode({":n": units, ":room": limit - units, ":exp": expires_at}),
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def release_quota(self, tenant_id: str, window: str, units: int) -> None:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(tenant_id, resources.quota_sk(window)),
                UpdateExpression="ADD #c :back",
                ConditionExpression="#c >= :n",
                ExpressionAttributeNames={"#c": "count"},
                ExpressionAttributeValues=_encode({":back": -units, ":n": units}),
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise


def _email_key(key: EmailKey) -> Item:
    return _encode({"pk": resources.email_pk(key.tenant_id, key.email_id), "sk": resources.EMAIL_SK})


def _item_key(pk: str, sk: str) -> Item:
    return _encode({"pk": pk, "sk": sk})


def _message_key(key: MessageKey) -> Item:
    return _encode({"pk": resources.email_pk(key.tenant_id, key.email_id), "sk": resources.message_sk(key.message_id)})


def _raw(item: Mapping[str, AttributeValueTypeDef]) -> dict[str, Any]:
    """An item's values with DynamoDB's numbers kept as Decimals (the stored form has fractional epochs)."""
    out = {k: _DESER.deserialize(v) for k, v in item.items()}
    return {k: bytes(v) if isinstance(v, Binary) else v for k, v in out.items()}  # type: ignore[call-overload]


def _indexed(tenant_id: str, status: MessageStatus) -> str | None:
    """The `by_tenant_status` key of a message in `status`, or None for the happy path's statuses."""
    return resources.tenant_status(tenant_id, status.value) if status.value in resources.INDEXED_STATUSES else None


def _transition_update(key: MessageKey, change: Transition, now: datetime) -> tuple[str, dict[str, Any]]:
    """The UpdateExpression (and its values) that writes `change`: SET what it sets, REMOVE what a
    message in its new status no longer has (a lease, a next attempt, a failure reason, a due time, an
    entry in `by_tenant_status`). Replies are stored once (petrel.adapters.message_items)."""
    # The status goes last: moto applies a SET clause at a time, and a reader there must not see the new
    # status without its reply (DynamoDB itself applies an update atomically).
    sets = ["updated_at = :now"]
    values: dict[str, Any] = {":status": change.status.value, ":now": items.epoch(now)}
    if change.events:
        # An event that names this message is about its recipient, which the item holds: stored
        # without it (message_items.event_out leaves out what equals the message's own).
        sets.append("events = list_append(if_not_exists(events, :empty), :events)")
        values[":events"] = [
            items.event_out(e, message_id=key.message_id, recipient=e.recipient, attempt=change.attempt)
            if e.message_id == key.message_id
            else items.event_out(e, message_id=key.message_id, recipient="", attempt=change.attempt)
            for e in change.events
        ]
    if change.attempt is not None:
        sets.append("attempts = list_append(if_not_exists(attempts, :empty), :attempts)")
        values[":attempts"] = [items.attempt_out(change.attempt)]
    if ":events" in values or ":attempts" in values:
        values[":empty"] = []
    for name, value in (
        ("last_reply", items.reply_ref(change.reply, change.attempt)),
        ("bounce_class", change.bounce_class),
        ("failure_reason", change.failure_reason),
        ("next_attempt_at", items.epoch(change.next_attempt_at) if change.next_attempt_at else None),
    ):
        if value is not None:
            sets.append(f"{name} = :{name}")
            values[f":{name}"] = value
    removes = ["lease_until"] + ([] if change.next_attempt_at else ["next_attempt_at"])
    if change.failure_reason is None:  # only a failed message has one (a reopened one drops it)
        removes.append("failure_reason")
    indexed = _indexed(key.tenant_id, change.status)
    if indexed is None:
        removes.append(_TENANT_STATUS)
    else:
        sets.append(f"{_TENANT_STATUS} = :ts")
        values[":ts"] = indexed
    due = due_time(change.status, at=now, next_attempt_at=change.next_attempt_at)
    # A final status leaves the due entry where it is (no index write): the sweeper passes it.
    if due is not None:
        sets += [f"{_DUE_SHARD} = :due_shard", f"{_DUE_AT} = :due_at"]
        values[":due_shard"] = resources.due_shard(key.message_id)
        values[":due_at"] = due
    sets.append("#s = :status")
    return "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes), values


# The sweeper's watermark of each due shard: one item per shard (sk = the shard), in no index.
_WATERMARK_PK = "SWEEPER#watermark"
# BatchGetItem reads at most this many keys per request.
_BATCH_GET = 100
# A listing of a status that has no index of its own examines at most this many items per request
# for each item it may return (so a page may hold fewer than asked, with a cursor to go on).
_WALK_FACTOR = 10


@dataclass(frozen=True)
class _Pending:
    """What a pending email item stands for: its message as created, and the email's expiry (TTL)."""

    message: MessageRecord
    expires_at: int


class DynamoMessageStore:
    """Emails and their messages in one partition per email (petrel.resources MESSAGES).

    An email of one message created `queued` is one item, its email item, until that message's first
    write: the email item stands for the message as created (message_items.pending_message), and the
    first write (a lease, a cancel, the sweeper's) creates the message item with a conditional PutItem
    (`attribute_not_exists`): one write unit where a message item written at creation and updated by
    its lease cost two. Every read of a message looks for its item first, then for its pending email.

    Creation is otherwise no transaction: the email item first (conditional: AlreadyExists), then each
    message item. A crash in between leaves an email without messages: `get_email` does not show it,
    nothing was answered 202 for it, no job names it, and TTL removes it.
    """

    # Email items never change once stored: what a pending one stands for (a small record, not the
    # item and its body) is kept for each read, bounded, so the worker's first lease of a message
    # whose email it read for its batch reads nothing more.
    _KEPT_EMAILS = 2_000

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table
        self._pending_of: dict[str, _Pending | None] = {}

    def _keep_email(self, item: dict[str, Any]) -> _Pending | None:
        """Note what the email item `item` stands for (None: it is not pending), and return it."""
        pending = items.pending_message(item)
        kept = _Pending(pending, int(item[resources.MESSAGES.ttl_attribute])) if pending else None
        if len(self._pending_of) >= self._KEPT_EMAILS:
            del self._pending_of[next(iter(self._pending_of))]
        self._pending_of[str(item["pk"])] = kept
        return kept

    def create_email(self, email: EmailRecord, messages: Sequence[MessageRecord], expires_at: int) -> None:
        """One message created `queued`: one PutItem, of its pending email item. Another one message:
        two PutItems, the email's first (a crash between them leaves an email without messages, which
        nothing shows or sends). Several: one transaction, since a crash between two of their writes
        would leave some recipients stored and due, sent though nobody was answered 202."""
        new = "attribute_not_exists(pk)"
        pending = items.pending_email_item(email, messages[0], expires_at) if len(messages) == 1 else None
        if pending is not None:
            try:
                self._db.put_item(TableName=self._table, Item=_encode(pending), ConditionExpression=new)
            except ClientError as exc:
                if _conditional_failed(exc):
                    raise AlreadyExists(f"email {email.email_id} exists") from exc
                raise
            return
        email_item = _encode(items.email_item(email, expires_at))
        message_items = [
            _encode(
                items.message_item(
                    message,
                    expires_at,
                    creation_due_time(
                        message.status, created_at=message.created_at, next_attempt_at=message.next_attempt_at
                    ),
                    listed=True,
                )
            )
            for message in messages
        ]
        if len(message_items) > 1:
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": new}}
                        for item in (email_item, *message_items)
                    ]
                )
            except ClientError as exc:
                if _first_condition_failed(exc):
                    raise AlreadyExists(f"email {email.email_id} exists") from exc
                raise
            return
        try:
            self._db.put_item(TableName=self._table, Item=email_item, ConditionExpression=new)
        except ClientError as exc:
            if _conditional_failed(exc):
                raise AlreadyExists(f"email {email.email_id} exists") from exc
            raise
        for item in message_items:
            self._db.put_item(TableName=self._table, Item=item, ConditionExpression=new)

    def _items(self, key: EmailKey) -> list[dict[str, Any]]:
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": _encode({":pk": resources.email_pk(key.tenant_id, key.email_id)}),
            "ConsistentRead": True,
        }
        out: list[dict[str, Any]] = []
        while True:
            page = self._db.query(**kwargs)
            out += [_raw(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get_email(self, key: EmailKey) -> tuple[EmailRecord, list[MessageRecord]] | None:
        """The email and its messages; None also for an email stored without its messages (a crash
        during `create_email`), which nobody was told about."""
        found = self._items(key)
        email_items = [i for i in found if i["sk"] == resources.EMAIL_SK]
        messages = [items.message_record(i) for i in found if str(i["sk"]).startswith(resources.MESSAGE_SK_PREFIX)]
        if not email_items:
            return None
        pending = items.pending_message(email_items[0])
        if not messages and pending is not None:
            messages = [pending]
        if not messages:
            return None
        return items.email_record(email_items[0]), messages

    def _get(self, key: Item) -> dict[str, Any] | None:
        found = self._db.get_item(TableName=self._table, Key=key, ConsistentRead=True)
        return _raw(found["Item"]) if "Item" in found else None

    def get_email_record(self, key: EmailKey) -> EmailRecord | None:
        """The email item is written once and never changed (only TTL removes it), so an eventually
        consistent read, half the read units of a consistent one, returns it as stored; just after the
        email's creation it may not see it yet, and then a consistent read settles whether it is there."""
        email_key = _email_key(key)
        found = self._db.get_item(TableName=self._table, Key=email_key)
        item = _raw(found["Item"]) if "Item" in found else self._get(email_key)
        if item is None:
            return None
        self._keep_email(item)
        return items.email_record(item)

    def get_email_records(self, keys: Sequence[EmailKey]) -> dict[EmailKey, EmailRecord]:
        """BatchGetItem, eventually consistent (the items never change once stored)."""
        wanted = list(dict.fromkeys(keys))
        fetched = self._batch_get([_email_key(key) for key in wanted], consistent=False)
        out: dict[EmailKey, EmailRecord] = {}
        for key in wanted:
            item = fetched.get((resources.email_pk(key.tenant_id, key.email_id), resources.EMAIL_SK))
            if item is not None:
                self._keep_email(item)
                out[key] = items.email_record(item)
        return out

    def get_message(self, key: MessageKey) -> MessageRecord | None:
        item = self._get(_message_key(key))
        if item is not None:
            return items.message_record(item)
        return self._pending(key)

    def _pending(self, key: MessageKey) -> MessageRecord | None:
        """The message as its pending email item stands for it (None: it has none, or is not this one)."""
        kept = self._pending_email(key)
        return kept.message if kept else None

    def _pending_email(self, key: MessageKey) -> _Pending | None:
        """What the message's email item stands for, if it is pending and for this message: as a read of
        the item noted it (the item never changes), else read as `get_email_record` reads it."""
        pk = resources.email_pk(key.tenant_id, key.email_id)
        if pk not in self._pending_of:
            self.get_email_record(key.email)  # notes it, when there is one
        found = self._pending_of.get(pk)
        return found if found is not None and found.message.message_id == key.message_id else None

    def _materialize(self, key: MessageKey) -> None:
        """Create the message item of a pending email as the email item stands for it (a first write
        other than a lease, which writes its own): conditional, so only the first of any number of
        writers creates it. RecordNotFound when there is neither a message item nor a pending email."""
        pending = self._pending_email(key)
        if pending is None:
            raise RecordNotFound(f"no message {key.message_id}")
        self._create_message_item(items.message_item(pending.message, pending.expires_at, None, listed=False))

    def _create_message_item(self, item: dict[str, Any]) -> bool:
        """PutItem of a pending email's message item unless it has one already (then False)."""
        try:
            self._db.put_item(TableName=self._table, Item=_encode(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def find_message_key(self, tenant_id: str, message_id: str) -> MessageKey | None:
        """The message's key from its id (petrel.ids.email_id_of) and one read; ids made before that
        rule are found with the `by_message_id` index."""
        email_id = email_id_of(message_id)
        if email_id is None:
            return None
        derived = MessageKey(tenant_id, email_id, message_id)
        found = self._db.get_item(TableName=self._table, Key=_message_key(derived), ProjectionExpression="pk")
        if "Item" in found or self._pending(derived) is not None:
            return derived
        index = resources.BY_MESSAGE_ID
        page = self._db.query(
            TableName=self._table,
            IndexName=index.name,
            KeyConditionExpression="#m = :m",
            ExpressionAttributeNames={"#m": index.partition_key.name},
            ExpressionAttributeValues=_encode({":m": message_id}),
        )
        for item in (_raw(i) for i in page.get("Items", [])):
            owner, old_email_id = resources.split_email_pk(str(item["pk"]))
            if owner == tenant_id and item.get("tenant_id") == tenant_id:
                return MessageKey(tenant_id, old_email_id, message_id)
        return None

    def lease(self, key: MessageKey, *, after_attempt: int, now: int, lease_until: int) -> MessageRecord:
        """One write to the item and none to an index on the happy path: `sending` is in no listing
        index, and the due entry stays (the sweeper reads the lease from the item). A pending email's
        first lease creates its message item, leased (one PutItem); when the item exists already (a
        cancel, the sweeper or another lease created it) the lease is the update below."""
        if after_attempt == 0:
            leased = self._lease_pending(key, lease_until)
            if leased is not None:
                return leased
        item_key = _message_key(key)
        leasable = {f":l{i}": s.value for i, s in enumerate(LEASABLE_STATUSES)}
        # The common case, one write: a waiting message becomes this job's next attempt.
        try:
            return self._lease_write(
                item_key,
                update=(
                    "SET #s = :sending, lease_until = :until, "
                    f"attempt = if_not_exists(attempt, :zero) + :one REMOVE takeovers, {_TENANT_STATUS}"
                ),
                condition=f"attribute_exists(pk) AND #s IN ({', '.join(leasable)}) AND attempt = :job",
                values={":until": lease_until, ":zero": 0, ":one": 1, ":job": after_attempt, **leasable},
            )
        except WriteConflict:
            pass
        # The worker that held this job's attempt died: take the same attempt over, and count it.
        return self._lease_write(
            item_key,
            update="SET lease_until = :until, takeovers = if_not_exists(takeovers, :zero) + :one",
            condition="#s = :sending AND lease_until < :now AND attempt = :next",
            values={":until": lease_until, ":now": now, ":zero": 0, ":one": 1, ":next": after_attempt + 1},
        )

    def _lease_pending(self, key: MessageKey, lease_until: int) -> MessageRecord | None:
        """The first lease of a pending email's message, written as its message item; None when the email
        is not pending or the message has its item already."""
        pending = self._pending_email(key)
        if pending is None:
            return None
        leased = pending.message.model_copy(
            update={"status": MessageStatus.SENDING, "attempt": 1, "lease_until": lease_until}
        )
        created = self._create_message_item(items.message_item(leased, pending.expires_at, None, listed=False))
        return leased if created else None

    def _lease_write(self, key: Item, *, update: str, condition: str, values: dict[str, Any]) -> MessageRecord:
        try:
            out = self._db.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": _STATUS},
                ExpressionAttributeValues=_encode({":sending": MessageStatus.SENDING.value, **values}),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            raise _lost(exc, "leasable message") from exc
        return items.message_record(_raw(out["Attributes"]))

    def transition(
        self,
        key: MessageKey,
        *,
        expected: Sequence[MessageStatus],
        attempt: int | None,
        change: Transition,
        now: datetime,
        lease_until: int | None = None,
    ) -> None:
        update, values = _transition_update(key, change, now)
        expected_names = {f":e{i}": s.value for i, s in enumerate(expected)}
        values.update(expected_names)
        condition = f"#s IN ({', '.join(expected_names)})"
        if attempt is not None:
            condition += " AND attempt = :attempt"
            values[":attempt"] = attempt
        if lease_until is not None:  # still the lease this worker took (a takeover replaces it)
            condition += " AND lease_until = :held"
            values[":held"] = lease_until
        self._update_message(
            key,
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": _STATUS},
            ExpressionAttributeValues=_encode(values),
        )

    def _update_message(self, key: MessageKey, **update: Any) -> None:
        """A conditional UpdateItem of the message item (WriteConflict / RecordNotFound). A pending
        email's message gets its item first, then the update is tried again."""
        for materialized in (False, True):
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=_message_key(key),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **update,
                )
                return
            except ClientError as exc:
                lost = _lost(exc, f"message {key.message_id}")
                if materialized or not isinstance(lost, RecordNotFound):
                    raise lost from exc
            self._materialize(key)

    def _batch_get(self, keys: Sequence[Item], *, consistent: bool) -> dict[tuple[str, str], dict[str, Any]]:
        """The items at `keys` (those that exist), by (pk, sk); unprocessed keys are asked again."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(keys), _BATCH_GET):
            pending: list[Item] = list(keys[start : start + _BATCH_GET])
            while pending:
                out = self._db.batch_get_item(
                    RequestItems={self._table: {"Keys": pending, "ConsistentRead": consistent}}
                )
                for raw in out.get("Responses", {}).get(self._table, []):
                    item = _raw(raw)
                    found[(str(item["pk"]), str(item["sk"]))] = item
                unprocessed = out.get("UnprocessedKeys", {}).get(self._table)
                pending = list(unprocessed["Keys"]) if unprocessed else []
        return found

    def _entries(
        self, keys: Sequence[Mapping[str, AttributeValueTypeDef]], *, consistent: bool
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The message item of each listing entry in `keys`, by the entry's (pk, sk): the entry's own item,
        or for a pending email's entry its message's item if it has one, else the item it would be
        (message_items.pending_message). An entry whose item is gone is left out. One BatchGetItem for
        the entries and the message items of their pending emails (their positional ids: a pending
        email's recipient has one), a second only for what that missed."""
        wanted = [(str(_raw(k)["pk"]), str(_raw(k)["sk"])) for k in keys]
        guesses = [
            (pk, resources.message_sk(positional_message_id(resources.split_email_pk(pk)[1], 1)))
            for pk, sk in wanted
            if sk == resources.EMAIL_SK
        ]
        asked = list(dict.fromkeys([*wanted, *guesses]))
        fetched = self._batch_get([_item_key(pk, sk) for pk, sk in asked], consistent=consistent)
        more = [
            (pk, resources.message_sk(items.pending_message_id(item)))
            for (pk, _), item in fetched.items()
            if items.is_pending_email(item)
        ]
        asked_set = set(asked)
        more = [key for key in more if key not in asked_set]
        if more:
            fetched |= self._batch_get([_item_key(pk, sk) for pk, sk in more], consistent=consistent)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for pk, sk in wanted:
            item = fetched.get((pk, sk))
            if item is not None and sk == resources.EMAIL_SK:
                pending = items.pending_message(item)
                own = fetched.get((pk, resources.message_sk(pending.message_id))) if pending else None
                if pending is not None and own is None:
                    expires = int(item[resources.MESSAGES.ttl_attribute])
                    own = _present(items.message_item(pending, expires, None, listed=False))
                item = own
            if item is not None:
                out[(pk, sk)] = item
        return out

    def list_messages(self, tenant_id: str, *, status: MessageStatus | None, limit: int, cursor: str | None) -> Page:
        """Newest first, from a keys-only index and one BatchGetItem per page. A status with an index of
        its own (resources.INDEXED_STATUSES) is read from it; another is found by walking all of the
        tenant's messages and examining at most `_WALK_FACTOR` x `limit` of them per call: the page
        then may hold fewer than `limit` messages (even none) with a cursor to go on."""
        indexed = _indexed(tenant_id, status) if status is not None else None
        if indexed is not None:
            index, key_value, listing = resources.BY_TENANT_STATUS, indexed, indexed
        else:
            index, key_value = resources.BY_TENANT, tenant_id
            listing = tenant_id if status is None else resources.tenant_status(tenant_id, status.value)
        key_name = index.partition_key.name
        start = _decode_listing_cursor(cursor, listing, index, key_value) if cursor else None
        budget = limit if status is None or indexed is not None else limit * _WALK_FACTOR
        found: list[MessageRecord] = []
        while True:
            kwargs: QueryInputTypeDef = {
                "TableName": self._table,
                "IndexName": index.name,
                "KeyConditionExpression": "#k = :k",
                "ExpressionAttributeNames": {"#k": key_name},
                "ExpressionAttributeValues": _encode({":k": key_value}),
                "ScanIndexForward": False,
                "Limit": min(budget, max(limit, _BATCH_GET)) if budget > limit else budget,
            }
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = self._db.query(**kwargs)
            keys = page.get("Items", [])
            fetched = self._entries(keys, consistent=False)
            for raw_key in keys:
                start = dict(raw_key)
                budget -= 1
                item = fetched.get((str(_raw(raw_key)["pk"]), str(_raw(raw_key)["sk"])))
                if item is not None and (status is None or item["status"] == status.value):
                    found.append(items.message_record(item))
                if len(found) == limit or budget == 0:
                    more = raw_key is not keys[-1] or "LastEvaluatedKey" in page
                    return Page(messages=found, cursor=_listing_cursor(listing, start) if more else None)
            if "LastEvaluatedKey" not in page:
                return Page(messages=found, cursor=None)
            start = page["LastEvaluatedKey"]

    def find_due(self, shard: str, *, due_before: int, limit: int, cursor: str | None) -> DuePage:
        """The shard's entries due at or before `due_before`, each read from its item (consistent):
        the index holds only what never changes, so a lease, a retry's wait or a final status
        writes no index. A creation shard walks its tenant's `by_tenant` partition instead."""
        tenant_id = resources.creation_shard_tenant(shard)
        if tenant_id is not None:
            return self._find_created(tenant_id, created_before=due_before, limit=limit, cursor=cursor)
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "IndexName": resources.DUE_INDEX.name,
            "KeyConditionExpression": "#shard = :shard AND #due <= :before",
            "ExpressionAttributeNames": {"#shard": _DUE_SHARD, "#due": _DUE_AT},
            "ExpressionAttributeValues": _encode({":shard": shard, ":before": due_before}),
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_due_cursor(cursor, shard)
        # The entry's due time and pool: the item may have moved on since (the claim checks it).
        page = self._db.query(**kwargs)
        entries = page.get("Items", [])
        fetched = self._batch_get([{"pk": e["pk"], "sk": e["sk"]} for e in entries], consistent=True)
        found: list[DueMessage] = []
        for raw_entry in entries:
            entry = _raw(raw_entry)
            item = fetched.get((str(entry["pk"]), str(entry["sk"])))
            if item is not None:
                position = _encode_cursor({k: raw_entry[k] for k in ("pk", "sk", _DUE_SHARD, _DUE_AT)})
                found.append(_due_message(item, pool=entry["pool"], due_at=int(entry[_DUE_AT]), position=position))
        last = page.get("LastEvaluatedKey")
        return DuePage(messages=found, cursor=_encode_cursor(last) if last else None)

    def _find_created(self, tenant_id: str, *, created_before: int, limit: int, cursor: str | None) -> DuePage:
        """The tenant's messages created before `created_before`, oldest first, from its `by_tenant`
        partition (keys only), each read from its item (a pending email's entry: see `_entries`).
        Eventually consistent reads suffice: a stale item shows an earlier state of the message, and
        every write the sweeper makes from it is conditional on that state (a message that moved on
        meanwhile only loses the claim)."""
        index = resources.BY_TENANT
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "IndexName": index.name,
            "KeyConditionExpression": "#t = :t AND #c < :before",
            "ExpressionAttributeNames": {"#t": _LISTED_TENANT, "#c": _LISTED_AT},
            "ExpressionAttributeValues": _encode({":t": tenant_id, ":before": created_before}),
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_start_key(_cursor_json(cursor), index, tenant_id)
        page = self._db.query(**kwargs)
        entries = page.get("Items", [])
        fetched = self._entries(entries, consistent=False)
        found: list[DueMessage] = []
        for raw_entry in entries:
            item = fetched.get((str(_raw(raw_entry)["pk"]), str(_raw(raw_entry)["sk"])))
            if item is not None:
                due = item.get(_DUE_AT)
                position = _json_cursor(_start_key_json(raw_entry))
                found.append(
                    _due_message(
                        item, pool=item["pool"], due_at=int(due) if due is not None else None, position=position
                    )
                )
        last = page.get("LastEvaluatedKey")
        return DuePage(messages=found, cursor=_json_cursor(_start_key_json(last)) if last else None)

    def backfill_listing(self) -> int:
        """Give every message item stored before `by_tenant` was keyed on `listed_tenant`/`listed_at` its
        listing keys (petrel.resources: the migration from by_tenant_v2), and return how many it gave
        them. Idempotent: each write is conditional on the item still lacking them. The message item of a
        pending email is not listed (its email item is) and is passed."""
        kwargs: ScanInputTypeDef = {
            "TableName": self._table,
            "FilterExpression": "begins_with(sk, :msg) AND attribute_exists(created_key) AND attribute_not_exists(#lt)",
            "ProjectionExpression": "pk, sk, created_key, created_at",
            "ExpressionAttributeNames": {"#lt": _LISTED_TENANT},
            "ExpressionAttributeValues": _encode({":msg": resources.MESSAGE_SK_PREFIX}),
            "ConsistentRead": True,
        }
        listed = 0
        pending: dict[str, bool] = {}
        for item in _scan_all(self._db, kwargs, _raw):
            pk = str(item["pk"])
            if pk not in pending:
                email = self._get(_item_key(pk, resources.EMAIL_SK))
                pending[pk] = email is not None and items.is_pending_email(email)
            if pending[pk]:
                continue
            if "created_at" in item:  # older items
                created = items.when(item["created_at"])
            else:
                created = items.when_of_created_key(str(item["created_key"]))
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=_item_key(pk, str(item["sk"])),
                    UpdateExpression="SET #lt = :lt, #lc = :lc",
                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#lt)",
                    ExpressionAttributeNames={"#lt": _LISTED_TENANT, "#lc": _LISTED_AT},
                    ExpressionAttributeValues=_encode(
                        {":lt": resources.split_email_pk(pk)[0], ":lc": items.epoch(created)}
                    ),
                )
                listed += 1
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
        return listed

    def due_watermark(self, shard: str) -> str | None:
        item = self._get(_encode({"pk": _WATERMARK_PK, "sk": shard}))
        return str(item["position"]) if item else None

    def set_due_watermark(self, shard: str, position: str) -> None:
        tenant_id = resources.creation_shard_tenant(shard)
        if tenant_id is not None:
            _decode_start_key(_cursor_json(position), resources.BY_TENANT, tenant_id)  # this shard's, or InvalidCursor
        else:
            _decode_due_cursor(position, shard)
        self._db.update_item(  # UpdateItem: the sweeper's grant has no PutItem
            TableName=self._table,
            Key=_encode({"pk": _WATERMARK_PK, "sk": shard}),
            UpdateExpression="SET #p = :p",
            ExpressionAttributeNames={"#p": "position"},
            ExpressionAttributeValues=_encode({":p": position}),
        )

    def claim_repair(self, message: DueMessage, *, now: int) -> None:
        self.move_due(message, to=now)

    def move_due(self, message: DueMessage, *, to: int) -> None:
        values: dict[str, Any] = {":to": to, ":status": message.status.value, ":attempt": message.attempt}
        names = {"#s": _STATUS, "#due": _DUE_AT}
        if message.due_at is None:  # its first entry in the due index (found in its creation shard)
            update, seen = "SET #due = :to, #shard = :shard", "attribute_not_exists(#due)"
            values[":shard"] = resources.due_shard(message.message_id)
            names["#shard"] = _DUE_SHARD
        else:
            update, seen = "SET #due = :to", "#due = :seen"
            values[":seen"] = message.due_at
        self._update_message(
            message.key,
            UpdateExpression=update,
            ConditionExpression=f"#s = :status AND attempt = :attempt AND {seen}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=_encode(values),
        )

    def adopt_due(self, message: DueMessage, *, to: int) -> None:
        self._update_message(
            message.key,
            UpdateExpression="SET #due = :to, #shard = :shard",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#due)",
            ExpressionAttributeNames={"#due": _DUE_AT, "#shard": _DUE_SHARD},
            ExpressionAttributeValues=_encode({":to": to, ":shard": resources.due_shard(message.message_id)}),
        )

    def record_events(self, key: MessageKey, events: Sequence[Event], *, now: datetime) -> None:
        """Read the timeline, then append what it lacks on condition that the timeline is still as long
        as it was read (any other append, a transition's too, changes its length): a report applied
        twice, or by two workers at once, is on the timeline once. Nothing new: nothing is written."""
        for _ in range(_EVENT_WRITE_TRIES):
            item = self._get(_message_key(key))
            if item is None:
                self._materialize(key)  # RecordNotFound when there is no such message
                item = self._get(_message_key(key))
            if item is None:
                raise RecordNotFound(f"no message {key.message_id}")
            record = items.message_record(item)
            stored = list(item.get("events", []))
            seen = {_event_identity(e) for e in record.events}
            new: list[dict[str, Any]] = []
            for event in events:
                if _event_identity(event) not in seen:
                    seen.add(_event_identity(event))
                    new.append(
                        items.event_out(event, message_id=key.message_id, recipient=record.recipient, attempt=None)
                    )
            if not new:
                return
            unchanged = "size(events) = :n"
            if not stored:  # a record written without the attribute has an empty timeline too
                unchanged = f"(attribute_not_exists(events) OR {unchanged})"
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key=_message_key(key),
                    UpdateExpression="SET events = list_append(if_not_exists(events, :empty), :new), updated_at = :now",
                    ConditionExpression=f"attribute_exists(pk) AND {unchanged}",
                    ExpressionAttributeValues=_encode(
                        {":empty": [], ":new": new, ":now": items.epoch(now), ":n": len(stored)}
                    ),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return
            except ClientError as exc:
                lost = _lost(exc, f"message {key.message_id}")
                if lost is exc:
                    raise
                if isinstance(lost, RecordNotFound):
                    raise lost from exc
        raise WriteConflict(f"the timeline of message {key.message_id} kept changing")


def _listing_cursor(listing: str, start: Mapping[str, AttributeValueTypeDef]) -> str:
    """A listing's cursor: which listing it belongs to, and the index key to go on after."""
    return _json_cursor({"l": listing, "k": _start_key_json(start)})


def _decode_listing_cursor(cursor: str, listing: str, index: IndexSpec, key_value: str) -> Item:
    raw = _cursor_json(cursor)
    if not isinstance(raw, dict) or raw.get("l") != listing:
        raise InvalidCursor("cursor does not belong to this listing")
    return _decode_start_key(raw.get("k"), index, key_value)


def _start_key_json(start: Mapping[str, AttributeValueTypeDef]) -> dict[str, str]:
    """An index query's start key as JSON: each value as its string (a number's exact digits)."""
    return {name: str(next(iter(value.values()))) for name, value in start.items()}


def _decode_start_key(raw: Any, index: IndexSpec, partition: str) -> Item:
    """What `_start_key_json` made of a start key in `index`'s partition `partition`, or InvalidCursor:
    exactly the table's and the index's keys, each of its type, nothing missing."""
    keys = [Key("pk"), Key("sk"), index.partition_key, *([index.sort_key] if index.sort_key else [])]
    if (
        not isinstance(raw, dict)
        or set(raw) != {k.name for k in keys}
        or raw.get(index.partition_key.name) != partition
        or not all(isinstance(v, str) for v in raw.values())
    ):
        raise InvalidCursor("cursor does not belong to this listing")
    for key in keys:
        if key.type == "N":
            try:
                if not Decimal(raw[key.name]).is_finite():
                    raise InvalidCursor("cursor does not belong to this listing")
            except ArithmeticError as exc:
                raise InvalidCursor("cursor does not belong to this listing") from exc
    return {key.name: {key.type: raw[key.name]} for key in keys}  # type: ignore[misc]


def _present(item: Mapping[str, Any]) -> dict[str, Any]:
    """A new item's values as a read returns them (what is None is not stored)."""
    return {k: v for k, v in item.items() if v is not None}


# How often record_events re-reads a timeline that another writer appended to meanwhile.
_EVENT_WRITE_TRIES = 5


def _event_identity(event: Event) -> tuple[str, datetime, str | None]:
    """What makes two events the same one (MessageStore.record_events): type, time and detail."""
    return event.type.value, event.at, event.detail


def _due_message(item: dict[str, Any], *, pool: Any, due_at: int | None, position: str) -> DueMessage:
    tenant_id, email_id = resources.split_email_pk(str(item["pk"]))
    return DueMessage(
        tenant_id=tenant_id,
        email_id=email_id,
        message_id=str(item["sk"]).removeprefix(resources.MESSAGE_SK_PREFIX),
        status=MessageStatus(item[_STATUS]),
        attempt=int(item.get("attempt", 0)),
        pool=pool,
        due_at=due_at,
        lease_until=int(item["lease_until"]) if item.get("lease_until") is not None else None,
        position=position,
    )


def _decode_due_cursor(cursor: str, shard: str) -> Item:
    raw = _cursor_json(cursor)
    if not isinstance(raw, dict) or raw.get(_DUE_SHARD) != shard:
        raise InvalidCursor("cursor does not belong to this shard")
    return _encode(raw)


def _encode_cursor(key: Mapping[str, AttributeValueTypeDef]) -> str:
    return _json_cursor(_decode(key))


def _json_cursor(value: Any) -> str:
    """An opaque cursor of a JSON value: what `_cursor_json` reads back."""
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _cursor_json(cursor: str) -> Any:
    """What `_encode_cursor` encoded, or InvalidCursor for anything else."""
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not valid") from exc


class DynamoSuppressionStore:
    """One item per (tenant_id, email); `email` is stored lower-cased, so lookups are case-blind."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    @staticmethod
    def _key(tenant_id: str, email: str) -> Item:
        return _encode({"tenant_id": tenant_id, "email": email.lower()})

    def add(self, suppression: Suppression) -> None:
        item = _dump(suppression, email=suppression.email.lower())
        try:
            self._db.put_item(
                TableName=self._table, Item=_encode(item), ConditionExpression="attribute_not_exists(email)"
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise AlreadyExists(f"{item['email']} is on the suppression list already") from exc
            raise

    def get(self, tenant_id: str, email: str) -> Suppression | None:
        found = self._db.get_item(TableName=self._table, Key=self._key(tenant_id, email))
        return Suppression.model_validate(_decode(found["Item"])) if "Item" in found else None

    def remove(self, tenant_id: str, email: str) -> None:
        out = self._db.delete_item(TableName=self._table, Key=self._key(tenant_id, email), ReturnValues="ALL_OLD")
        if "Attributes" not in out:
            raise RecordNotFound(f"{email.lower()} is not on the suppression list")

    def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> SuppressionPage:
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "tenant_id = :t",
            "ExpressionAttributeValues": _encode({":t": tenant_id}),
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = self._key(tenant_id, _decode_email_cursor(cursor))
        page = self._db.query(**kwargs)
        found = [Suppression.model_validate(_decode(i)) for i in page.get("Items", [])]
        more = "LastEvaluatedKey" in page and len(found) == limit
        return SuppressionPage(suppressions=found, cursor=_encode_email_cursor(found[-1].email) if more else None)


def _encode_email_cursor(email: str) -> str:
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def _decode_email_cursor(cursor: str) -> str:
    try:
        email = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not valid") from exc
    if "@" not in email:
        raise InvalidCursor("cursor is not valid")
    return email


class DynamoIdempotencyStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    def begin(
        self, key: str, request_hash: str, *, now: int, expires_at: int, in_flight_until: int
    ) -> IdempotencyRecord:
        claim = {
            "pk": key,
            "state": "in_progress",
            "request_hash": request_hash,
            "in_flight_until": in_flight_until,
            resources.IDEMPOTENCY.ttl_attribute: expires_at,
        }
        try:
            self._db.put_item(
                TableName=self._table,
                Item=_encode(claim),
                ConditionExpression="attribute_not_exists(pk) OR #exp < :now",
                ExpressionAttributeNames={"#exp": resources.IDEMPOTENCY.ttl_attribute},
                ExpressionAttributeValues=_encode({":now": now}),
            )
            return IdempotencyRecord(state="new")
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
        found = self._db.get_item(TableName=self._table, Key=_encode({"pk": key}), ConsistentRead=True).get("Item")
        if found is None:  # expired and removed between the two calls
            return self.begin(key, request_hash, now=now, expires_at=expires_at, in_flight_until=in_flight_until)
        item = _decode(found)
        if item.get("request_hash") != request_hash:
            return IdempotencyRecord(state="mismatch")
        if item["state"] == "completed":
            return IdempotencyRecord(
                state="completed", response=item.get("response"), response_key=item.get("response_key")
            )
        if item.get("in_flight_until", 0) >= now:
            return IdempotencyRecord(state="in_progress")
        try:  # the first request died mid-way: take its claim over
            self._db.put_item(
                TableName=self._table,
                Item=_encode(claim),
                ConditionExpression="in_flight_until = :old AND #st = :ip",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues=_encode({":old": item.get("in_flight_until", 0), ":ip": "in_progress"}),
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return IdempotencyRecord(state="in_progress")
            raise
        return IdempotencyRecord(state="new")

    def complete(self, key: str, *, response: bytes | None, response_key: str | None) -> None:
        kept = {"response": response, "response_key": response_key}
        sets = "".join(f", #{name} = :{name}" for name, value in kept.items() if value is not None)
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_encode({"pk": key}),
                UpdateExpression=f"SET #st = :c{sets} REMOVE in_flight_until",
                ConditionExpression="attribute_exists(pk)",  # never resurrect a released claim half-made
                ExpressionAttributeNames={"#st": "state", **{f"#{k}": k for k, v in kept.items() if v is not None}},
                ExpressionAttributeValues=_encode({":c": "completed", **{f":{k}": v for k, v in kept.items()}}),
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def release(self, key: str) -> None:
        self._db.delete_item(TableName=self._table, Key=_encode({"pk": key}))
