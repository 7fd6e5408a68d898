"""MessageStore contract: all-or-nothing create, conditional lease and transition, paged listing."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from moto import mock_aws

from petrel import resources
from petrel.adapters.dynamodb import DynamoMessageStore
from petrel.models.records import Attempt, Event, EventName, MessageRecord, MessageStatus, Reply
from petrel.ports import (
    AlreadyExists,
    DueMessage,
    EmailKey,
    InvalidCursor,
    MessageKey,
    RecordNotFound,
    Transition,
    WriteConflict,
)
from tests.fakes import records
from tests.fakes.clock import DEFAULT_START
from tests.integration.aws_env import clean_aws_environment
from tests.integration.contracts.backends import Backend, moto_backend

T0 = int(DEFAULT_START.timestamp())
EXPIRES = T0 + 30 * 86400
SENT = Reply(code=250, enhanced="2.0.0", text="2.0.0 Ok: queued", stage="data")


def _stored(backend: Backend, tenant_id: str = "tn_a", **kwargs: object) -> tuple[str, list[MessageRecord]]:
    email, messages = records.email(tenant_id, **kwargs)  # type: ignore[arg-type]
    backend.messages.create_email(email, messages, EXPIRES)
    return email.email_id, messages


def _relayed(message: MessageRecord, attempt: int) -> Transition:
    at = DEFAULT_START + timedelta(seconds=5)
    return Transition(
        MessageStatus.RELAYED,
        events=(
            Event(type="email.sent", at=at, message_id=message.message_id, recipient=message.recipient, reply=SENT),
        ),
        attempt=Attempt(number=attempt, started_at=DEFAULT_START, finished_at=at, server_id="srv_x", outcome="relayed"),
        reply=SENT,
    )


def test_create_and_read_back(backend: Backend) -> None:
    email, messages = records.email("tn_a", ["a@example.org", ("b@example.org", "cc"), ("c@example.org", "bcc")])
    backend.messages.create_email(email, messages, EXPIRES)

    found = backend.messages.get_email(EmailKey("tn_a", email.email_id))
    assert found is not None
    stored_email, stored_messages = found
    assert stored_email == email
    assert stored_email.body_inline == b"Subject: hi\r\n\r\nhello\r\n"
    assert sorted(stored_messages, key=lambda m: m.message_id) == sorted(messages, key=lambda m: m.message_id)
    assert backend.messages.get_email_record(EmailKey("tn_a", email.email_id)) == email
    assert backend.messages.get_message(MessageKey.of(messages[1])) == messages[1]


def test_email_with_body_in_blob_store_keeps_only_the_key(backend: Backend) -> None:
    email_id, _ = _stored(backend, body_key="bodies/tn_a/x.eml")

    found = backend.messages.get_email_record(EmailKey("tn_a", email_id))
    assert found is not None and found.body_inline is None and found.body_key == "bodies/tn_a/x.eml"


def test_missing_email_and_message(backend: Backend) -> None:
    email_id, _ = _stored(backend)

    assert backend.messages.get_email(EmailKey("tn_a", "em_01KAAAAAAAAAAAAAAAAAAAAAAA")) is None
    assert backend.messages.get_email_record(EmailKey("tn_a", "em_01KAAAAAAAAAAAAAAAAAAAAAAA")) is None
    assert backend.messages.get_message(MessageKey("tn_a", email_id, "msg_01KAAAAAAAAAAAAAAAAAAAAAAA")) is None


def test_email_records_are_read_together_and_only_those_found_come_back(backend: Backend) -> None:
    first, second = records.email("tn_a"), records.email("tn_a", body_key="bodies/tn_a/x.eml")
    for email, messages in (first, second):
        backend.messages.create_email(email, messages, EXPIRES)
    keys = [
        EmailKey("tn_a", first[0].email_id),
        EmailKey("tn_a", "em_01KAAAAAAAAAAAAAAAAAAAAAAA"),  # none by that id
        EmailKey("tn_b", first[0].email_id),  # another tenant's key for it
        EmailKey("tn_a", second[0].email_id),
        EmailKey("tn_a", first[0].email_id),  # asked twice: read once, answered once
    ]

    found = backend.messages.get_email_records(keys)

    assert found == {keys[0]: first[0], keys[3]: second[0]}
    assert backend.messages.get_email_records([]) == {}


def test_creating_the_same_email_twice_fails(backend: Backend) -> None:
    email, messages = records.email("tn_a")
    backend.messages.create_email(email, messages, EXPIRES)

    changed = messages[0].model_copy(update={"status": MessageStatus.CANCELLED})
    with pytest.raises(AlreadyExists):
        backend.messages.create_email(email, [changed], EXPIRES)
    assert backend.messages.get_message(MessageKey.of(messages[0])) == messages[0]  # nothing was written


def test_another_tenants_email_is_invisible(backend: Backend) -> None:
    email_id, (message,) = _stored(backend, "tn_a")

    assert backend.messages.get_email(EmailKey("tn_b", email_id)) is None
    assert backend.messages.get_email_record(EmailKey("tn_b", email_id)) is None
    assert backend.messages.get_message(MessageKey("tn_b", email_id, message.message_id)) is None
    with pytest.raises(RecordNotFound):
        backend.messages.lease(
            MessageKey("tn_b", email_id, message.message_id), after_attempt=0, now=T0, lease_until=T0 + 60
        )
    with pytest.raises(RecordNotFound):
        backend.messages.transition(
            MessageKey("tn_b", email_id, message.message_id),
            expected=[MessageStatus.QUEUED],
            attempt=None,
            change=Transition(MessageStatus.CANCELLED),
            now=DEFAULT_START,
        )
    assert backend.messages.list_messages("tn_b", status=None, limit=10, cursor=None).messages == []
    assert backend.messages.get_message(MessageKey.of(message)) == message


def test_lease_a_queued_message(backend: Backend) -> None:
    _, (message,) = _stored(backend)

    leased = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    assert leased.status == MessageStatus.SENDING and leased.attempt == 1 and leased.lease_until == T0 + 120
    assert backend.messages.get_message(MessageKey.of(message)) == leased


def test_a_live_lease_is_not_taken(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0 + 60, lease_until=T0 + 180)
    # a lease is live up to and including its last second
    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0 + 120, lease_until=T0 + 240)
    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None and current.attempt == 1 and current.lease_until == T0 + 120


def test_an_expired_lease_is_taken_over_at_the_same_attempt_and_counted(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    first = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    again = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0 + 121, lease_until=T0 + 241)

    assert first.takeovers == 0
    assert again.status == MessageStatus.SENDING
    assert again.attempt == 1 and again.lease_until == T0 + 241 and again.takeovers == 1
    assert backend.messages.get_message(MessageKey.of(message)) == again


def test_any_number_of_takeovers_of_the_same_job(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 10)

    for n in range(1, 7):  # six workers in a row die holding attempt 1
        now = T0 + 11 * n
        taken = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=now, lease_until=now + 10)
        assert (taken.attempt, taken.takeovers, taken.lease_until) == (1, n, now + 10)
        # while that lease lives, neither the same job nor another attempt's takes it
        with pytest.raises(WriteConflict):
            backend.messages.lease(MessageKey.of(message), after_attempt=0, now=now + 10, lease_until=0)
    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=1, now=T0 + 999, lease_until=0)


def test_the_next_attempts_lease_starts_its_takeovers_afresh(backend: Backend) -> None:
    email_id, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 10)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0 + 11, lease_until=T0 + 21)
    _defer(backend, email_id, message, 1, T0 + 60)

    leased = backend.messages.lease(MessageKey.of(message), after_attempt=1, now=T0 + 60, lease_until=T0 + 180)

    assert leased.attempt == 2 and leased.takeovers == 0


def test_a_transition_under_a_lease_that_was_taken_over_is_refused(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0 + 121, lease_until=T0 + 241)

    def record(lease_until: int) -> None:
        backend.messages.transition(
            MessageKey.of(message),
            expected=[MessageStatus.SENDING],
            attempt=1,
            change=_relayed(message, 1),
            now=DEFAULT_START,
            lease_until=lease_until,
        )

    with pytest.raises(WriteConflict):
        record(T0 + 120)  # the worker that lost its lease
    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None and current.status == MessageStatus.SENDING and current.attempts == ()
    record(T0 + 241)  # the one that holds it
    done = backend.messages.get_message(MessageKey.of(message))
    assert done is not None and done.status == MessageStatus.RELAYED and done.lease_until is None


def test_reopening_a_failed_message_drops_its_failure_reason(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    failed = Transition(MessageStatus.FAILED, failure_reason="worker-error")
    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.QUEUED],
        attempt=0,
        change=failed,
        now=DEFAULT_START,
    )

    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.FAILED],
        attempt=0,
        change=Transition(MessageStatus.QUEUED),
        now=DEFAULT_START,
    )

    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None
    assert current.status == MessageStatus.QUEUED and current.failure_reason is None and current.attempt == 0
    leased = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 9)
    assert leased.attempt == 1


def test_a_deferred_message_is_leasable(backend: Backend) -> None:
    _, (message,) = _stored(backend, status=MessageStatus.DEFERRED)

    leased = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    assert leased.attempt == 1


@pytest.mark.parametrize(
    "status",
    [MessageStatus.RELAYED, MessageStatus.BOUNCED, MessageStatus.FAILED, MessageStatus.CANCELLED],
)
def test_a_finished_message_is_not_leasable(backend: Backend, status: MessageStatus) -> None:
    _, (message,) = _stored(backend, status=status)

    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)
    assert backend.messages.get_message(MessageKey.of(message)) == message


def test_an_unknown_message_is_not_leasable(backend: Backend) -> None:
    email_id, _ = _stored(backend)

    with pytest.raises(RecordNotFound):
        backend.messages.lease(
            MessageKey("tn_a", email_id, "msg_01KAAAAAAAAAAAAAAAAAAAAAAA"), after_attempt=0, now=T0, lease_until=T0
        )
    with pytest.raises(RecordNotFound):
        backend.messages.transition(
            MessageKey("tn_a", email_id, "msg_01KAAAAAAAAAAAAAAAAAAAAAAA"),
            expected=[MessageStatus.QUEUED],
            attempt=None,
            change=Transition(MessageStatus.CANCELLED),
            now=DEFAULT_START,
        )
    assert backend.messages.get_message(MessageKey("tn_a", email_id, "msg_01KAAAAAAAAAAAAAAAAAAAAAAA")) is None


def test_transition_records_outcome_events_and_attempt(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)
    change = _relayed(message, attempt=1)
    later = DEFAULT_START + timedelta(seconds=5)

    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=1,
        change=change,
        now=later,
    )

    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None
    assert current.status == MessageStatus.RELAYED
    assert current.attempt == 1 and current.lease_until is None
    assert current.updated_at == later
    assert current.last_reply == SENT
    assert [e.type for e in current.events] == ["email.queued", "email.sent"]
    assert current.events[1] == change.events[0]
    assert current.attempts == (change.attempt,)


def test_transition_appends_to_earlier_events_and_attempts(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    soft = Reply(code=451, enhanced="4.3.0", text="4.3.0 try later", stage="rcpt")
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)
    first = Transition(
        MessageStatus.DEFERRED,
        events=(
            Event(type="email.deferred", at=DEFAULT_START, message_id=message.message_id, recipient="x", reply=soft),
        ),
        attempt=Attempt(number=1, started_at=DEFAULT_START, outcome="softfail", reply=soft),
        reply=soft,
    )
    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=1,
        change=first,
        now=DEFAULT_START,
    )
    backend.messages.lease(MessageKey.of(message), after_attempt=1, now=T0 + 60, lease_until=T0 + 180)
    bounced = Transition(
        MessageStatus.BOUNCED,
        events=(Event(type="email.bounced", at=DEFAULT_START, message_id=message.message_id, recipient="x"),),
        attempt=Attempt(number=2, started_at=DEFAULT_START, outcome="hardfail"),
        bounce_class="hard",
    )
    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=2,
        change=bounced,
        now=DEFAULT_START,
    )

    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None
    assert [e.type for e in current.events] == ["email.queued", "email.deferred", "email.bounced"]
    assert [a.number for a in current.attempts] == [1, 2]
    assert current.bounce_class == "hard"
    assert current.last_reply == soft  # a transition without a reply keeps the last one


def test_transition_with_the_wrong_attempt_is_refused(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    with pytest.raises(WriteConflict):
        backend.messages.transition(
            MessageKey.of(message),
            expected=[MessageStatus.SENDING],
            attempt=0,
            change=_relayed(message, 0),
            now=DEFAULT_START,
        )

    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None and current.status == MessageStatus.SENDING and current.attempt == 1
    assert [e.type for e in current.events] == ["email.queued"] and current.attempts == ()


def test_transition_from_an_unexpected_status_is_refused(backend: Backend) -> None:
    _, (message,) = _stored(backend, status=MessageStatus.RELAYED)

    with pytest.raises(WriteConflict):
        backend.messages.transition(
            MessageKey.of(message),
            expected=[MessageStatus.QUEUED, MessageStatus.DEFERRED],
            attempt=None,
            change=Transition(MessageStatus.CANCELLED),
            now=DEFAULT_START,
        )

    assert backend.messages.get_message(MessageKey.of(message)) == message


def test_transition_without_attempt_check(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    failed = Transition(
        MessageStatus.FAILED,
        events=(Event(type="email.failed", at=DEFAULT_START, message_id=message.message_id, recipient="x"),),
        failure_reason="enqueue-failed",
    )

    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.QUEUED],
        attempt=None,
        change=failed,
        now=DEFAULT_START,
    )
    current = backend.messages.get_message(MessageKey.of(message))
    assert current is not None
    assert current.status == MessageStatus.FAILED and current.failure_reason == "enqueue-failed"
    assert current.attempts == () and current.last_reply is None


def _three_emails(backend: Backend, tenant_id: str = "tn_a") -> list[MessageRecord]:
    """Five messages over three emails a minute apart, returned newest first (the listing order)."""
    made: list[MessageRecord] = []
    for minute, recipients in ((0, ["a@x.org", "b@x.org"]), (1, ["c@x.org"]), (2, ["d@x.org", "e@x.org"])):
        _, messages = _stored(backend, tenant_id, recipients=recipients, at=DEFAULT_START + timedelta(minutes=minute))
        made += messages
    return sorted(made, key=lambda m: (m.created_at, m.message_id), reverse=True)


def _all_pages(backend: Backend, tenant_id: str, status: MessageStatus | None, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = backend.messages.list_messages(tenant_id, status=status, limit=limit, cursor=cursor)
        pages.append([m.message_id for m in page.messages])
        if page.cursor is None:
            return pages
        cursor = page.cursor
        assert len(pages) < 10, "paging does not end"


def test_list_newest_first_in_pages(backend: Backend) -> None:
    expected = [m.message_id for m in _three_emails(backend)]
    _three_emails(backend, "tn_b")  # another tenant's mail never shows

    pages = _all_pages(backend, "tn_a", None, limit=2)

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [m for page in pages for m in page] == expected


def test_list_by_status(backend: Backend) -> None:
    newest_first = _three_emails(backend)
    relayed = [newest_first[0], newest_first[2], newest_first[4]]
    for message in relayed:
        backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 60)
        backend.messages.transition(
            MessageKey.of(message),
            expected=[MessageStatus.SENDING],
            attempt=1,
            change=_relayed(message, 1),
            now=DEFAULT_START,
        )

    pages = _all_pages(backend, "tn_a", MessageStatus.RELAYED, limit=2)
    assert [m for page in pages for m in page] == [m.message_id for m in relayed]
    first = backend.messages.list_messages("tn_a", status=MessageStatus.RELAYED, limit=10, cursor=None)
    assert all(m.status == MessageStatus.RELAYED for m in first.messages)
    assert first.cursor is None

    queued = backend.messages.list_messages("tn_a", status=MessageStatus.QUEUED, limit=10, cursor=None)
    assert [m.message_id for m in queued.messages] == [newest_first[1].message_id, newest_first[3].message_id]
    assert backend.messages.list_messages("tn_a", status=MessageStatus.BOUNCED, limit=10, cursor=None).messages == []


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "%%%",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"tenant_id": "tn_a"}).encode()).decode(),
    ],
)
def test_a_garbled_cursor_is_rejected(backend: Backend, cursor: str) -> None:
    _three_emails(backend)

    with pytest.raises(InvalidCursor):
        backend.messages.list_messages("tn_a", status=None, limit=2, cursor=cursor)


def test_a_cursor_from_another_listing_is_rejected(backend: Backend) -> None:
    _three_emails(backend)
    _three_emails(backend, "tn_b")
    foreign = backend.messages.list_messages("tn_b", status=None, limit=2, cursor=None).cursor
    queued = backend.messages.list_messages("tn_a", status=MessageStatus.QUEUED, limit=2, cursor=None).cursor
    assert foreign is not None and queued is not None

    with pytest.raises(InvalidCursor):
        backend.messages.list_messages("tn_a", status=None, limit=2, cursor=foreign)
    with pytest.raises(InvalidCursor):
        backend.messages.list_messages("tn_a", status=None, limit=2, cursor=queued)


def _defer(backend: Backend, email_id: str, message: MessageRecord, attempt: int, due: int) -> None:
    when = DEFAULT_START + timedelta(seconds=due - T0)
    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=attempt,
        change=Transition(MessageStatus.DEFERRED, next_attempt_at=when),
        now=DEFAULT_START,
    )


def test_a_lease_is_only_for_the_job_of_the_current_attempt(backend: Backend) -> None:
    email_id, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)
    _defer(backend, email_id, message, 1, T0 + 60)

    deferred = backend.messages.get_message(MessageKey.of(message))
    assert deferred is not None and deferred.next_attempt_at == DEFAULT_START + timedelta(seconds=60)
    # The first job, redelivered, does not take the message ahead of its retry.
    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 9)
    # Nor does a job from the future.
    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=2, now=T0, lease_until=T0 + 9)
    leased = backend.messages.lease(MessageKey.of(message), after_attempt=1, now=T0 + 60, lease_until=T0 + 180)
    assert leased.attempt == 2 and leased.status == MessageStatus.SENDING

    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=2,
        change=_relayed(message, 2),
        now=DEFAULT_START,
    )
    done = backend.messages.get_message(MessageKey.of(message))
    assert done is not None and done.next_attempt_at is None  # cleared by a transition without one


def test_an_expired_lease_is_taken_only_by_the_job_of_that_attempt(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    with pytest.raises(WriteConflict):
        backend.messages.lease(MessageKey.of(message), after_attempt=1, now=T0 + 500, lease_until=T0 + 600)
    again = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0 + 500, lease_until=T0 + 600)
    assert again.attempt == 1 and again.takeovers == 1


def test_a_scheduled_message_is_leasable_by_its_release_job(backend: Backend) -> None:
    _, (message,) = _stored(backend, status=MessageStatus.SCHEDULED)

    leased = backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 60)

    assert leased.attempt == 1


# -- the sweeper's shards: the "due" index (petrel.resources.DUE_INDEX) for messages that wait, and
# each tenant's creation shard (its messages in creation order) for those queued at their creation.


def _due(backend: Backend, message: MessageRecord, before: int) -> list[DueMessage]:
    page = backend.messages.find_due(resources.due_shard(message.message_id), due_before=before, limit=100, cursor=None)
    return [m for m in page.messages if m.message_id == message.message_id]


def _created(backend: Backend, message: MessageRecord, before: int) -> list[DueMessage]:
    shard = resources.creation_shard(message.tenant_id)
    page = backend.messages.find_due(shard, due_before=before, limit=100, cursor=None)
    return [m for m in page.messages if m.message_id == message.message_id]


def test_a_queued_message_has_no_due_entry_and_is_in_its_tenants_creation_shard(backend: Backend) -> None:
    email_id, (message,) = _stored(backend)

    assert _due(backend, message, T0 + 10**9) == []  # no index write for the sweeper at creation
    assert _created(backend, message, T0) == []  # created at T0: not before it
    [found] = _created(backend, message, T0 + 1)
    assert found.position  # where it is in its shard: what the sweeper's watermark records
    assert replace(found, position="") == DueMessage(
        "tn_a", email_id, message.message_id, MessageStatus.QUEUED, 0, "transactional", None
    )
    other = backend.messages.find_due(resources.creation_shard("tn_b"), due_before=T0 + 1, limit=100, cursor=None)
    assert other.messages == []  # another tenant's shard


def test_a_scheduled_message_is_due_at_its_send_time(backend: Backend) -> None:
    email, messages = records.email("tn_a", pool="bulk", status=MessageStatus.SCHEDULED)
    send_at = DEFAULT_START + timedelta(days=3)
    scheduled = [m.model_copy(update={"send_at": send_at, "next_attempt_at": send_at}) for m in messages]
    backend.messages.create_email(email, scheduled, EXPIRES)
    due = int(send_at.timestamp())

    assert _due(backend, scheduled[0], due - 1) == []
    [found] = _due(backend, scheduled[0], due)
    assert (found.status, found.due_at, found.pool) == (MessageStatus.SCHEDULED, due, "bulk")
    [created] = _created(backend, scheduled[0], T0 + 1)  # its creation shard shows its due time
    assert (created.status, created.due_at) == (MessageStatus.SCHEDULED, due)


def test_a_lease_writes_no_due_entry_and_move_due_gives_one_at_the_lease_end(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    [sending] = _created(backend, message, T0 + 1)  # the lease writes no index
    assert _due(backend, message, T0 + 10**9) == []
    assert (sending.status, sending.attempt, sending.due_at, sending.lease_until) == (
        MessageStatus.SENDING,
        1,
        None,
        T0 + 120,
    )
    backend.messages.move_due(sending, to=T0 + 120)
    with pytest.raises(WriteConflict):  # the same sighting again: it has a due time now
        backend.messages.move_due(sending, to=T0 + 120)
    assert _due(backend, message, T0 + 119) == []
    [later] = _due(backend, message, T0 + 120)
    assert later.due_at == T0 + 120 and later.lease_until == T0 + 120
    [created] = _created(backend, message, T0 + 1)
    assert created.due_at == T0 + 120  # the creation shard's sweeper passes it from now on
    backend.messages.move_due(later, to=T0 + 240)  # a later look moves it again
    assert [m.due_at for m in _due(backend, message, T0 + 10**9)] == [T0 + 240]

    retry = DEFAULT_START + timedelta(minutes=5)
    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.SENDING],
        attempt=1,
        change=Transition(MessageStatus.DEFERRED, next_attempt_at=retry),
        now=DEFAULT_START + timedelta(seconds=3),
    )
    [deferred] = _due(backend, message, T0 + 300)
    assert (deferred.status, deferred.attempt, deferred.due_at) == (MessageStatus.DEFERRED, 1, T0 + 300)


@pytest.mark.parametrize("final", [MessageStatus.RELAYED, MessageStatus.FAILED, MessageStatus.CANCELLED])
def test_a_final_status_leaves_the_due_entry_for_the_sweeper_to_pass(backend: Backend, final: MessageStatus) -> None:
    _, (message,) = _stored(backend)
    [seen] = _created(backend, message, T0 + 1000)
    backend.messages.claim_repair(seen, now=T0 + 1000)  # a repair gave it a due entry

    backend.messages.transition(
        MessageKey.of(message),
        expected=[MessageStatus.QUEUED],
        attempt=None,
        change=Transition(final),
        now=DEFAULT_START + timedelta(seconds=30),
    )

    [entry] = _due(backend, message, T0 + 10**9)  # no index write: the entry stays where it was
    assert (entry.status, entry.due_at) == (final, T0 + 1000)
    [created] = _created(backend, message, T0 + 10**9)
    assert (created.status, created.due_at) == (final, T0 + 1000)


def _filled(backend: Backend, kind: str) -> tuple[str, str, list[MessageRecord]]:
    """40 messages of tn_a, a second apart: queued (found in the creation shard) or scheduled (in the due
    index); a shard that holds at least two of them, another shard of the same kind, and what the
    shard holds, in its order."""
    every: list[MessageRecord] = []
    for i in range(40):
        at = DEFAULT_START + timedelta(seconds=i)
        if kind == "creation":
            email, messages = records.email("tn_a", at=at)
        else:
            email, messages = records.email("tn_a", at=at, status=MessageStatus.SCHEDULED)
            messages = [m.model_copy(update={"send_at": at, "next_attempt_at": at}) for m in messages]
        backend.messages.create_email(email, messages, EXPIRES)
        every += messages
    if kind == "creation":
        return resources.creation_shard("tn_a"), resources.creation_shard("tn_b"), every
    shard = max(resources.due_shards(), key=lambda s: sum(resources.due_shard(m.message_id) == s for m in every))
    other = next(s for s in resources.due_shards() if s != shard)
    return shard, other, [m for m in every if resources.due_shard(m.message_id) == shard]


@pytest.mark.parametrize("kind", ["due", "creation"])
def test_the_watermark_of_a_shard_is_a_position_that_find_due_goes_on_after(backend: Backend, kind: str) -> None:
    shard, other, stored = _filled(backend, kind)
    assert len(stored) >= 2 and backend.messages.due_watermark(shard) is None
    first = backend.messages.find_due(shard, due_before=T0 + 10**9, limit=1, cursor=None).messages[0]

    backend.messages.set_due_watermark(shard, first.position)

    assert backend.messages.due_watermark(shard) == first.position
    rest = backend.messages.find_due(shard, due_before=T0 + 10**9, limit=100, cursor=first.position)
    assert [m.message_id for m in rest.messages] == [m.message_id for m in stored[1:]]
    assert backend.messages.due_watermark(other) is None
    with pytest.raises(InvalidCursor):  # a position of another shard
        backend.messages.set_due_watermark(other, first.position)
    mixed = resources.due_shards()[0] if kind == "creation" else resources.creation_shard("tn_a")
    with pytest.raises(InvalidCursor):  # nor one of the other kind
        backend.messages.set_due_watermark(mixed, first.position)


def test_a_message_created_final_is_never_due(backend: Backend) -> None:
    _, (message,) = _stored(backend, status=MessageStatus.SUPPRESSED)

    assert _due(backend, message, T0 + 10**9) == []
    [created] = _created(backend, message, T0 + 10**9)  # its creation shard's sweeper passes it
    assert (created.status, created.due_at) == (MessageStatus.SUPPRESSED, None)


def test_claim_repair_wins_once_and_gives_a_due_time(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    [seen] = _created(backend, message, T0 + 1000)

    backend.messages.claim_repair(seen, now=T0 + 1000)
    with pytest.raises(WriteConflict):  # a second sweeper, same sighting
        backend.messages.claim_repair(seen, now=T0 + 1001)
    assert _due(backend, message, T0 + 999) == []
    [moved] = _due(backend, message, T0 + 1000)
    assert moved.due_at == T0 + 1000 and moved.status is MessageStatus.QUEUED
    backend.messages.claim_repair(moved, now=T0 + 2000)  # repaired again, a grace later
    with pytest.raises(WriteConflict):
        backend.messages.claim_repair(moved, now=T0 + 2001)
    assert [m.due_at for m in _due(backend, message, T0 + 10**9)] == [T0 + 2000]
    current = backend.messages.get_message(MessageKey.of(message))
    assert current == message  # nothing else changed


def test_adopt_due_gives_a_due_time_only_to_a_message_that_has_none(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    [seen] = _created(backend, message, T0 + 1000)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    backend.messages.adopt_due(seen, to=T0 + 1000)  # whatever its state since it was seen
    with pytest.raises(WriteConflict):
        backend.messages.adopt_due(seen, to=T0 + 2000)
    [entry] = _due(backend, message, T0 + 10**9)
    assert (entry.status, entry.due_at) == (MessageStatus.SENDING, T0 + 1000)
    gone = replace(seen, email_id="em_01KAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(RecordNotFound):
        backend.messages.adopt_due(gone, to=T0)


def test_claim_repair_loses_to_a_message_that_moved_on(backend: Backend) -> None:
    _, (message,) = _stored(backend)
    [seen] = _created(backend, message, T0 + 1000)
    backend.messages.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 120)

    with pytest.raises(WriteConflict):
        backend.messages.claim_repair(seen, now=T0 + 1000)
    assert _due(backend, message, T0 + 10**9) == []  # and it wrote nothing


@pytest.mark.parametrize("kind", ["due", "creation"])
def test_find_due_pages_through_a_shard_earliest_first(backend: Backend, kind: str) -> None:
    shard, _, stored = _filled(backend, kind)

    seen: list[DueMessage] = []
    cursor: str | None = None
    while True:
        page = backend.messages.find_due(shard, due_before=T0 + 10**9, limit=2, cursor=cursor)
        seen += page.messages
        cursor = page.cursor
        if cursor is None:
            break
    assert [m.message_id for m in seen] == [m.message_id for m in stored]
    if kind == "due":
        assert [m.due_at for m in seen] == sorted(m.due_at or 0 for m in seen)
    before = backend.messages.find_due(shard, due_before=T0 + 10, limit=100, cursor=None).messages
    cut = DEFAULT_START + timedelta(seconds=10)  # created (creation shard) or due (scheduled at creation)
    assert {m.message_id for m in before} == {
        m.message_id for m in stored if (m.created_at < cut if kind == "creation" else m.created_at <= cut)
    }


@pytest.mark.parametrize("kind", ["due", "creation"])
def test_a_due_cursor_of_another_shard_is_refused(backend: Backend, kind: str) -> None:
    first, second, _ = _filled(backend, kind)
    cursor = backend.messages.find_due(first, due_before=T0 + 10**9, limit=1, cursor=None).cursor
    assert cursor is not None

    with pytest.raises(InvalidCursor):
        backend.messages.find_due(second, due_before=T0 + 10**9, limit=1, cursor=cursor)
    with pytest.raises(InvalidCursor):
        backend.messages.find_due(first, due_before=T0 + 10**9, limit=1, cursor="%%%")


def _report_event(message: MessageRecord, name: EventName, seconds: int, detail: str | None = None) -> Event:
    return Event(
        type=name,
        at=DEFAULT_START + timedelta(seconds=seconds),
        message_id=message.message_id,
        recipient=message.recipient,
        detail=detail,
    )


def _relayed_message(backend: Backend) -> MessageRecord:
    _, (message,) = _stored(backend)
    key = MessageKey.of(message)
    backend.messages.lease(key, after_attempt=0, now=T0, lease_until=T0 + 60)
    backend.messages.transition(
        key, expected=[MessageStatus.SENDING], attempt=1, change=_relayed(message, 1), now=DEFAULT_START
    )
    relayed = backend.messages.get_message(key)
    assert relayed is not None and relayed.status == MessageStatus.RELAYED
    return relayed


def test_recorded_events_join_the_timeline_and_leave_the_status(backend: Backend) -> None:
    relayed = _relayed_message(backend)
    key = MessageKey.of(relayed)
    late = DEFAULT_START + timedelta(minutes=5)
    delayed = _report_event(relayed, EventName.DEFERRED, 120, "4.4.7 delayed at mx.example.org")
    replied = _report_event(relayed, EventName.REPLIED, 240, "in_01")

    backend.messages.record_events(key, [delayed, replied], now=late)

    after = backend.messages.get_message(key)
    assert after == relayed.model_copy(update={"events": (*relayed.events, delayed, replied), "updated_at": late})


def test_recording_the_same_events_again_changes_nothing(backend: Backend) -> None:
    """A delivery report ingested twice (a redelivered job, a mailbox read twice) is on the timeline once."""
    relayed = _relayed_message(backend)
    key = MessageKey.of(relayed)
    complained = _report_event(relayed, EventName.COMPLAINED, 300, "abuse")
    backend.messages.record_events(key, [complained], now=DEFAULT_START + timedelta(minutes=6))
    once = backend.messages.get_message(key)
    assert once is not None and once.events[-1] == complained

    backend.messages.record_events(key, [complained], now=DEFAULT_START + timedelta(minutes=7))
    assert backend.messages.get_message(key) == once

    # Only what is new is added: the same event again, one of another time, one of another detail.
    later = _report_event(relayed, EventName.COMPLAINED, 301, "abuse")
    other = _report_event(relayed, EventName.COMPLAINED, 300, "fraud")
    now = DEFAULT_START + timedelta(minutes=8)
    backend.messages.record_events(key, [complained, later, other, later], now=now)
    assert backend.messages.get_message(key) == once.model_copy(
        update={"events": (*once.events, later, other), "updated_at": now}
    )


def test_recording_events_keeps_a_waiting_message_on_its_way(backend: Backend) -> None:
    """A reply to a message that is still queued: its lease, attempt and due time are untouched."""
    _, (message,) = _stored(backend)
    key = MessageKey.of(message)
    [before] = _created(backend, message, T0 + 1000)
    event = _report_event(message, EventName.AUTO_REPLIED, 30, "out of office")

    backend.messages.record_events(key, [event], now=DEFAULT_START + timedelta(seconds=31))

    assert _created(backend, message, T0 + 1000) == [before]
    assert _due(backend, message, T0 + 10**9) == []
    leased = backend.messages.lease(key, after_attempt=0, now=T0, lease_until=T0 + 60)
    assert leased.status == MessageStatus.SENDING and leased.attempt == 1
    assert leased.events == (*message.events, event)


def test_recording_events_on_a_missing_message_fails(backend: Backend) -> None:
    _, (message,) = _stored(backend, "tn_a")
    event = _report_event(message, EventName.DELIVERED, 10)

    with pytest.raises(RecordNotFound):
        backend.messages.record_events(
            MessageKey("tn_b", message.email_id, message.message_id), [event], now=DEFAULT_START
        )
    with pytest.raises(RecordNotFound):
        backend.messages.record_events(
            MessageKey("tn_a", message.email_id, "msg_01KAAAAAAAAAAAAAAAAAAAAAAA"), [event], now=DEFAULT_START
        )
    assert backend.messages.get_message(MessageKey.of(message)) == message


class _RacedClient:
    """A DynamoDB client whose next UpdateItem lets another writer go first: what happens when two
    ingest workers apply reports to one message at the same moment."""

    def __init__(self, client: Any, before_update: Callable[[], None]) -> None:
        self._client = client
        self._before_update: Callable[[], None] | None = before_update

    def update_item(self, **kwargs: Any) -> Any:
        if self._before_update is not None:
            run, self._before_update = self._before_update, None
            run()
        return self._client.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.integration
@pytest.mark.parametrize("same_event", [False, True], ids=["another-event", "the-same-event"])
def test_events_recorded_by_two_writers_at_once_are_each_there_once(
    aws_clients: dict[str, Any], monkeypatch: pytest.MonkeyPatch, same_event: bool
) -> None:
    """The other writer appends between this one's read and its write: this write must not lose the
    other's event nor add its own twice."""
    clean_aws_environment(monkeypatch)
    with mock_aws():
        backend = moto_backend(aws_clients)
        relayed = _relayed_message(backend)
        key = MessageKey.of(relayed)
        mine = _report_event(relayed, EventName.DELIVERED, 60, "2.0.0 delivered")
        theirs = mine if same_event else _report_event(relayed, EventName.REPLIED, 61, "in_02")
        now = DEFAULT_START + timedelta(minutes=3)

        def other_writer() -> None:
            backend.messages.record_events(key, [theirs], now=now)

        racing = DynamoMessageStore(
            _RacedClient(aws_clients["dynamodb"], other_writer),  # type: ignore[arg-type]
            resources.physical_name("petrel-test", resources.MESSAGES.name),
        )
        racing.record_events(key, [mine], now=now)

        after = backend.messages.get_message(key)
    expected = (*relayed.events, theirs) if same_event else (*relayed.events, theirs, mine)
    assert after == relayed.model_copy(update={"events": expected, "updated_at": now})
