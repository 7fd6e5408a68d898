"""The cost model's meter: every AWS request a boto3 session makes, and DynamoDB's units by AWS's rules.

Botocore hooks on a session's event system (`before-parameter-build`, `before-call`, `after-call`)
see each request. DynamoDB's write and read units are computed here, by AWS's published sizing and
capacity rules, not taken from moto's ConsumedCapacity (which does not count index writes and does
not size items as AWS does). A write is sized from the item before and after it, read from the same
moto through a client of a session without these hooks; its index writes come from each index's
entry before and after, with the projections of `petrel.resources`. Nothing here knows today's
layout of Petrel's items: whatever the code writes is what is measured.

CPU: `CpuWindows` also times, per thread, what is not the function's own work under an in-process
mock: moto answering a request (botocore's HTTP_REQUEST to HTTP_RESPONSE history records, where a
deployed function waits on the network) and the meter's own hooks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.history import BaseHistoryHandler

from petrel.resources import IndexSpec, TableSpec

Item = Mapping[str, Mapping[str, Any]]  # an item in DynamoDB's typed JSON: {"name": {"S": "value"}}

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
SQS_CHUNK_BYTES = 64 * 1024
_CONTEXT_KEY = "petrel_cost_meter"


# -- DynamoDB sizing (developer guide, "Item sizes and formats") -------------------------------------


def number_size(text: str) -> int:
    """(1 byte per two significant digits) + 1 byte, AWS's approximation: leading and trailing zeros
    do not count, nor the sign, the point or an exponent. `text` is DynamoDB's string form of it."""
    mantissa = text.strip().lower().split("e", 1)[0]
    digits = mantissa.lstrip("+-").replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def _binary_length(value: Any) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return len(str(value).encode())


def value_size(value: Mapping[str, Any]) -> int:
    """The size of one typed attribute value, without its name."""
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        return number_size(str(data))
    if kind == "B":
        return _binary_length(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(v).encode()) for v in data)
    if kind == "NS":
        return sum(number_size(str(v)) for v in data)
    if kind == "BS":
        return sum(_binary_length(v) for v in data)
    if kind == "L":  # 3 bytes for the list, 1 more per element
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":  # 3 bytes for the map, 1 more per element, and the elements' names
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Item | None) -> int:
    """UTF-8 lengths of the attribute names plus the sizes of their values (0: no item)."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(before: Item | None, after: Item | None) -> int:
    """One unit per started KB of the larger of the item before and after the write (at least 1)."""
    return max(1, math.ceil(max(item_size(before), item_size(after)) / WRITE_UNIT_BYTES))


def read_units(size: int, *, consistent: bool) -> float:
    """One unit per started 4 KB read strongly consistent (at least 1); eventually consistent, half."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def table_key_names(table: TableSpec) -> tuple[str, ...]:
    return tuple(k.name for k in (table.partition_key, table.sort_key) if k is not None)


def index_key_names(index: IndexSpec) -> tuple[str, ...]:
    return tuple(k.name for k in (index.partition_key, index.sort_key) if k is not None)


def index_entry(item: Item | None, index: IndexSpec, table: TableSpec) -> dict[str, Mapping[str, Any]] | None:
    """The item's entry in a global secondary index, or None when it lacks one of the index's keys
    (a sparse index holds only the items that have them). The entry holds the table's keys, the
    index's keys and the projected attributes: all (`projection` None, ALL), those named (INCLUDE),
    or none more (an empty tuple, KEYS_ONLY)."""
    if not item or any(name not in item for name in index_key_names(index)):
        return None
    if index.projection is None:
        return dict(item)
    names = (*table_key_names(table), *index_key_names(index), *index.projection)
    return {name: item[name] for name in names if name in item}


def index_write_units(before: Item | None, after: Item | None, index: IndexSpec, table: TableSpec) -> int:
    """What one table write costs in one index: a new entry (put) or a removed one (delete), a unit per
    started KB of it; a change of its keys, a delete and a put; a change of what it projects, an update
    of the larger entry; otherwise nothing."""
    old, new = index_entry(before, index, table), index_entry(after, index, table)

    def units(entry: Item | None) -> int:
        return max(1, math.ceil(item_size(entry) / WRITE_UNIT_BYTES))

    if old is None and new is None:
        return 0
    if old is None:
        return units(new)
    if new is None:
        return units(old)
    keys = index_key_names(index)
    if any(old[name] != new[name] for name in keys):
        return units(old) + units(new)
    if old != new:
        return max(units(old), units(new))
    return 0


