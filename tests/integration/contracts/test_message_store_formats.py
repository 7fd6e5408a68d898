"""The DynamoDB message store's stored form (moto only: the fake has no stored form).

Items written before the compact form (full ids, ISO times, every reply three times, random message
ids found through `by_message_id`) keep working for every read and write; new items stay under 1 KB
after a first-try relay; the happy path costs at most 6 estimated write units (tests/integration/
write_units.py); a create that dies at any of its writes leaves nothing shown or due.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws

from local.provision import provision
from petrel import resources
from petrel.adapters import message_items as items
from petrel.adapters.dynamodb import DynamoMessageStore
from petrel.adapters.message_items import BODY_Z, BODY_ZD1
from petrel.ids import message_id
from petrel.models.records import Attempt, EmailRecord, Event, EventName, MessageRecord, MessageStatus, Reply
from petrel.ports import EmailKey, InvalidCursor, MessageKey, Transition, WriteConflict
from tests.fakes import records
from tests.fakes.clock import DEFAULT_START
from tests.integration.aws_env import clean_aws_environment
from tests.integration.write_units import WriteUnitMeter, item_size

pytestmark = pytest.mark.integration

T0 = int(DEFAULT_START.timestamp())
EXPIRES = T0 + 30 * 86400
SENT = Reply(code=250, enhanced="2.0.0", text="2.0.0 Ok: queued as 4dLq2X3Yz8z9vJ", stage="data")
TENANT = "tn_01KB0000000000000000000000"
_SER = TypeSerializer()


@dataclass
class Table:
    store: DynamoMessageStore
    client: Any
    name: str
    meter: WriteUnitMeter


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Table]:
    clean_aws_environment(monkeypatch)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        made = provision(
            client,
            boto3.client("sqs", region_name="us-east-1"),
            boto3.client("s3", region_name="us-east-1"),
            prefix="fmt",
            visibility_timeout=30,
            max_receive_count=3,
        )
        name = made.tables[resources.MESSAGES.name]
        peek = boto3.client("dynamodb", region_name="us-east-1")
        meter = WriteUnitMeter(client, peek, {name: resources.MESSAGES})
        yield Table(DynamoMessageStore(client, name), peek, name, meter)


def _put_legacy(table: Table, email: EmailRecord, messages: list[MessageRecord]) -> None:
    """The items as the store wrote them before the compact form."""
    email_item = email.model_dump(mode="json", exclude_none=True, exclude={"body_inline"})
    email_item.update(pk=resources.email_pk(email.tenant_id, email.email_id), sk=resources.EMAIL_SK)
    if email.body_inline is not None:
        email_item["body_inline"] = email.body_inline
    items = [email_item]
    for m in messages:
        item = m.model_dump(mode="json", exclude_none=True)
        item.update(
            pk=resources.email_pk(m.tenant_id, m.email_id),
            sk=resources.message_sk(m.message_id),
            created_key=resources.created_key(m.created_at, m.message_id),
            tenant_status=resources.tenant_status(m.tenant_id, m.status.value),
            expires_at=EXPIRES,
            due_shard=resources.due_shard(m.message_id),
            due_at=T0,
        )
        items.append(item)
    for item in items:
        table.client.put_item(TableName=table.name, Item={k: _SER.serialize(v) for k, v in item.items()})


def _raw_item(table: Table, message: MessageRecord) -> dict[str, Any]:
    key = {
        "pk": {"S": resources.email_pk(message.tenant_id, message.email_id)},
        "sk": {"S": resources.message_sk(message.message_id)},
    }
    item: dict[str, Any] = table.client.get_item(TableName=table.name, Key=key)["Item"]
    return item


def _relay(table: Table, message: MessageRecord) -> MessageRecord:
    key = MessageKey.of(message)
    leased = table.store.lease(key, after_attempt=0, now=T0, lease_until=T0 + 120)
    at = DEFAULT_START + timedelta(seconds=1)
    table.store.transition(
        key,
        expected=[MessageStatus.SENDING],
        attempt=leased.attempt,
        lease_until=T0 + 120,
        now=at,
        change=Transition(
            MessageStatus.RELAYED,
            events=(
                Event(type="email.sent", at=at, message_id=key.message_id, recipient=message.recipient, reply=SENT),
            ),
            attempt=Attempt(
                number=leased.attempt,
                started_at=DEFAULT_START,
                finished_at=at,
                server_id="srv_01KB0000000000000000000000",
                outcome="relayed",
                reply=SENT,
            ),
            reply=SENT,
        ),
    )
    relayed = table.store.get_message(key)
    assert relayed is not None
    return relayed


def test_legacy_items_are_read_found_listed_leased_relayed_and_reported(table: Table) -> None:
    email, messages = records.email(TENANT, ["a@example.org", "b@example.org"], legacy_ids=True)
    _put_legacy(table, email, messages)
    first = messages[0]

    found = table.store.get_email(EmailKey.of(email))
    assert found is not None and found[0] == email
    assert sorted(found[1], key=lambda m: m.message_id) == sorted(messages, key=lambda m: m.message_id)
    assert table.store.find_message_key(TENANT, first.message_id) == MessageKey.of(first)  # via the index
    assert table.store.find_message_key("tn_other", first.message_id) is None
    assert table.store.list_messages(TENANT, status=None, limit=10, cursor=None).messages == []
    assert table.store.backfill_listing() == 2  # the migration from by_tenant_v2 (petrel.resources)
    assert table.store.backfill_listing() == 0
    listed = table.store.list_messages(TENANT, status=None, limit=10, cursor=None).messages
    assert sorted(listed, key=lambda m: m.message_id) == sorted(messages, key=lambda m: m.message_id)

    relayed = _relay(table, first)  # new compact events and attempt appended to the old lists

    assert relayed.status is MessageStatus.RELAYED and relayed.last_reply == SENT
    assert [e.type for e in relayed.events] == [EventName.QUEUED, EventName.SENT]
    assert relayed.events[0] == first.events[0] and relayed.events[1].reply == SENT
    assert relayed.attempts[0].reply == SENT
    delivered = Event(
        type="email.delivered",
        at=DEFAULT_START + timedelta(minutes=1),
        message_id=first.message_id,
        recipient=first.recipient,
    )
    table.store.record_events(MessageKey.of(first), [delivered], now=DEFAULT_START + timedelta(minutes=1))
    table.store.record_events(MessageKey.of(first), [delivered], now=DEFAULT_START + timedelta(minutes=2))
    reported = table.store.get_message(MessageKey.of(first))
    assert reported is not None and reported.events[-1] == delivered and len(reported.events) == 3
    relayed_now = table.store.list_messages(TENANT, status=MessageStatus.RELAYED, limit=10, cursor=None)
    assert [m.message_id for m in relayed_now.messages] == [first.message_id]
    assert "tenant_status" not in _raw_item(table, first)  # a happy-path status leaves by_tenant_status


def test_a_new_item_stores_each_reply_once_stays_under_a_kilobyte_and_reads_back_whole(table: Table) -> None:
    email, [message] = records.email(TENANT)
    table.store.create_email(email, [message], EXPIRES)

    relayed = _relay(table, message)

    raw = _raw_item(table, message)
    assert str(raw).count(SENT.text) == 1
    assert item_size(raw) < 1024
    assert "message_id" not in raw and "email_id" not in raw  # in the key: sparse by_message_id
    assert relayed.last_reply == SENT and relayed.attempts[0].reply == SENT and relayed.events[-1].reply == SENT
    assert relayed.events[-1].message_id == message.message_id and relayed.events[-1].recipient == message.recipient
    assert relayed.created_at == message.created_at and relayed.updated_at == DEFAULT_START + timedelta(seconds=1)
    assert table.store.find_message_key(TENANT, message.message_id) == MessageKey.of(message)  # no index


def test_an_inline_body_is_compressed_when_that_is_smaller_and_read_back_as_is(table: Table) -> None:
    text = b"Subject: receipt\r\n\r\n" + b"Thank you for your order.\r\n" * 80
    email, messages = records.email(TENANT, body=text)
    table.store.create_email(email, messages, EXPIRES)
    noise = bytes(range(256)) * 2  # does not compress: stored as is
    other, other_messages = records.email(TENANT, body=noise)
    table.store.create_email(other, other_messages, EXPIRES)

    raw = table.client.get_item(
        TableName=table.name, Key={"pk": {"S": resources.email_pk(TENANT, email.email_id)}, "sk": {"S": "EMAIL"}}
    )["Item"]
    assert BODY_ZD1 in raw and "body_inline" not in raw and len(raw[BODY_ZD1]["B"]) < len(text) // 4
    assert table.store.get_email_record(EmailKey.of(email)) == email
    assert table.store.get_email_record(EmailKey.of(other)) == other


def test_an_email_item_of_the_form_before_is_read_back(table: Table) -> None:
    """The form before the preset dictionary: zlib alone under `body_z`, ISO creation time, recipients and
    Message-ID header in full, pool and tags always there."""
    body = b"Subject: receipt\r\n\r\n" + b"Thank you for your order.\r\n" * 40
    email, _ = records.email(TENANT, body=body)
    email = email.model_copy(update={"tags": {"campaign": "autumn"}})
    before = email.model_dump(mode="json", exclude_none=True, exclude={"tenant_id", "email_id", "body_inline"})
    before |= {
        "pk": resources.email_pk(TENANT, email.email_id),
        "sk": resources.EMAIL_SK,
        "expires_at": EXPIRES,
        BODY_Z: zlib.compress(body, 6),
    }
    table.client.put_item(TableName=table.name, Item={k: _SER.serialize(v) for k, v in before.items()})

    assert table.store.get_email_record(EmailKey.of(email)) == email


def test_a_password_reset_email_of_html_and_text_is_one_write_unit(table: Table) -> None:
    """A 1.7 KB password-reset email as Petrel builds it (text and HTML, quoted-printable): its item, body
    included, stays under 1 KB."""
    from petrel.ids import new_email_id
    from petrel.mail.mime import MessageContent, build_mime, header_message_id

    email_id = new_email_id(T0 * 1000)
    link = "https://app.example.io/account/reset?token=8f2a9c1e4b7d6f3a0c5e9b2d"
    text = (
        "Hi Ana,\n\nSomeone asked to reset the password of your account. If it was you, open this link"
        f" within 30 minutes:\n\n{link}\n\nIf it was not you, ignore this email; your password stays as it"
        " is. Questions? Reply to this email and a person will answer.\n\nThe Example team\n"
    )
    html = (
        '<html><body><div style="max-width:600px;margin:0 auto;font-family:Arial,sans-serif;color:#333333">'
        '<h1 style="font-size:20px">Reset your password</h1><p>Hi Ana,</p><p>Someone asked to reset the'
        " password of your account. If it was you, use the button below within 30 minutes.</p>"
        f'<p><a href="{link}" style="background:#1a73e8;color:#ffffff;padding:12px 20px;border-radius:4px;'
        'text-decoration:none">Reset password</a></p><p>If it was not you, ignore this email; your password'
        " stays as it is.</p><p>Questions? Reply to this email and a person will answer.</p>"
        '<p style="color:#888888;font-size:12px">Example Inc., 1 Harbour Street, Lyon</p></div></body></html>'
    )
    content = MessageContent(
        from_="Example <no-reply@app.example.io>",
        subject="Reset your password",
        to=["ana@example.org"],
        text=text,
        html=html,
    )
    body = build_mime(
        content, message_id=header_message_id(email_id, "app.example.io"), date=DEFAULT_START, email_id=email_id
    )
    assert len(body) > 1700
    email, messages = records.email(TENANT, ["ana@example.org"], body=body)
    email = email.model_copy(
        update={
            "email_id": email_id,
            "from_address": content.from_,
            "header_message_id": header_message_id(email_id, "app.example.io"),
            "subject": content.subject,
            "recipients": tuple(
                r.model_copy(update={"message_id": message_id(email_id, n)}) for n, r in enumerate(email.recipients, 1)
            ),
        }
    )
    messages = [m.model_copy(update={"email_id": email_id, "message_id": message_id(email_id, 1)}) for m in messages]
    table.store.create_email(email, messages, EXPIRES)

    raw = table.client.get_item(
        TableName=table.name, Key={"pk": {"S": resources.email_pk(TENANT, email_id)}, "sk": {"S": "EMAIL"}}
    )["Item"]
    assert item_size(raw) < 1024, item_size(raw)
    assert "header_message_id" not in raw and "pool" not in raw  # what the key and the From give back
    assert table.store.get_email_record(EmailKey.of(email)) == email


class Crash(BaseException):
    """The API function dying mid-request (not an Exception: nothing catches it)."""


class DiesAtWrite:
    """A DynamoDB client whose `n`-th write (PutItem or TransactWriteItems) dies instead of running."""

    WRITES = frozenset({"put_item", "transact_write_items"})

    def __init__(self, client: Any, n: int) -> None:
        self._client, self._n, self.writes = client, n, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in self.WRITES:
            return method

        def write(*args: Any, **kwargs: Any) -> Any:
            self.writes += 1
            if self.writes == self._n:
                raise Crash(name)
            return method(*args, **kwargs)

        return write


@pytest.mark.parametrize("recipients", [1, 2, 50])
def test_a_create_that_dies_at_any_write_leaves_nothing_shown_or_due(table: Table, recipients: int) -> None:
    """Nobody was answered 202 for an email whose create died: none of its messages may be shown,
    listed or found due by the sweeper (which would send them). Each write is killed in turn, until a
    create completes."""
    for n in range(1, 100):
        email, messages = records.email(TENANT, [f"r{i}@example.org" for i in range(recipients)])
        store = DynamoMessageStore(DiesAtWrite(table.client, n), table.name)
        try:
            store.create_email(email, messages, EXPIRES)
        except Crash:
            assert table.store.get_email(EmailKey.of(email)) is None, n
            listed = table.store.list_messages(TENANT, status=None, limit=100, cursor=None).messages
            assert not [m for m in listed if m.email_id == email.email_id], n
            for m in messages:
                due = table.store.find_due(
                    resources.due_shard(m.message_id), due_before=T0 + 10**6, limit=100, cursor=None
                )
                assert not [d for d in due.messages if d.email_id == email.email_id], (n, m.message_id)
            continue
        found = table.store.get_email(EmailKey.of(email))  # the first create not killed: complete
        assert found is not None and len(found[1]) == recipients
        # One recipient: one PutItem (its pending email item); several: one transaction.
        assert n == 1 + 1, f"{n - 1} writes for {recipients} recipient(s)"
        return
    pytest.fail("every create died")


@pytest.mark.parametrize(("recipients", "most_per_message"), [(1, 4), (10, 7)])
def test_write_units_of_a_first_try_relay(table: Table, recipients: int, most_per_message: int) -> None:
    email, messages = records.email(TENANT, [f"r{i}@example.org" for i in range(recipients)], body=b"x" * 3000)
    table.meter.reset()

    table.store.create_email(email, messages, EXPIRES)
    for message in messages:
        _relay(table, message)

    assert table.meter.units <= most_per_message * recipients
    # Several recipients are stored in one transaction (all or nothing), one without.
    assert table.meter.calls["TransactWriteItems"] == (recipients > 1)


def test_listing_a_status_without_an_index_examines_a_bounded_number_per_page(table: Table) -> None:
    stored: list[MessageRecord] = []
    for i in range(25):
        email, messages = records.email(TENANT, at=DEFAULT_START + timedelta(seconds=i))
        table.store.create_email(email, messages, EXPIRES)
        stored += messages
    newest_first = list(reversed(stored))
    _relay(table, newest_first[-1])  # the oldest: the only relayed one

    first = table.store.list_messages(TENANT, status=MessageStatus.RELAYED, limit=2, cursor=None)
    assert first.messages == [] and first.cursor is not None  # 20 examined, none relayed: go on
    second = table.store.list_messages(TENANT, status=MessageStatus.RELAYED, limit=2, cursor=first.cursor)
    assert [m.message_id for m in second.messages] == [newest_first[-1].message_id] and second.cursor is None


class _LaggingReads:
    """The store's DynamoDB client, whose eventually consistent GetItems miss an item as a read just
    after its write may (the replica it reads has not seen the write yet); every GetItem is recorded."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.lagging = True
        self.reads: list[bool] = []  # ConsistentRead of each GetItem

    def get_item(self, **kwargs: Any) -> Any:
        consistent = bool(kwargs.get("ConsistentRead"))
        self.reads.append(consistent)
        if self.lagging and not consistent:
            return {"ResponseMetadata": {"HTTPStatusCode": 200}}
        return self._client.get_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_an_email_record_is_read_eventually_consistent_and_again_consistently_when_that_missed_it(
    table: Table,
) -> None:
    email, messages = records.email("tn_a", ["to@example.org"])
    table.store.create_email(email, messages, EXPIRES)
    client = _LaggingReads(table.client)
    store = DynamoMessageStore(client, table.name)  # type: ignore[arg-type]

    assert store.get_email_record(EmailKey.of(email)) == email  # missed, then read consistently
    assert client.reads == [False, True]
    client.lagging, client.reads = False, []
    assert store.get_email_record(EmailKey.of(email)) == email  # half the read units: one read
    assert client.reads == [False]
    client.reads = []
    assert store.get_email_record(EmailKey("tn_a", "em_01KAAAAAAAAAAAAAAAAAAAAAAA")) is None
    assert client.reads == [False, True]  # not there: a consistent read says so


