"""The stored form of the messages table's items (petrel.adapters.dynamodb.DynamoMessageStore).

Why a stored form of its own: a message item relayed first try must stay under 1 KB (one write unit
per write), so nothing is stored twice. The ids are in the keys (`pk` = `<tenant>#<email>`, `sk` =
`MSG#<message id>`) and not repeated; the creation time is in `created_key`; each SMTP reply is stored
once, in its attempt: an event whose reply is its attempt's holds the attempt's number (`ra`), and so
does `last_reply` when it is the last attempt's; events and attempts use short keys and epoch seconds.
`message_record` and `email_record` rebuild the records the API shows, unchanged, and also read the
items written before this form (full ids and ISO times, every reply in full), which keep working.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from petrel import resources
from petrel.ids import message_id
from petrel.mail import body_dictionary
from petrel.mail.addresses import parse_mailbox
from petrel.mail.mime import header_message_id
from petrel.mail.verp import VERP_LOCAL_PREFIX
from petrel.models.records import (
    Attempt,
    EmailRecord,
    Event,
    EventName,
    MessageRecord,
    MessageStatus,
    Recipient,
    Reply,
)

DEFAULT_POOL = "transactional"

_MICRO = Decimal("0.000001")


def epoch(at: datetime) -> Decimal:
    """`at` as epoch seconds, exact to the microsecond (a DynamoDB number)."""
    whole = int(at.replace(microsecond=0).timestamp())
    return Decimal(whole) + Decimal(at.microsecond) * _MICRO


def when(value: Any) -> datetime:
    """A stored time back: epoch seconds (this form) or an ISO string (older items)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    number = Decimal(value)
    whole = int(number)
    return datetime.fromtimestamp(whole, UTC).replace(microsecond=int((number - whole) / _MICRO))


def reply_out(reply: Reply) -> list[Any]:
    return [reply.code, reply.enhanced, reply.text, reply.stage]


def reply_in(value: Any) -> Reply:
    if isinstance(value, dict):  # older items
        return Reply.model_validate(value)
    code, enhanced, text, stage = value
    return Reply(code=int(code), enhanced=enhanced, text=text, stage=stage)


def attempt_out(attempt: Attempt) -> dict[str, Any]:
    out: dict[str, Any] = {"n": attempt.number, "s": epoch(attempt.started_at)}
    if attempt.finished_at is not None:
        out["f"] = epoch(attempt.finished_at)
    if attempt.server_id is not None:
        out["v"] = attempt.server_id
    if attempt.outcome is not None:
        out["o"] = attempt.outcome
    if attempt.reply is not None:
        out["r"] = reply_out(attempt.reply)
    return out


def attempt_in(value: dict[str, Any]) -> Attempt:
    if "number" in value:  # older items
        return Attempt.model_validate(value)
    return Attempt(
        number=int(value["n"]),
        started_at=when(value["s"]),
        finished_at=when(value["f"]) if "f" in value else None,
        server_id=value.get("v"),
        outcome=value.get("o"),
        reply=reply_in(value["r"]) if "r" in value else None,
    )


def reply_ref(reply: Reply | None, attempt: Attempt | None) -> Any:
    """How a reply that comes with `attempt` is stored: the attempt's number when it is that attempt's
    reply (stored there already), else in full."""
    if reply is None:
        return None
    if attempt is not None and attempt.reply == reply:
        return attempt.number
    return reply_out(reply)


def resolve_reply(value: Any, attempts: dict[int, Attempt]) -> Reply | None:
    """A stored reply back: a number names the attempt that holds it; older items hold it in full."""
    if value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return attempts[int(value)].reply
    return reply_in(value)


def event_out(event: Event, *, message_id: str, recipient: str, attempt: Attempt | None) -> dict[str, Any]:
    out: dict[str, Any] = {"t": event.type.value, "at": epoch(event.at)}
    if event.message_id != message_id:
        out["m"] = event.message_id
    if event.recipient != recipient:
        out["rc"] = event.recipient
    if event.detail is not None:
        out["d"] = event.detail
    ref = reply_ref(event.reply, attempt)
    if ref is not None:
        out["r"] = ref
    return out