def sqs_payload_size(entry: Mapping[str, Any]) -> int:
    """A message's billed payload: its body and its attributes' names, types and values."""
    size = len(str(entry.get("MessageBody", "")).encode())
    for name, attribute in (entry.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        if "StringValue" in attribute:
            size += len(str(attribute["StringValue"]).encode())
        if "BinaryValue" in attribute:
            size += _binary_length(attribute["BinaryValue"])
    return size


def sqs_chunks(size: int) -> int:
    """SQS bills each started 64 KB of a request's payload as one request."""
    return max(1, math.ceil(size / SQS_CHUNK_BYTES))


# -- what was measured ------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one side (one function, or the event source): requests by `service:Operation`,
    DynamoDB write and read units by where (table or table/index) and by step, SQS billed requests."""

    calls: Counter[str] = field(default_factory=Counter)
    wru: Counter[str] = field(default_factory=Counter)
    wru_steps: Counter[str] = field(default_factory=Counter)
    rru: dict[str, float] = field(default_factory=dict)
    sqs_requests: int = 0

    def add(self, other: Tally) -> None:
        self.calls.update(other.calls)
        self.wru.update(other.wru)
        self.wru_steps.update(other.wru_steps)
        _add_units(self.rru, other.rru)
        self.sqs_requests += other.sqs_requests

    @property
    def total_wru(self) -> float:
        return float(sum(self.wru.values()))

    @property
    def total_rru(self) -> float:
        return float(sum(self.rru.values()))

    def count(self, service: str, *operations: str) -> int:
        return sum(
            n
            for name, n in self.calls.items()
            if name.split(":", 1)[0] == service and (not operations or name.split(":", 1)[1] in operations)
        )


class CpuWindows(BaseHistoryHandler):
    """Per-thread CPU spent outside the function's own work: in moto (the history recorder's
    HTTP_REQUEST to HTTP_RESPONSE) and in the meter's hooks. `excluded` is the running total."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.excluded = 0.0

    def _add(self, seconds: float) -> None:
        with self._lock:
            self.excluded += seconds

    def emit(self, event_type: str, payload: Any, source: str) -> None:
        """botocore's history recorder calls this (registered by `install`)."""
        if getattr(self._local, "hook_depth", 0):
            return  # inside a hook: the hook's whole time is excluded already
        if event_type == "HTTP_REQUEST":
            self._local.started = time.thread_time()
        elif event_type == "HTTP_RESPONSE" and getattr(self._local, "started", None) is not None:
            self._add(time.thread_time() - self._local.started)
            self._local.started = None

    @contextmanager
    def hook(self) -> Iterator[None]:
        depth = getattr(self._local, "hook_depth", 0)
        self._local.hook_depth = depth + 1
        started = time.thread_time()
        try:
            yield
        finally:
            self._local.hook_depth = depth
            if depth == 0:
                self._add(time.thread_time() - started)

    def install(self) -> None:
        from botocore.history import get_global_history_recorder

        recorder = get_global_history_recorder()
        recorder.add_handler(self)
        recorder.enable()