# -- an email of one queued message: one item until the message's first write ----------------------


def _partition(table: Table, email: EmailRecord) -> dict[str, dict[str, Any]]:
    """The items of the email's partition as stored, by sort key."""
    out = table.client.query(
        TableName=table.name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": resources.email_pk(email.tenant_id, email.email_id)}},
        ConsistentRead=True,
    )
    return {item["sk"]["S"]: item for item in out["Items"]}


def _listed(table: Table, email: EmailRecord) -> list[MessageRecord]:
    listed = table.store.list_messages(email.tenant_id, status=None, limit=100, cursor=None).messages
    return [m for m in listed if m.email_id == email.email_id]


def _cancel(store: DynamoMessageStore, message: MessageRecord, at: int) -> None:
    when_ = DEFAULT_START + timedelta(seconds=at)
    event = Event(type="email.cancelled", at=when_, message_id=message.message_id, recipient=message.recipient)
    store.transition(
        MessageKey.of(message),
        expected=[MessageStatus.QUEUED, MessageStatus.SCHEDULED, MessageStatus.DEFERRED],
        attempt=None,
        change=Transition(MessageStatus.CANCELLED, events=(event,)),
        now=when_,
    )


def test_an_email_of_one_queued_message_is_one_item_until_its_first_lease(table: Table) -> None:
    email, [message] = records.email(TENANT)
    key = MessageKey.of(message)
    table.meter.reset()
    table.store.create_email(email, [message], EXPIRES)

    assert list(_partition(table, email)) == ["EMAIL"] and table.meter.calls["PutItem"] == 1
    assert table.store.get_email(EmailKey.of(email)) == (email, [message])
    assert table.store.get_message(key) == message
    assert table.store.find_message_key(TENANT, message.message_id) == key
    assert _listed(table, email) == [message]

    leased = table.store.lease(key, after_attempt=0, now=T0, lease_until=T0 + 120)

    stored = _partition(table, email)
    assert sorted(stored) == ["EMAIL", resources.message_sk(message.message_id)]
    own = stored[resources.message_sk(message.message_id)]
    assert resources.LISTED_TENANT not in own and resources.LISTED_AT not in own  # the email item is the entry
    assert table.meter.calls["PutItem"] == 2 and table.meter.calls["UpdateItem"] == 0
    assert leased == message.model_copy(update={"status": MessageStatus.SENDING, "attempt": 1, "lease_until": T0 + 120})
    assert table.store.get_message(key) == leased and _listed(table, email) == [leased]
    relayed = _relay_leased(table, leased)
    assert _listed(table, email) == [relayed] and table.store.get_email(EmailKey.of(email)) == (email, [relayed])