def event_in(value: dict[str, Any], *, message_id: str, recipient: str, attempts: dict[int, Attempt]) -> Event:
    if "type" in value:  # older items
        return Event.model_validate(value)
    return Event.model_validate(
        {
            "type": value["t"],
            "at": when(value["at"]),
            "message_id": value.get("m", message_id),
            "recipient": value.get("rc", recipient),
            "detail": value.get("d"),
            "reply": resolve_reply(value.get("r"), attempts),
        }
    )


def message_item(message: MessageRecord, expires_at: int | None, due: int | None, *, listed: bool) -> dict[str, Any]:
    """A new message item (None values are left out by the caller's encoding); `listed`: the message's
    entry in `by_tenant` (False: its email item is the entry, see `pending_message`)."""
    attempts = {a.number: a for a in message.attempts}
    last = message.attempts[-1] if message.attempts else None
    status = message.status.value
    return {
        "pk": resources.email_pk(message.tenant_id, message.email_id),
        "sk": resources.message_sk(message.message_id),
        resources.LISTED_TENANT: message.tenant_id if listed else None,
        resources.LISTED_AT: epoch(message.created_at) if listed else None,
        "created_key": resources.created_key(message.created_at, message.message_id),
        "tenant_status": (
            resources.tenant_status(message.tenant_id, status) if status in resources.INDEXED_STATUSES else None
        ),
        "recipient": message.recipient,
        "kind": message.kind,
        "pool": message.pool,
        "status": status,
        "attempt": message.attempt,
        "lease_until": message.lease_until,
        "takeovers": message.takeovers or None,
        "bounce_class": message.bounce_class,
        "failure_reason": message.failure_reason,
        "last_reply": reply_ref(message.last_reply, last),
        "next_attempt_at": epoch(message.next_attempt_at) if message.next_attempt_at else None,
        "send_at": epoch(message.send_at) if message.send_at else None,
        "attempts": [attempt_out(a) for a in message.attempts] or None,
        "events": [
            event_out(
                e,
                message_id=message.message_id,
                recipient=message.recipient,
                attempt=attempts.get(message.attempt) if e.reply else None,
            )
            for e in message.events
        ]
        or None,
        "return_path": message.return_path,
        "updated_at": epoch(message.updated_at) if message.updated_at != message.created_at else None,
        resources.MESSAGES.ttl_attribute: expires_at,
        resources.DUE_SHARD: resources.due_shard(message.message_id) if due is not None else None,
        resources.DUE_AT: due,
    }


def message_record(item: dict[str, Any]) -> MessageRecord:
    """The MessageRecord of a stored message item, of this form or an older one."""
    tenant_id, email_id = resources.split_email_pk(str(item["pk"]))
    message_id = str(item["sk"]).removeprefix(resources.MESSAGE_SK_PREFIX)
    recipient = str(item["recipient"])
    attempt_list = [attempt_in(a) for a in item.get("attempts", [])]
    attempts = {a.number: a for a in attempt_list}
    created_at = when(item["created_at"]) if "created_at" in item else when_of_created_key(item["created_key"])
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "email_id": email_id,
        "message_id": message_id,
        "recipient": recipient,
        "kind": item["kind"],
        "pool": item["pool"],
        "status": item["status"],
        "attempt": int(item.get("attempt", 0)),
        "lease_until": int(item["lease_until"]) if item.get("lease_until") is not None else None,
        "takeovers": int(item.get("takeovers", 0)),
        "bounce_class": item.get("bounce_class"),
        "failure_reason": item.get("failure_reason"),
        "last_reply": resolve_reply(item.get("last_reply"), attempts),
        "next_attempt_at": when(item["next_attempt_at"]) if item.get("next_attempt_at") is not None else None,
        "send_at": when(item["send_at"]) if item.get("send_at") is not None else None,
        "attempts": tuple(attempt_list),
        "events": tuple(
            event_in(e, message_id=message_id, recipient=recipient, attempts=attempts) for e in item.get("events", [])
        ),
        "return_path": item.get("return_path"),
        "created_at": created_at,
        "updated_at": when(item["updated_at"]) if "updated_at" in item else created_at,
    }
    return MessageRecord.model_validate(fields)