class Meter:
    """Records the requests of the sessions it is attached to into `tally` (switch it between sides
    with `side`). `raw_dynamodb`: a client of a session without hooks, on the same mock, to read items
    before and after a write. `tables`: the deployed name of each table to its spec."""

    def __init__(self, raw_dynamodb: Any, tables: Mapping[str, TableSpec], cpu: CpuWindows) -> None:
        self._raw = raw_dynamodb
        self._tables = dict(tables)
        self._cpu = cpu
        self._lock = threading.Lock()
        self.tally = Tally()

    def bind_tables(self, tables: Mapping[str, TableSpec]) -> None:
        """The tables of a newly provisioned stack (deployed name to spec)."""
        self._tables = dict(tables)

    def attach(self, session: Any) -> None:
        """Hook `session` (a boto3 Session): clients it makes from now on are metered."""
        events = session.events
        events.register("before-parameter-build", self._before_params)
        events.register("before-call", self._before_call)
        events.register("after-call", self._after_call)

    @contextmanager
    def side(self, tally: Tally) -> Iterator[Tally]:
        """Count into `tally` inside the block."""
        previous, self.tally = self.tally, tally
        try:
            yield tally
        finally:
            self.tally = previous

    # -- hooks ------------------------------------------------------------------------------------

    def _before_params(self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        with self._cpu.hook():
            context[_CONTEXT_KEY] = {"params": dict(params), "before": None}

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        state = context.get(_CONTEXT_KEY)
        if state is None or model.service_model.service_name != "dynamodb":
            return
        with self._cpu.hook():
            state["before"] = self._images(model.name, state["params"])

    def _after_call(
        self, http_response: Any, parsed: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        state = context.get(_CONTEXT_KEY)
        if state is None:
            return
        with self._cpu.hook():
            service, operation = model.service_model.service_name, model.name
            ok = http_response is not None and http_response.status_code < 300
            error = "" if ok else str(parsed.get("Error", {}).get("Code", ""))
            tally = self.tally
            with self._lock:
                tally.calls[f"{service}:{operation}"] += 1
            if service == "dynamodb":
                self._dynamodb(tally, operation, state, parsed, ok=ok, error=error)
            elif service == "sqs":
                with self._lock:
                    tally.sqs_requests += self._sqs_requests(operation, state["params"], parsed)

    # -- DynamoDB ---------------------------------------------------------------------------------

    def _spec(self, table_name: str) -> TableSpec:
        """The table's spec; one `petrel.resources` does not name is described from moto instead."""
        if table_name not in self._tables:
            self._tables[table_name] = describe_table(self._raw, table_name)
        return self._tables[table_name]

    def _key(self, table_name: str, item: Item) -> dict[str, Mapping[str, Any]]:
        return {name: item[name] for name in table_key_names(self._spec(table_name))}

    def _get(self, table_name: str, key: Item) -> Item | None:
        got: Item | None = self._raw.get_item(TableName=table_name, Key=dict(key), ConsistentRead=True).get("Item")
        return got

    def _writes(self, operation: str, params: Mapping[str, Any]) -> list[tuple[str, str, str, Item, Item | None]]:
        """(table, kind, label, key, new item if a put) of each item a write operation touches."""
        if operation == "PutItem":
            return [
                (params["TableName"], "Put", "PutItem", self._key(params["TableName"], params["Item"]), params["Item"])
            ]
        if operation in ("UpdateItem", "DeleteItem"):
            kind = operation.removesuffix("Item")
            return [(params["TableName"], kind, operation, params["Key"], None)]
        writes: list[tuple[str, str, str, Item, Item | None]] = []
        if operation == "BatchWriteItem":
            for table_name, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        writes.append((table_name, "Put", "BatchWriteItem", self._key(table_name, item), item))
                    else:
                        writes.append((table_name, "Delete", "BatchWriteItem", request["DeleteRequest"]["Key"], None))
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                table_name = body["TableName"]
                key = self._key(table_name, body["Item"]) if kind == "Put" else body["Key"]
                writes.append((table_name, kind, "TransactWriteItems", key, body.get("Item")))
        return writes

    def _images(self, operation: str, params: Mapping[str, Any]) -> list[Item | None]:
        return [self._get(table, key) for table, _, _, key, _ in self._writes(operation, params)]

    def _dynamodb(
        self, tally: Tally, operation: str, state: dict[str, Any], parsed: Mapping[str, Any], *, ok: bool, error: str
    ) -> None:
        params = state["params"]
        if operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"):
            self._count_writes(tally, operation, params, state["before"] or [], ok=ok, error=error)
        elif ok:
            self._count_reads(tally, operation, params, parsed)

    def _count_writes(
        self,
        tally: Tally,
        operation: str,
        params: Mapping[str, Any],
        befores: Sequence[Item | None],
        *,
        ok: bool,
        error: str,
    ) -> None:
        charged = ok or error in ("ConditionalCheckFailedException", "TransactionCanceledException")
        if not charged:
            return  # refused before any write (validation, throttling): no units
        factor = 2 if operation == "TransactWriteItems" else 1
        for (table_name, kind, label, key, new), before in zip(self._writes(operation, params), befores, strict=True):
            spec = self._spec(table_name)
            if ok:
                after = (
                    None if kind == "Delete" else (self._get(table_name, key) if kind != "ConditionCheck" else before)
                )
            else:  # a failed condition: nothing changed, but the write is charged (at least its item's size)
                after = before if new is None else new
            units = factor * write_units(before, after)
            step = _step(label, kind, key, before, after if ok else before)
            counted: Counter[str] = Counter({spec.name: units})
            if ok and kind != "ConditionCheck":
                for index in spec.indexes:
                    index_units = index_write_units(before, after, index, spec)
                    if index_units:
                        counted[f"{spec.name}/{index.name}"] += index_units
            with self._lock:
                tally.wru.update(counted)
                tally.wru_steps[f"{spec.name}: {step}"] += sum(counted.values())

    def _table_of(self, table_name: str) -> str:
        return self._spec(table_name).name

    def _count_reads(self, tally: Tally, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> None:
        units: dict[str, float] = {}
        consistent = bool(params.get("ConsistentRead"))
        if operation == "GetItem":
            item = parsed.get("Item")
            if item is not None and "ProjectionExpression" in params:
                item = self._get(params["TableName"], params["Key"])  # charged for the whole item
            _add_units(units, {self._table_of(params["TableName"]): read_units(item_size(item), consistent=consistent)})
        elif operation in ("Query", "Scan"):
            where = self._table_of(params["TableName"])
            if params.get("IndexName"):
                where = f"{where}/{params['IndexName']}"
            _add_units(
                units, {where: read_units(self._evaluated_size(operation, params, parsed), consistent=consistent)}
            )
        elif operation == "BatchGetItem":
            for table_name, items in parsed.get("Responses", {}).items():
                strong = bool(params["RequestItems"].get(table_name, {}).get("ConsistentRead"))
                for item in items:  # each item rounded up on its own
                    _add_units(units, {self._table_of(table_name): read_units(item_size(item), consistent=strong)})
        elif operation == "TransactGetItems":
            for entry, response in zip(params["TransactItems"], parsed.get("Responses", []), strict=False):
                table_name = entry["Get"]["TableName"]
                size = item_size(response.get("Item"))
                _add_units(units, {self._table_of(table_name): 2 * read_units(size, consistent=True)})
        if units:
            with self._lock:
                _add_units(tally.rru, units)

    def _evaluated_size(self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> int:
        """What a Query or Scan is charged for: the items it read, before its filter and projection (the
        same page again, unhooked, with its key condition alone), else the items it returned."""
        narrowed = any(name in params for name in ("FilterExpression", "ProjectionExpression", "Select"))
        if not narrowed:
            return sum(item_size(i) for i in parsed.get("Items", []))
        kept = ("TableName", "IndexName", "Limit", "ExclusiveStartKey", "ScanIndexForward", "ConsistentRead")
        again: dict[str, Any] = {name: params[name] for name in kept if name in params}
        condition = str(params.get("KeyConditionExpression", ""))
        if condition:
            again["KeyConditionExpression"] = condition
            names = {k: v for k, v in (params.get("ExpressionAttributeNames") or {}).items() if k in condition}
            values = {k: v for k, v in (params.get("ExpressionAttributeValues") or {}).items() if k in condition}
            if names:
                again["ExpressionAttributeNames"] = names
            if values:
                again["ExpressionAttributeValues"] = values
        read = self._raw.query(**again) if operation == "Query" else self._raw.scan(**again)
        return sum(item_size(i) for i in read.get("Items", []))

    # -- SQS --------------------------------------------------------------------------------------

    @staticmethod
    def _sqs_requests(operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> int:
        if operation == "SendMessage":
            return sqs_chunks(sqs_payload_size(params))
        if operation == "SendMessageBatch":
            return sqs_chunks(sum(sqs_payload_size(entry) for entry in params.get("Entries", [])))
        if operation == "ReceiveMessage":
            received = parsed.get("Messages", [])
            size = sum(len(str(m.get("Body", "")).encode()) for m in received)
            return sqs_chunks(size)
        return 1


def describe_table(dynamodb: Any, table_name: str) -> TableSpec:
    """A table's keys and global secondary indexes (with their projections) as DynamoDB describes them."""
    from petrel.resources import Key

    described = dynamodb.describe_table(TableName=table_name)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in described.get("AttributeDefinitions", [])}

    def keys(schema: Sequence[Mapping[str, str]]) -> tuple[Key, Key | None]:
        by_role = {k["KeyType"]: Key(k["AttributeName"], types.get(k["AttributeName"], "S")) for k in schema}
        return by_role["HASH"], by_role.get("RANGE")

    def projection(index: Mapping[str, Any]) -> tuple[str, ...] | None:
        kind = index["Projection"]["ProjectionType"]
        return None if kind == "ALL" else tuple(index["Projection"].get("NonKeyAttributes", ()))

    indexes = tuple(
        IndexSpec(index["IndexName"], *keys(index["KeySchema"]), projection=projection(index))
        for index in described.get("GlobalSecondaryIndexes", [])
    )
    partition, sort = keys(described["KeySchema"])
    return TableSpec(table_name, "", partition, sort, indexes=indexes)


def _add_units(into: dict[str, float], more: Mapping[str, float]) -> None:
    for where, units in more.items():
        into[where] = into.get(where, 0.0) + units


def _step(label: str, kind: str, key: Item, before: Item | None, after: Item | None) -> str:
    """A write's step, from what it wrote: the operation, the item's kind (its sort key up to a `#`)
    and the change of its `status` attribute, if any (e.g. `UpdateItem MSG queued>sending`)."""
    kind_of_item = ""
    for value in list(key.values())[1:]:
        text = next(iter(value.values()))
        kind_of_item = str(text).split("#", 1)[0]
    old = _status(before)
    new = _status(after)
    change = f" {old or '-'}>{new or '-'}" if old != new else (f" {new}" if new else "")
    operation = label if label == kind or label.endswith(f"{kind}Item") else f"{label}.{kind}"
    return f"{operation} {kind_of_item}{change}".rstrip()


def _status(item: Item | None) -> str:
    if not item or "status" not in item:
        return ""
    return str(next(iter(item["status"].values())))