def _relay_leased(table: Table, leased: MessageRecord) -> MessageRecord:
    at = DEFAULT_START + timedelta(seconds=1)
    table.store.transition(
        MessageKey.of(leased),
        expected=[MessageStatus.SENDING],
        attempt=leased.attempt,
        lease_until=leased.lease_until,
        now=at,
        change=Transition(MessageStatus.RELAYED, reply=SENT),
    )
    relayed = table.store.get_message(MessageKey.of(leased))
    assert relayed is not None and relayed.status is MessageStatus.RELAYED
    return relayed


def test_a_pending_message_leased_by_crashing_workers_is_taken_over_and_relayed_once(table: Table) -> None:
    """The same job received again and again, each worker dying after its lease: each takes the attempt
    over once the lease before it expired; a copy received while a lease is live loses."""
    email, [message] = records.email(TENANT)
    key = MessageKey.of(message)
    table.store.create_email(email, [message], EXPIRES)

    first = DynamoMessageStore(table.client, table.name).lease(key, after_attempt=0, now=T0, lease_until=T0 + 60)
    with pytest.raises(WriteConflict):  # a duplicate of the job while the first lease is live
        DynamoMessageStore(table.client, table.name).lease(key, after_attempt=0, now=T0 + 1, lease_until=T0 + 61)
    second = DynamoMessageStore(table.client, table.name).lease(key, after_attempt=0, now=T0 + 61, lease_until=T0 + 121)
    third = DynamoMessageStore(table.client, table.name).lease(key, after_attempt=0, now=T0 + 122, lease_until=T0 + 182)

    assert (first.attempt, second.attempt, third.attempt) == (1, 1, 1)
    assert (first.takeovers, second.takeovers, third.takeovers) == (0, 1, 2)
    with pytest.raises(WriteConflict):  # the dead worker's late record loses to the lease that took over
        _relay_leased(table, second)
    relayed = _relay_leased(table, third)
    assert relayed.attempt == 1 and _listed(table, email) == [relayed]
    assert len(_partition(table, email)) == 2  # the email item and one message item, whatever happened