def when_of_created_key(created_key: str) -> datetime:
    return datetime.fromisoformat(created_key.rpartition("#")[0])


# An inline body is stored zlib-compressed against Petrel's preset dictionary (petrel.mail.body_dictionary)
# under BODY_ZD1 when that is smaller. Items of the form before hold it under BODY_Z (zlib alone), and
# bodies that do not compress hold it as is in `body_inline`: both are still read.
BODY_Z = "body_z"
BODY_ZD1 = "body_zd1"


def pack_body(body: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, body_dictionary.V1)
    return packer.compress(body) + packer.flush()


def unpack_body(packed: bytes) -> bytes:
    unpacker = zlib.decompressobj(zdict=body_dictionary.V1)
    return unpacker.decompress(packed) + unpacker.flush()


def derived_header_message_id(email: EmailRecord) -> str | None:
    """The Message-ID header Petrel gives an email (petrel.mail.mime.header_message_id), from its id and
    its From domain; None when the From address does not parse."""
    try:
        domain = parse_mailbox(email.from_address).address.rpartition("@")[2]
    except ValueError:
        return None
    return header_message_id(email.email_id, domain)


def email_item(email: EmailRecord, expires_at: int) -> dict[str, Any]:
    """A new email item, under 1 KB for a few-KB email (one write unit): the ids are in the key, the body
    compressed when that is smaller, nothing stored that the item's key and other fields give back (a
    recipient's message id when it is the one its position gives, the Message-ID header when it is the
    one Petrel makes, the default pool, no tags), the creation time as epoch seconds."""
    item: dict[str, Any] = email.model_dump(
        mode="json",
        exclude_none=True,
        exclude={"tenant_id", "email_id", "body_inline", "recipients", "created_at", "header_message_id"},
    )
    item["pk"] = resources.email_pk(email.tenant_id, email.email_id)
    item["sk"] = resources.EMAIL_SK
    item[resources.MESSAGES.ttl_attribute] = expires_at
    item["created_at"] = epoch(email.created_at)
    if email.header_message_id != derived_header_message_id(email):
        item["header_message_id"] = email.header_message_id
    if item.get("pool") == DEFAULT_POOL:
        del item["pool"]
    if not item.get("tags"):
        item.pop("tags", None)
    item["recipients"] = [_recipient_out(email.email_id, position, r) for position, r in enumerate(email.recipients, 1)]
    if email.body_inline is not None:
        packed = pack_body(email.body_inline)
        if len(packed) < len(email.body_inline):
            item[BODY_ZD1] = packed
        else:
            item["body_inline"] = email.body_inline
    return item


def _recipient_out(email_id: str, position: int, recipient: Recipient) -> Any:
    """`[address, kind]` when the message id is the one the position gives, else the recipient in full."""
    if recipient.message_id == message_id(email_id, position):
        return [recipient.email, recipient.kind]
    return recipient.model_dump(mode="json")


def _recipient_in(email_id: str, position: int, value: Any) -> Recipient:
    if isinstance(value, dict):
        return Recipient.model_validate(value)
    address, kind = value
    return Recipient(message_id=message_id(email_id, position), email=address, kind=kind)


