"""The cost model's meter (bench.meter) on real botocore requests against moto: each write's units from
the item before and after it (read unhooked from the same moto), transactions doubled, a failed
condition still charged, batch writes per item, index writes per entry change, reads per 4 KB, SQS
requests per 64 KB chunk. A hand-built table with one sparse INCLUDE index, so the answers are known.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from bench.meter import CpuWindows, Meter, Tally
from petrel.resources import IndexSpec, Key, TableSpec

INDEX = IndexSpec("by_state", Key("state"), Key("created"), projection=("colour",))
SPEC = TableSpec("things", "UNUSED", Key("pk"), Key("sk"), indexes=(INDEX,))
TABLE = "test-things"


def _session() -> Any:
    return boto3.session.Session(aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1")


@pytest.fixture
def metered() -> Iterator[tuple[Any, Meter]]:
    """A hooked session's DynamoDB client, and the meter counting it."""
    with mock_aws():
        raw = _session().client("dynamodb")
        raw.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "state", "created")],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": INDEX.name,
                    "KeySchema": [
                        {"AttributeName": "state", "KeyType": "HASH"},
                        {"AttributeName": "created", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["colour"]},
                }
            ],
        )
        meter = Meter(raw, {TABLE: SPEC}, CpuWindows())
        session = _session()
        meter.attach(session)
        yield session.client("dynamodb"), meter


def _item(sk: str, body_bytes: int = 10, **extra: str) -> dict[str, Any]:
    return {
        "pk": {"S": "p"},
        "sk": {"S": sk},
        "body": {"S": "x" * body_bytes},
        **{k: {"S": v} for k, v in extra.items()},
    }


def test_puts_updates_and_deletes_are_charged_with_their_index_writes(metered: tuple[Any, Meter]) -> None:
    db, meter = metered
    with meter.side(Tally()) as tally:
        db.put_item(TableName=TABLE, Item=_item("a", 1500, state="queued", created="1", colour="red"))
    assert tally.wru == {"things": 2, "things/by_state": 1}  # 1.5 KB item; a small INCLUDE entry

    with meter.side(Tally()) as tally:  # the index key changes: delete and put in the index
        db.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "p"}, "sk": {"S": "a"}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":s": {"S": "sent"}},
        )
    assert tally.wru == {"things": 2, "things/by_state": 2}

    with meter.side(Tally()) as tally:  # an attribute the index does not project: the table alone
        db.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "p"}, "sk": {"S": "a"}},
            UpdateExpression="SET note = :n",
            ExpressionAttributeValues={":n": {"S": "n"}},
        )
    assert tally.wru == {"things": 2}

    with meter.side(Tally()) as tally:
        db.delete_item(TableName=TABLE, Key={"pk": {"S": "p"}, "sk": {"S": "a"}})
    assert tally.wru == {"things": 2, "things/by_state": 1}
    assert tally.calls == {"dynamodb:DeleteItem": 1}


def test_a_failed_condition_is_charged_and_a_transaction_doubles(metered: tuple[Any, Meter]) -> None:
    db, meter = metered
    db.put_item(TableName=TABLE, Item=_item("a", 3000))
    with meter.side(Tally()) as tally, pytest.raises(ClientError):
        db.put_item(TableName=TABLE, Item=_item("a", 10), ConditionExpression="attribute_not_exists(pk)")
    assert tally.wru == {"things": 3}  # the larger of the item there (3 KB) and the one refused

    with meter.side(Tally()) as tally:
        db.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": _item("b", 1500, state="q", created="1")}},
                {"Put": {"TableName": TABLE, "Item": _item("c", 10)}},
            ]
        )
    assert tally.wru == {"things": 2 * 2 + 2 * 1, "things/by_state": 1}  # index writes are not doubled
    assert tally.wru_steps == {"things: TransactWriteItems.Put b": 5, "things: TransactWriteItems.Put c": 2}

    with meter.side(Tally()) as tally:
        db.batch_write_item(
            RequestItems={
                TABLE: [
                    {"PutRequest": {"Item": _item("d", 2500)}},
                    {"DeleteRequest": {"Key": {"pk": {"S": "p"}, "sk": {"S": "c"}}}},
                ]
            }
        )
    assert tally.wru == {"things": 3 + 1}


def test_reads_are_charged_per_4kb_and_halved_when_eventually_consistent(metered: tuple[Any, Meter]) -> None:
    db, meter = metered
    for sk in "abc":
        db.put_item(TableName=TABLE, Item=_item(sk, 3000, state="q", created=sk))
    key = {"pk": {"S": "p"}, "sk": {"S": "a"}}
    with meter.side(Tally()) as tally:
        db.get_item(TableName=TABLE, Key=key)
        db.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
        db.get_item(TableName=TABLE, Key=key, ProjectionExpression="pk")  # charged for the whole item
        db.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
        )  # 3 items of 3 KB: 9 KB together, 3 units, halved
        db.query(
            TableName=TABLE,
            IndexName=INDEX.name,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":s": {"S": "q"}},
        )  # small entries: the minimum
    assert tally.rru == {"things": 0.5 + 1 + 0.5 + 1.5, "things/by_state": 0.5}
    assert tally.calls == {"dynamodb:GetItem": 3, "dynamodb:Query": 2}
    assert tally.wru == {}


def test_sqs_requests_count_64kb_chunks() -> None:
    with mock_aws():
        meter = Meter(_session().client("dynamodb"), {}, CpuWindows())
        session = _session()
        meter.attach(session)
        sqs = session.client("sqs")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        with meter.side(Tally()) as tally:
            sqs.send_message(QueueUrl=url, MessageBody="x" * 100)
            entries = [{"Id": str(i), "MessageBody": "x" * 30_000} for i in range(5)]  # 150 KB: 3 chunks
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
        assert tally.sqs_requests == 1 + 3 + 1
        assert tally.count("sqs") == 3  # CreateQueue was made before the side: not in it


@pytest.mark.usefixtures("metered")
def test_a_table_petrel_resources_does_not_name_is_described_from_moto() -> None:
    """The meter measures whatever the code writes: an unknown table's keys and indexes come from moto."""
    meter = Meter(_session().client("dynamodb"), {}, CpuWindows())  # knows no table (the fixture's moto)
    session = _session()
    meter.attach(session)
    hooked = session.client("dynamodb")
    with meter.side(Tally()) as tally:
        hooked.put_item(TableName=TABLE, Item=_item("z", 10, state="q", created="1"))
    assert tally.wru == {TABLE: 1, f"{TABLE}/by_state": 1}


def test_a_filtered_or_projected_query_is_charged_for_what_it_read(metered: tuple[Any, Meter]) -> None:
    """DynamoDB charges a Query for the items it read, before its filter and projection."""
    db, meter = metered
    for sk in "abc":
        db.put_item(TableName=TABLE, Item=_item(sk, 3000, colour=sk))
    query = {
        "TableName": TABLE,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "p"}, ":c": {"S": "a"}},
        "ConsistentRead": True,
    }
    with meter.side(Tally()) as tally:
        got = db.query(**query, FilterExpression="colour = :c", ProjectionExpression="sk")
    assert len(got["Items"]) == 1
    assert tally.rru == {"things": 3.0}  # three items of 3 KB read: 9 KB, 3 units
    with meter.side(Tally()) as tally:
        db.query(**query, FilterExpression="colour = :c", Limit=1)  # one item read: 1 unit
    assert tally.rru == {"things": 1.0}
