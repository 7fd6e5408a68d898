"""In-memory MessageStore with the DynamoDB adapter's conditional-write and paging rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from petrel import resources
from petrel.models.due import creation_due_time, due_time
from petrel.models.records import (
    LEASABLE_STATUSES,
    EmailRecord,
    Event,
    MessageRecord,
    MessageStatus,
)
from petrel.ports import (
    AlreadyExists,
    DueMessage,
    DuePage,
    EmailKey,
    MessageKey,
    Page,
    RecordNotFound,
    Transition,
    WriteConflict,
)
from tests.fakes.cursors import decode_cursor, encode_cursor


def event_identity(event: Event) -> tuple[str, datetime, str | None]:
    """What makes two events the same one (the port's rule): type, time and detail."""
    return event.type.value, event.at, event.detail


def created_key(message: MessageRecord) -> str:
    return resources.created_key(message.created_at, message.message_id)


class FakeMessageStore:
    def __init__(self) -> None:
        self.emails: dict[EmailKey, EmailRecord] = {}
        self.messages: dict[MessageKey, MessageRecord] = {}
        self.expires_at: dict[EmailKey, int] = {}
        # The "due" index: message key -> due time. Written when a message waits (not at creation as
        # `queued`); a lease does not move it, a final status leaves it (the sweeper passes it).
        self.watermarks: dict[str, str] = {}
        self.due: dict[MessageKey, int] = {}

    def _set_due(self, key: MessageKey, due: int | None) -> None:
        if due is None:
            self.due.pop(key, None)
        else:
            self.due[key] = due

    def create_email(self, email: EmailRecord, messages: Sequence[MessageRecord], expires_at: int) -> None:
        key = EmailKey.of(email)
        if key in self.emails:
            raise AlreadyExists(f"email {email.email_id} exists")
        self.emails[key] = email
        self.expires_at[key] = expires_at
        for message in messages:
            self.messages[MessageKey.of(message)] = message
            due = creation_due_time(
                message.status, created_at=message.created_at, next_attempt_at=message.next_attempt_at
            )
            self._set_due(MessageKey.of(message), due)

    def get_email(self, key: EmailKey) -> tuple[EmailRecord, list[MessageRecord]] | None:
        email = self.emails.get(key)
        found = [m for k, m in self.messages.items() if k.email == key]
        if email is None or not found:  # an email stored without its messages is not shown
            return None
        return email, sorted(found, key=lambda m: m.message_id)

    def get_email_record(self, key: EmailKey) -> EmailRecord | None:
        return self.emails.get(key)

    def get_email_records(self, keys: Sequence[EmailKey]) -> dict[EmailKey, EmailRecord]:
        return {key: self.emails[key] for key in keys if key in self.emails}

    def find_message_key(self, tenant_id: str, message_id: str) -> MessageKey | None:
        found = [k for k in self.messages if (k.tenant_id, k.message_id) == (tenant_id, message_id)]
        return found[0] if found else None

    def get_message(self, key: MessageKey) -> MessageRecord | None:
        return self.messages.get(key)

    def _current(self, key: MessageKey) -> MessageRecord:
        current = self.messages.get(key)
        if current is None:
            raise RecordNotFound(f"no message {key.message_id}")
        return current

    def lease(self, key: MessageKey, *, after_attempt: int, now: int, lease_until: int) -> MessageRecord:
        current = self._current(key)
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
            raise WriteConflict(f"message {key.message_id} is not leasable by this job")
        leased = current.model_copy(update=update)
        self.messages[key] = leased  # the due time stays (the sweeper reads the lease from the message)
        return leased

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
        current = self._current(key)
        if (
            current.status not in expected
            or (attempt is not None and current.attempt != attempt)
            or (lease_until is not None and current.lease_until != lease_until)
        ):
            raise WriteConflict(f"message {key.message_id} is not as expected")
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
        due = due_time(change.status, at=now, next_attempt_at=change.next_attempt_at)
        if due is not None:  # a final status leaves the entry where it is
            self._set_due(key, due)

    def list_messages(self, tenant_id: str, *, status: MessageStatus | None, limit: int, cursor: str | None) -> Page:
        listing = tenant_id if status is None else resources.tenant_status(tenant_id, status.value)
        candidates = sorted(
            (m for k, m in self.messages.items() if k.tenant_id == tenant_id and status in (None, m.status)),
            key=created_key,
            reverse=True,
        )
        if cursor:
            after = decode_cursor(cursor, listing)
            candidates = [m for m in candidates if created_key(m) < after]
        page = candidates[:limit]
        more = len(candidates) > limit
        return Page(messages=page, cursor=encode_cursor(listing, created_key(page[-1])) if more else None)

    def _find_created(self, tenant_id: str, *, created_before: int, limit: int, cursor: str | None) -> DuePage:
        listing = f"created:{tenant_id}"
        bound = resources.created_key(datetime.fromtimestamp(created_before, UTC), "")
        candidates = sorted(
            (created_key(m), k) for k, m in self.messages.items() if k.tenant_id == tenant_id and created_key(m) < bound
        )
        if cursor:
            after = decode_cursor(cursor, listing)
            candidates = [c for c in candidates if c[0] > after]
        page = candidates[:limit]
        found = [
            DueMessage(
                tenant_id=key.tenant_id,
                email_id=key.email_id,
                message_id=key.message_id,
                status=self.messages[key].status,
                attempt=self.messages[key].attempt,
                pool=self.messages[key].pool,
                due_at=self.due.get(key),
                lease_until=self.messages[key].lease_until,
                position=encode_cursor(listing, row),
            )
            for row, key in page
        ]
        more = len(candidates) > limit
        return DuePage(messages=found, cursor=encode_cursor(listing, page[-1][0]) if more else None)

    def find_due(self, shard: str, *, due_before: int, limit: int, cursor: str | None) -> DuePage:
        tenant_id = resources.creation_shard_tenant(shard)
        if tenant_id is not None:
            return self._find_created(tenant_id, created_before=due_before, limit=limit, cursor=cursor)
        listing = f"due:{shard}"
        candidates = sorted(
            (due, key.message_id, key)
            for key, due in self.due.items()
            if resources.due_shard(key.message_id) == shard and due <= due_before
        )
        rows = [f"{due:012d}#{message_id}" for due, message_id, _ in candidates]
        if cursor:
            after = decode_cursor(cursor, listing)
            candidates = [c for c, row in zip(candidates, rows, strict=True) if row > after]
        page = candidates[:limit]
        found = []
        for due, message_id, key in page:
            message = self.messages[key]
            found.append(
                DueMessage(
                    tenant_id=message.tenant_id,
                    email_id=message.email_id,
                    message_id=message.message_id,
                    status=message.status,
                    attempt=message.attempt,
                    pool=message.pool,
                    due_at=due,
                    lease_until=message.lease_until,
                    position=encode_cursor(listing, f"{due:012d}#{message_id}"),
                )
            )
        more = len(candidates) > limit
        last = f"{page[-1][0]:012d}#{page[-1][1]}" if page else ""
        return DuePage(messages=found, cursor=encode_cursor(listing, last) if more else None)

    def due_watermark(self, shard: str) -> str | None:
        return self.watermarks.get(shard)

    def set_due_watermark(self, shard: str, position: str) -> None:
        tenant_id = resources.creation_shard_tenant(shard)
        listing = f"due:{shard}" if tenant_id is None else f"created:{tenant_id}"
        decode_cursor(position, listing)  # a position of this shard, or InvalidCursor
        self.watermarks[shard] = position

    def claim_repair(self, message: DueMessage, *, now: int) -> None:
        self.move_due(message, to=now)

    def move_due(self, message: DueMessage, *, to: int) -> None:
        key = message.key
        current = self._current(key)
        if (
            self.due.get(key) != message.due_at
            or current.status != message.status
            or current.attempt != message.attempt
        ):
            raise WriteConflict(f"message {key.message_id} moved on since it was seen")
        self.due[key] = to

    def adopt_due(self, message: DueMessage, *, to: int) -> None:
        key = message.key
        self._current(key)
        if key in self.due:
            raise WriteConflict(f"message {key.message_id} has a due time")
        self.due[key] = to

    def record_events(self, key: MessageKey, events: Sequence[Event], *, now: datetime) -> None:
        current = self._current(key)
        added = list(current.events)
        for event in events:
            if event_identity(event) not in {event_identity(e) for e in added}:  # a report applied twice: once
                added.append(event)
        if len(added) > len(current.events):  # nothing new: nothing written, as the adapter does
            self.messages[key] = current.model_copy(update={"events": tuple(added), "updated_at": now})
