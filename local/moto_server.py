"""moto's server, with DynamoDB transactions that cost what the transaction touches.

moto 5 backs up every table a TransactWriteItems names (a deep copy of the whole table) so it can
roll back; with thousands of messages stored, each accepted email then costs seconds and the local
stack slows down as it runs. Here the backup is of the items the transaction touches, and the
rollback puts exactly those back. The behaviour seen over the API is unchanged: all or nothing.

    python -m local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import copy
import sys
from types import ModuleType
from typing import Any

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.table import Table
from moto.server import main


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


def install() -> None:
    backend_class = dynamodb_models.DynamoDBBackend
    if getattr(backend_class, "_petrel_item_backups", False):
        return
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

    backend_class.transact_write_items = transact_write_items
    backend_class._petrel_item_backups = True


if __name__ == "__main__":
    install()
    sys.exit(main())