def email_record(item: dict[str, Any]) -> EmailRecord:
    """The EmailRecord of a stored email item, of this form or an older one."""
    tenant_id, email_id = resources.split_email_pk(str(item["pk"]))
    skip = ("pk", "sk", BODY_Z, BODY_ZD1, resources.MESSAGES.ttl_attribute, "recipients", "created_at", *_PENDING)
    fields = {k: v for k, v in item.items() if k not in skip}
    fields.setdefault("tenant_id", tenant_id)
    fields.setdefault("email_id", email_id)
    fields.setdefault("pool", DEFAULT_POOL)
    fields["created_at"] = when(item["created_at"] if "created_at" in item else item[resources.LISTED_AT])
    fields["recipients"] = [_recipient_in(email_id, n, r) for n, r in enumerate(item.get("recipients", []), 1)]
    if BODY_ZD1 in item:
        fields["body_inline"] = unpack_body(bytes(item[BODY_ZD1]))
    elif BODY_Z in item:
        fields["body_inline"] = zlib.decompress(bytes(item[BODY_Z]))
    if "header_message_id" not in fields:
        partial = EmailRecord.model_validate({**fields, "header_message_id": ""})
        fields["header_message_id"] = derived_header_message_id(partial) or ""
    return EmailRecord.model_validate(fields)


# -- an email of one message, stored as one item until that message's first write -------------------
# The email item then carries the message's listing keys (`by_tenant`: its creation time replaces
# `created_at`) and, when the return path's domain is not the From address's, `RETURN_PATH_DOMAIN`:
# everything else of the message as created is the email's (its first recipient, pool, creation time).
RETURN_PATH_DOMAIN = "rpd"
_PENDING = (resources.LISTED_TENANT, resources.LISTED_AT, RETURN_PATH_DOMAIN)


def pending_email_item(email: EmailRecord, message: MessageRecord, expires_at: int) -> dict[str, Any] | None:
    """The email item that stands for `message` too, or None when `message` is not what that item gives
    back (`pending_message`): several recipients, a status other than queued, a return path of another
    form. Checked by reading the item back, so what is stored is what is read."""
    if message.status is not MessageStatus.QUEUED or len(email.recipients) != 1 or message.return_path is None:
        return None
    item = email_item(email, expires_at)
    del item["created_at"]
    item[resources.LISTED_TENANT] = email.tenant_id
    item[resources.LISTED_AT] = epoch(email.created_at)
    domain = message.return_path.rpartition("@")[2]
    if _from_domain(email.from_address) != domain:
        item[RETURN_PATH_DOMAIN] = domain
    return item if pending_message(item) == message else None


def _from_domain(from_address: str) -> str | None:
    try:
        return parse_mailbox(from_address).domain
    except ValueError:
        return None


def is_pending_email(item: dict[str, Any]) -> bool:
    """An email item that stands for its one message while that has no item of its own."""
    return item.get("sk") == resources.EMAIL_SK and resources.LISTED_TENANT in item


def pending_message_id(item: dict[str, Any]) -> str:
    """The id of the one message of a pending email item (`is_pending_email`)."""
    _, email_id = resources.split_email_pk(str(item["pk"]))
    return _recipient_in(email_id, 1, item["recipients"][0]).message_id


def pending_message(item: dict[str, Any]) -> MessageRecord | None:
    """The message a pending email item stands for, as it was created (`queued`, nothing tried), read
    without its body; None for any other item."""
    if not is_pending_email(item):
        return None
    tenant_id, email_id = resources.split_email_pk(str(item["pk"]))
    recipient = _recipient_in(email_id, 1, item["recipients"][0])
    created_at = when(item[resources.LISTED_AT])
    from_address = str(item["from_address"])
    domain = item.get(RETURN_PATH_DOMAIN) or _from_domain(from_address)
    return MessageRecord(
        tenant_id=tenant_id,
        email_id=email_id,
        message_id=recipient.message_id,
        recipient=recipient.email,
        kind=recipient.kind,
        pool=item.get("pool", DEFAULT_POOL),
        status=MessageStatus.QUEUED,
        events=(
            Event(type=EventName.QUEUED, at=created_at, message_id=recipient.message_id, recipient=recipient.email),
        ),
        return_path=f"{VERP_LOCAL_PREFIX}{recipient.message_id}@{domain}" if domain else None,
        created_at=created_at,
        updated_at=created_at,
    )
