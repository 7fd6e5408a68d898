"""In-memory MessageStore with the DynamoDB adapter's conditional-write and paging rules."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime

from petrel import resources
from petrel.errors import InvalidRequest
from petrel.models.due import due_time
from petrel.models.records import FINAL_STATUSES, LEASABLE_STATUSES, EmailRecord, MessageRecord, MessageStatus
from petrel.ports import DueMessage, DuePage, Page, Transition


class DuplicateEmail(Exception):
    """create_email for an email id that exists (DynamoDB cancels the transaction)."""


def created_key(message: MessageRecord) -> str:
    return f"{message.created_at.isoformat()}#{message.message_id}"


class FakeMessageStore:
    def __init__(self) -> None:
        self.emails: dict[tuple[str, str], EmailRecord] = {}
        self.messages: dict[tuple[str, str, str], MessageRecord] = {}
        self.expires_at: dict[tuple[str, str], int] = {}
        # The "due" index: message key -> due time; only non-final messages are in it.
        self.due: dict[tuple[str, str, str], int] = {}

    def _set_due(self, key: tuple[str, str, str], due: int | None) -> None:
        if due is None:
            self.due.pop(key, None)
        else:
            self.due[key] = due

    def create_email(self, email: EmailRecord, messages: Sequence[MessageRecord], expires_at: int) -> None:
        key = (email.tenant_id, email.email_id)
        if key in self.emails:
            raise DuplicateEmail(email.email_id)
        self.emails[key] = email
        self.expires_at[key] = expires_at
        for message in messages:
            self.messages[(message.tenant_id, message.email_id, message.message_id)] = message
            due = due_time(message.status, at=message.created_at, next_attempt_at=message.next_attempt_at)
            self._set_due((message.tenant_id, message.email_id, message.message_id), due)

    def get_email(self, tenant_id: str, email_id: str) -> tuple[EmailRecord, list[MessageRecord]] | None:
        email = self.emails.get((tenant_id, email_id))
        if email is None:
            return None
        found = [m for (t, e, _), m in self.messages.items() if (t, e) == (tenant_id, email_id)]
        return email, sorted(found, key=lambda m: m.message_id)

    def get_email_record(self, tenant_id: str, email_id: str) -> EmailRecord | None:
        return self.emails.get((tenant_id, email_id))

    def find_email_id(self, tenant_id: str, message_id: str) -> str | None:
        found = [e for (t, e, m) in self.messages if (t, m) == (tenant_id, message_id)]
        return found[0] if found else None

    def get_message(self, tenant_id: str, email_id: str, message_id: str) -> MessageRecord | None:
        return self.messages.get((tenant_id, email_id, message_id))

    def lease(
        self, tenant_id: str, email_id: str, message_id: str, *, after_attempt: int, now: int, lease_until: int
    ) -> MessageRecord | None:
        key = (tenant_id, email_id, message_id)
        current = self.messages.get(key)
        if current is None:
            return None
        expired = (
            current.status == MessageStatus.SENDING
            and current.lease_until is not None
            and current.lease_until < now
            and current.attempt == after_attempt + 1
        )
        waiting = current.status in LEASABLE_STATUSES and current.attempt == after_attempt
        if waiting:  # this job's next attempt
            update: dict[str, object] = {
                "status": MessageStatus.SENDING,
                "lease_until": lease_until,
                "attempt": current.attempt + 1,
                "takeovers": 0,
            }
        elif expired:  # a takeover of the same attempt, counted
            update = {"lease_until": lease_until, "takeovers": current.takeovers + 1}
        else:
            return None
        leased = current.model_copy(update=update)
        self.messages[key] = leased
        self._set_due(key, lease_until)
        return leased

    def transition(
        self,
        tenant_id: str,
        email_id: str,
        message_id: str,
        *,
        expected: Sequence[MessageStatus],
        attempt: int | None,
        change: Transition,
        now: datetime,
        lease_until: int | None = None,
    ) -> bool:
        key = (tenant_id, email_id, message_id)
        current = self.messages.get(key)
        if current is None or current.status not in expected:
            return False
        if attempt is not None and current.attempt != attempt:
            return False
        if lease_until is not None and current.lease_until != lease_until:
            return False
        update: dict[str, object] = {
            "status": change.status,
            "updated_at": now,
            "lease_until": None,
            "events": current.events + tuple(change.events),
        }
        if change.attempt is not None:
            update["attempts"] = (*current.attempts, change.attempt)
        if change.reply is not None:
            update["last_reply"] = change.reply
        if change.bounce_class is not None:
            update["bounce_class"] = change.bounce_class
        update["failure_reason"] = change.failure_reason
        update["next_attempt_at"] = change.next_attempt_at
        self.messages[key] = current.model_copy(update=update)
        self._set_due(key, due_time(change.status, at=now, next_attempt_at=change.next_attempt_at))
        return True

    def list_messages(self, tenant_id: str, *, status: MessageStatus | None, limit: int, cursor: str | None) -> Page:
        listing = tenant_id if status is None else f"{tenant_id}#{status.value}"
        candidates = sorted(
            (m for (t, _, _), m in self.messages.items() if t == tenant_id and (status is None or m.status == status)),
            key=created_key,
            reverse=True,
        )
        if cursor:
            after = _decode_cursor(cursor, listing)
            candidates = [m for m in candidates if created_key(m) < after]
        page = candidates[:limit]
        more = len(candidates) > limit
        return Page(messages=page, cursor=_encode_cursor(listing, created_key(page[-1])) if more else None)

    def find_due(self, shard: str, *, due_before: int, limit: int, cursor: str | None) -> DuePage:
        listing = f"due:{shard}"
        candidates = sorted(
            (due, key) for key, due in self.due.items() if resources.due_shard(key[2]) == shard and due <= due_before
        )
        rows = [f"{due:012d}#{key[2]}" for due, key in candidates]
        if cursor:
            after = _decode_cursor(cursor, listing)
            candidates = [c for c, row in zip(candidates, rows, strict=True) if row > after]
        page = candidates[:limit]
        found = []
        for due, key in page:
            message = self.messages[key]
            assert message.status not in FINAL_STATUSES  # the index holds non-final messages only
            found.append(
                DueMessage(
                    tenant_id=message.tenant_id,
                    email_id=message.email_id,
                    message_id=message.message_id,
                    status=message.status,
                    attempt=message.attempt,
                    pool=message.pool,
                    due_at=due,
                )
            )
        more = len(candidates) > limit
        last = f"{page[-1][0]:012d}#{page[-1][1][2]}" if page else ""
        return DuePage(messages=found, cursor=_encode_cursor(listing, last) if more else None)

    def claim_repair(self, message: DueMessage, *, now: int) -> bool:
        key = (message.tenant_id, message.email_id, message.message_id)
        current = self.messages.get(key)
        if current is None or self.due.get(key) != message.due_at:
            return False
        if current.status != message.status or current.attempt != message.attempt:
            return False
        self.due[key] = now
        return True


def _encode_cursor(listing: str, after: str) -> str:
    raw = json.dumps({"listing": listing, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, listing: str) -> str:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise InvalidRequest("cursor is not valid") from exc
    if not isinstance(raw, dict) or raw.get("listing") != listing or not isinstance(raw.get("after"), str):
        raise InvalidRequest("cursor does not belong to this listing")
    return str(raw["after"])