@pytest.mark.parametrize("first", ["lease", "cancel", "claim", "events"])
def test_first_writes_of_a_pending_message_create_its_item_once_whoever_comes_first(table: Table, first: str) -> None:
    """Each first write (a lease, a cancel, the sweeper's claim, a report's events) made from the pending
    state, in turn first, then every other one: the message has one item, and each later write sees
    the state the earlier ones left (a lease after a cancel loses, a cancel after a lease loses)."""
    email, [message] = records.email(TENANT)
    key = MessageKey.of(message)
    table.store.create_email(email, [message], EXPIRES)
    [seen] = [
        m
        for m in table.store.find_due(
            resources.creation_shard(TENANT), due_before=T0 + 1, limit=100, cursor=None
        ).messages
        if m.message_id == message.message_id
    ]
    report = Event(type="email.delivered", at=DEFAULT_START, message_id=message.message_id, recipient=message.recipient)

    def lease() -> None:
        DynamoMessageStore(table.client, table.name).lease(key, after_attempt=0, now=T0, lease_until=T0 + 60)

    writes = {
        "lease": lease,
        "cancel": lambda: _cancel(DynamoMessageStore(table.client, table.name), message, 2),
        "claim": lambda: DynamoMessageStore(table.client, table.name).claim_repair(seen, now=T0 + 5),
        "events": lambda: DynamoMessageStore(table.client, table.name).record_events(key, [report], now=DEFAULT_START),
    }
    outcomes: dict[str, str] = {}
    for name in [first, *(n for n in writes if n != first)]:
        try:
            writes[name]()
            outcomes[name] = "ok"
        except WriteConflict:
            outcomes[name] = "conflict"

    assert len(_partition(table, email)) == 2
    assert outcomes[first] == "ok" and outcomes["events"] == "ok"
    assert {outcomes["lease"], outcomes["cancel"]} == {"ok", "conflict"}  # one of them, never both
    current = table.store.get_message(key)
    assert current is not None and _listed(table, email) == [current]
    assert current.status is (MessageStatus.SENDING if outcomes["lease"] == "ok" else MessageStatus.CANCELLED)
    assert report in current.events


