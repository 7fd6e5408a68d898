"""moto's server, with two costs that grow with the data made constant again.

- DynamoDB: moto 5 backs up every table a TransactWriteItems names (a deep copy of the whole table)
  so it can roll back; with thousands of messages stored, each accepted email then costs seconds.
  Here the backup is of the items the transaction touches, and the rollback puts exactly those
  back. Over the API nothing changes: all or nothing.
- SQS: every send and receive looks at each message in the queue, and asks the time (through a
  slow datetime round trip) twice per message. Here the time is read from `time.time()` directly:
  the same value, a hundred times cheaper. And a receive checks each message's retention by asking
  for the queue's attributes, which counts the whole queue each time (a receive from a queue of n
  messages cost n^2): here the retention period is read from the queue itself.
- Every request: the server finds the service a request is for by listing moto's package directory
  (about 150 `stat` calls per request). Here that listing is made once.

    python -m local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import copy
import os
import threading
import time
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from moto import backends as moto_backends
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.table import Table
from moto.server import main
from moto.sqs import models as sqs_models


class _TablesByReference(ModuleType):
    """Stands in for `copy` inside moto's DynamoDB backend: a Table is not copied (its items are
    backed up one by one instead); everything else is copied as before."""

    def __init__(self) -> None:
        super().__init__("copy")

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _touched_keys(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    keys: list[tuple[str, dict[str, Any]]] = []
    for entry in transact_items:
        op_type, op = next(iter(entry.items()))
        name = op.get("TableName")
        if not name or name not in backend.tables:
            continue
        if op_type == "Put":
            table = backend.get_table(name)
            attrs = op.get("Item", {})
            key = {a: attrs[a] for a in (table.hash_key_attr, table.range_key_attr) if a and a in attrs}
        else:
            key = op.get("Key", {})
        keys.append((name, key))
    return keys


def _now_millis(dt: datetime | None = None) -> float:
    """moto's `unix_time_millis`: of `dt` (naive UTC, as moto keeps them) when given, else of now."""
    if dt is not None:
        return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp() * 1000
    return time.time() * 1000


def _within_retention(self: Any, queue_name: str, message: Any) -> bool:
    """moto's `is_message_valid_based_on_retention_period`, without counting the queue's messages."""
    retention = int(self.get_queue(queue_name).message_retention_period)
    return bool(retention + message.sent_timestamp / 1000 > time.time())


def install() -> None:
    backend_class = dynamodb_models.DynamoDBBackend
    if getattr(backend_class, "_petrel_item_backups", False):
        return
    sqs_models.unix_time_millis = _now_millis  # type: ignore[attr-defined]
    modules = tuple(moto_backends.list_of_moto_modules())
    moto_backends.list_of_moto_modules = lambda: modules
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = _within_retention  # type: ignore[method-assign]
    dynamodb_models.copy = _TablesByReference()  # type: ignore[attr-defined]
    original = backend_class.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for name, key in _touched_keys(self, transact_items):
            try:
                item = self.get_item(name, key)
            except Exception:
                continue
            saved.append((name, key, copy.deepcopy(item.to_json()["Attributes"]) if item else None))
        try:
            original(self, transact_items)
        except BaseException:
            for name, key, attrs in reversed(saved):
                if attrs is None:
                    self.delete_item(name, key)
                else:
                    self.put_item(name, attrs)
            raise

    backend_class.transact_write_items = transact_write_items  # type: ignore[method-assign]
    setattr(backend_class, "_petrel_item_backups", True)  # noqa: B010 - a marker moto's class does not declare


def exit_with_parent() -> None:
    """Stop when the process that started this server is gone (a killed test run leaves no server)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    install()
    exit_with_parent()
    main()
