"""local.moto_server: DynamoDB transactions back up only the items they touch, and still roll back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb import models as dynamodb_models

from local.moto_server import install
from tests.integration.aws_env import REGION, clean_aws_environment

pytestmark = pytest.mark.integration


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session) -> Iterator[Any]:
    clean_aws_environment(monkeypatch)
    install()
    with mock_aws():
        db = boto_session.client("dynamodb")
        db.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield db


def _put(pk: str, sk: str, value: str, condition: str | None = None) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": "t", "Item": {"pk": {"S": pk}, "sk": {"S": sk}, "v": {"S": value}}}
    if condition:
        put["ConditionExpression"] = condition
    return {"Put": put}


def _items(db: Any) -> dict[tuple[str, str], str]:
    return {(i["pk"]["S"], i["sk"]["S"]): i["v"]["S"] for i in db.scan(TableName="t")["Items"]}


def test_a_failed_transaction_leaves_every_item_as_it_was(table: Any) -> None:
    table.put_item(TableName="t", Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "v": {"S": "before"}})
    table.put_item(TableName="t", Item={"pk": {"S": "b"}, "sk": {"S": "1"}, "v": {"S": "exists"}})

    with pytest.raises(ClientError, match="TransactionCanceled"):
        table.transact_write_items(
            TransactItems=[
                _put("a", "1", "after"),  # an overwrite, to be undone
                _put("c", "1", "new"),  # a new item, to be removed
                _put("b", "1", "again", "attribute_not_exists(pk)"),  # fails
            ]
        )

    assert _items(table) == {("a", "1"): "before", ("b", "1"): "exists"}


def test_a_good_transaction_writes_everything(table: Any) -> None:
    table.transact_write_items(TransactItems=[_put("x", "1", "one"), _put("x", "2", "two", "attribute_not_exists(pk)")])

    assert _items(table) == {("x", "1"): "one", ("x", "2"): "two"}


def test_a_transaction_copies_no_table(table: Any) -> None:
    """moto backs up every table a transaction names by deep-copying it (seconds once a table holds
    thousands of items); after install() a table is taken by reference and only the touched items are
    backed up (the rollback tests above show that those suffice)."""
    for i in range(50):
        table.put_item(TableName="t", Item={"pk": {"S": f"e{i}"}, "sk": {"S": "EMAIL"}, "v": {"S": "e"}})
    backend = dynamodb_models.dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
    stored = backend.get_table("t")

    assert dynamodb_models.copy.deepcopy(stored) is stored
    assert dynamodb_models.copy.deepcopy({"t": [1]}) == {"t": [1]}  # anything else is still copied
    table.transact_write_items(TransactItems=[_put("x", "1", "one")])
    assert len(_items(table)) == 51