@pytest.mark.parametrize("repeat", [1, 2])
def test_a_cancel_of_a_pending_message_dying_at_any_write_and_retried_ends_cancelled_once(
    table: Table, repeat: int
) -> None:
    """A cancel killed at each of its writes in turn (`repeat` times in a row at the same write), then
    retried as the API's caller would: the message ends cancelled, with one item and one event."""
    for n in range(1, 10):
        email, [message] = records.email(TENANT)
        table.store.create_email(email, [message], EXPIRES)
        died = 0
        for _ in range(repeat):
            try:
                _cancel(DynamoMessageStore(_DiesAtAnyWrite(table.client, n), table.name), message, 3)
            except Crash:
                died += 1
                continue
            break
        if died == 0:
            break
        current = table.store.get_message(MessageKey.of(message))
        if current is None or current.status is not MessageStatus.CANCELLED:
            _cancel(DynamoMessageStore(table.client, table.name), message, 3)
        current = table.store.get_message(MessageKey.of(message))
        assert current is not None and current.status is MessageStatus.CANCELLED, n
        assert [e.type for e in current.events] == [EventName.QUEUED, "email.cancelled"], n
        assert len(_partition(table, email)) == 2 and _listed(table, email) == [current], n
        with pytest.raises(WriteConflict):
            table.store.lease(MessageKey.of(message), after_attempt=0, now=T0, lease_until=T0 + 60)
    else:
        pytest.fail("every cancel died")
    assert n == 4, "a cancel of a pending message: its update (refused), the message item, the update again"


