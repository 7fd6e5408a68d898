"""A DynamoDB write-unit meter for tests: botocore hooks on a client, estimating what AWS would charge.

moto does not charge capacity, so the meter reads each written item before and after the write (with a
second, unhooked client) and applies DynamoDB's pricing rules: a write costs one unit per started KB
of the larger of the old and new item (twice inside a transaction), and each global secondary index
the write touches costs one unit per started KB of the projected item (two when its key changes: a
delete and a put; none when neither its keys nor its projected attributes change).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from petrel import resources

_KB = 1024
_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


def value_size(value: Mapping[str, Any]) -> int:
    """The stored size of one attribute value (DynamoDB's documented rules, rounded up)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        digits = len(str(Decimal(inner)).replace("-", "").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind == "B":
        return len(inner) if isinstance(inner, bytes) else len(str(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
    return sum(len(str(v).encode()) for v in inner)  # sets


def item_size(item: Mapping[str, Any] | None) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in (item or {}).items())


def _units(size: int) -> int:
    return max(1, math.ceil(size / _KB))


class WriteUnitMeter:
    """Counts estimated write units (`units`, and per operation in `by_operation`) of one client."""

    def __init__(self, client: Any, peek: Any, tables: Mapping[str, resources.TableSpec]) -> None:
        self.units = 0
        self.by_operation: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._peek = peek
        self._tables = tables
        self._pending: list[tuple[str, dict[str, Any], dict[str, Any] | None, int]] = []
        client.meta.events.register("before-parameter-build.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)

    def reset(self) -> None:
        self.units = 0
        self.by_operation.clear()
        self.calls.clear()

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] = self._peek.get_item(TableName=table, Key=key, ConsistentRead=True)
        return found.get("Item")

    def _key(self, table: str, item: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._tables[table]
        names = [spec.partition_key.name] + ([spec.sort_key.name] if spec.sort_key else [])
        return {n: item[n] for n in names}

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        self.calls[name] += 1
        self._pending = []
        if name not in _WRITES:
            return
        targets: list[tuple[str, dict[str, Any], int]] = []
        if name in ("PutItem",):
            targets.append((params["TableName"], self._key(params["TableName"], params["Item"]), 1))
        elif name in ("UpdateItem", "DeleteItem"):
            targets.append((params["TableName"], params["Key"], 1))
        elif name == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        targets.append((table, self._key(table, request["PutRequest"]["Item"]), 1))
                    else:
                        targets.append((table, request["DeleteRequest"]["Key"], 1))
        else:
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                if kind == "ConditionCheck":
                    continue
                key = body["Key"] if "Key" in body else self._key(body["TableName"], body["Item"])
                targets.append((body["TableName"], key, 2))
        self._pending = [(table, key, self._get(table, key), factor) for table, key, factor in targets]

    def _after(self, parsed: Mapping[str, Any], model: Any, **_: Any) -> None:
        if "Error" in parsed or not self._pending:
            self._pending = []
            return
        for table, key, old, factor in self._pending:
            new = self._get(table, key)
            units = factor * _units(max(item_size(old), item_size(new))) + self._index_units(table, old, new)
            self.units += units
            self.by_operation[model.name] += units
        self._pending = []

    def _index_units(self, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> int:
        spec = self._tables[table]
        units = 0
        for index in spec.indexes:
            keys = [index.partition_key.name] + ([index.sort_key.name] if index.sort_key else [])
            before, after = _projected(spec, index, old), _projected(spec, index, new)
            if before is None and after is None:
                continue
            if before is None or after is None:
                units += _units(item_size(before or after))
            elif any(before[k] != after[k] for k in keys):
                units += _units(item_size(before)) + _units(item_size(after))
            elif before != after:
                units += _units(item_size(after))
        return units


def _projected(
    spec: resources.TableSpec, index: resources.IndexSpec, item: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The item as `index` holds it, or None when the item is not in the index (a key is missing)."""
    keys = [index.partition_key.name] + ([index.sort_key.name] if index.sort_key else [])
    if item is None or not all(k in item for k in keys):
        return None
    if index.projection is None:
        return item
    table_keys = [spec.partition_key.name] + ([spec.sort_key.name] if spec.sort_key else [])
    names = {*keys, *table_keys, *index.projection}
    return {k: v for k, v in item.items() if k in names}