class _DiesAtAnyWrite(DiesAtWrite):
    WRITES = frozenset({"put_item", "update_item", "transact_write_items"})


def test_a_listing_of_pending_and_other_emails_pages_through_each_message_once(table: Table) -> None:
    made: list[MessageRecord] = []
    for i in range(7):
        people = [f"r{i}@example.org"] if i % 3 else [f"r{i}@example.org", f"s{i}@example.org"]
        email, messages = records.email(TENANT, people, at=DEFAULT_START + timedelta(seconds=i))
        table.store.create_email(email, messages, EXPIRES)
        made += messages
    table.store.lease(MessageKey.of(made[1]), after_attempt=0, now=T0, lease_until=T0 + 60)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = table.store.list_messages(TENANT, status=None, limit=2, cursor=cursor)
        seen += [m.message_id for m in page.messages]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(seen) == sorted(m.message_id for m in made) and len(seen) == len(made)
    queued = table.store.list_messages(TENANT, status=MessageStatus.QUEUED, limit=100, cursor=None).messages
    assert {m.message_id for m in queued} == {m.message_id for m in made} - {made[1].message_id}
    with pytest.raises(InvalidCursor):
        table.store.list_messages(TENANT, status=MessageStatus.QUEUED, limit=2, cursor=cursor or "e30")


def test_a_return_path_on_another_domain_is_kept_and_any_other_one_stores_the_message_item(table: Table) -> None:
    """The pending email item keeps a return-path domain that is not the From address's; a return path
    that is not VERP on the message's own id (or none) is stored as before, in a message item."""
    email, [message] = records.email(TENANT)
    bounces = message.model_copy(update={"return_path": f"bounces+{message.message_id}@bounces.example.com"})
    table.store.create_email(email, [bounces], EXPIRES)
    [only] = _partition(table, email).values()
    assert only[items.RETURN_PATH_DOMAIN] == {"S": "bounces.example.com"}
    assert table.store.get_message(MessageKey.of(bounces)) == bounces

    for odd in (f"other@{email.from_address.partition('@')[2]}", None):
        other, [other_message] = records.email(TENANT)
        other_message = other_message.model_copy(update={"return_path": odd})
        table.store.create_email(other, [other_message], EXPIRES)
        assert sorted(_partition(table, other)) == ["EMAIL", resources.message_sk(other_message.message_id)]
        assert table.store.get_email(EmailKey.of(other)) == (other, [other_message])
        assert _listed(table, other) == [other_message]
