"""The cost model's DynamoDB rules (bench.meter) on hand-built items, with answers worked out from AWS's
developer guide ("DynamoDB item sizes and formats": names and values, numbers a byte per two
significant digits plus one, List and Map 3 bytes plus 1 per element; "Read/write capacity units";
"Global secondary indexes: provisioned throughput considerations"), and its dollars (bench.cost) from
the one price table.

Invariants: an item's size is the sum of its names' UTF-8 lengths and its values' sizes; a write costs a
unit per started KB of the larger of the item before and after (at least 1); a read a unit per started
4 KB (at least 1), half eventually consistent; an index write is 0, 1 or 2 entry writes by how the
entry changed, never anything for an item outside a sparse index.
"""

from __future__ import annotations

import pytest

from bench import prices
from bench.cost import FunctionRun, Scenario, costs, receipt
from bench.meter import (
    Tally,
    index_entry,
    index_write_units,
    item_size,
    number_size,
    read_units,
    sqs_chunks,
    sqs_payload_size,
    value_size,
    write_units,
)
from petrel.resources import IndexSpec, Key, TableSpec

TABLE = TableSpec("things", "UNUSED", Key("pk"), Key("sk"))
SPARSE_ALL = IndexSpec("by_owner", Key("owner"), Key("created"))
INCLUDE = IndexSpec("by_state", Key("state"), Key("created"), projection=("colour",))
KEYS_ONLY = IndexSpec("by_ref", Key("ref"), projection=())


def s(text: str) -> dict[str, str]:
    return {"S": text}


def item(**attributes: str) -> dict[str, dict[str, str]]:
    return {"pk": s("p1"), "sk": s("s1"), **{name: s(value) for name, value in attributes.items()}}


def test_strings_and_names_count_utf8_bytes() -> None:
    assert item_size({"shirt-color": s("R")}) == 11 + 1
    assert item_size({"név": s("é")}) == 4 + 2  # two-byte characters count twice
    assert item_size(None) == 0


@pytest.mark.parametrize(
    ("number", "size"),
    [("1", 2), ("12", 2), ("123", 3), ("1000", 2), ("0.001", 2), ("-12", 2), ("12345.6789", 6), ("1.5E+10", 2)],
)
def test_numbers_are_about_half_their_significant_digits_plus_one(number: str, size: int) -> None:
    assert number_size(number) == size
    assert value_size({"N": number}) == size


def test_binary_booleans_null_and_sets() -> None:
    assert value_size({"B": b"\x00\x01\x02"}) == 3
    assert value_size({"BOOL": True}) == 1
    assert value_size({"NULL": True}) == 1
    assert value_size({"SS": ["ab", "c"]}) == 3
    assert value_size({"NS": ["1", "123"]}) == 2 + 3


def test_lists_and_maps_cost_three_bytes_and_one_per_element() -> None:
    assert value_size({"L": []}) == 3
    assert value_size({"M": {}}) == 3
    assert value_size({"L": [s("a"), s("bc")]}) == 3 + (1 + 1) + (1 + 2)
    assert value_size({"M": {"a": s("x"), "bb": {"N": "7"}}}) == 3 + (1 + 1 + 1) + (1 + 2 + 2)
    nested = {"M": {"l": {"L": [{"BOOL": False}]}}}
    assert value_size(nested) == 3 + (1 + 1 + (3 + 1 + 1))


def test_a_write_costs_a_unit_per_started_kb_of_the_larger_image() -> None:
    small = item(body="x" * 400)  # 2+2 + 2+2 + 4+400 = 412 bytes
    assert item_size(small) == 412
    assert write_units(None, small) == 1
    big = item(body="x" * (3 * 1024 + 512))  # 3.5 KB and a little: 4 units
    assert write_units(None, big) == 4
    assert write_units(big, small) == 4  # an update that shrinks it pays for the item before
    assert write_units(small, None) == 1  # a delete: the item's size
    assert write_units(None, None) == 1  # deleting nothing still costs one
    exactly = {"k": s("x" * 1023)}  # 1 + 1023 = 1024 bytes: one unit, one more byte: two
    assert write_units(None, exactly) == 1
    assert write_units(None, {"k": s("x" * 1024)}) == 2


def test_reads_count_started_4kb_and_eventually_consistent_halves() -> None:
    assert read_units(3584, consistent=True) == 1  # 3.5 KB
    assert read_units(3584, consistent=False) == 0.5
    assert read_units(0, consistent=True) == 1  # nothing found still costs the minimum
    assert read_units(8 * 1024 + 512, consistent=True) == 3
    assert read_units(8 * 1024 + 512, consistent=False) == 1.5


def test_an_index_entry_holds_the_keys_and_what_it_projects() -> None:
    full = item(owner="o", created="c", state="st", colour="red", size="L", ref="r")
    assert index_entry(full, SPARSE_ALL, TABLE) == full
    assert index_entry(full, INCLUDE, TABLE) == {
        "pk": s("p1"),
        "sk": s("s1"),
        "state": s("st"),
        "created": s("c"),
        "colour": s("red"),
    }
    assert index_entry(full, KEYS_ONLY, TABLE) == {"pk": s("p1"), "sk": s("s1"), "ref": s("r")}
    assert index_entry(item(owner="o"), SPARSE_ALL, TABLE) is None  # its sort key is missing: not indexed


def test_index_writes_put_delete_key_change_update_or_nothing() -> None:
    outside = item(colour="red")
    inside = item(state="queued", created="c1", colour="red")
    assert index_write_units(outside, outside, INCLUDE, TABLE) == 0  # never in the sparse index
    assert index_write_units(None, inside, INCLUDE, TABLE) == 1  # put
    assert index_write_units(inside, outside, INCLUDE, TABLE) == 1  # delete
    moved = item(state="sent", created="c1", colour="red")
    assert index_write_units(inside, moved, INCLUDE, TABLE) == 2  # key change: delete and put
    repainted = item(state="queued", created="c1", colour="blue")
    assert index_write_units(inside, repainted, INCLUDE, TABLE) == 1  # a projected attribute changed
    elsewhere = item(state="queued", created="c1", colour="red", note="not projected")
    assert index_write_units(inside, elsewhere, INCLUDE, TABLE) == 0
    keyed = item(ref="r", note="a")
    assert index_write_units(keyed, item(ref="r", note="b"), KEYS_ONLY, TABLE) == 0
    owned = item(owner="o", created="c", note="a")
    assert index_write_units(owned, item(owner="o", created="c", note="b"), SPARSE_ALL, TABLE) == 1


def test_index_writes_are_sized_by_the_entry() -> None:
    before = item(owner="o", created="c", body="x" * 1500)  # an entry of about 1.5 KB: 2 units
    after = item(owner="o2", created="c", body="x" * 1500)
    assert index_write_units(None, before, SPARSE_ALL, TABLE) == 2
    assert index_write_units(before, after, SPARSE_ALL, TABLE) == 2 + 2
    light = item(state="q", created="c", body="x" * 1500)  # only the keys go to an INCLUDE index
    assert index_write_units(None, light, INCLUDE, TABLE) == 1


def test_sqs_bills_each_started_64kb_of_payload() -> None:
    entry = {"MessageBody": "x" * 100, "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "job"}}}
    assert sqs_payload_size(entry) == 100 + 4 + 6 + 3
    assert sqs_chunks(0) == 1
    assert sqs_chunks(64 * 1024) == 1
    assert sqs_chunks(64 * 1024 + 1) == 2


def test_the_receipt_is_a_realistic_transactional_email() -> None:
    email = receipt(7)
    size = len(email["text"].encode()) + len(email["html"].encode())
    assert 2000 <= size <= 3500
    assert email["to"] == "customer7@example.com"


def test_dollars_per_million_come_from_the_price_table() -> None:
    """10 emails, 10 API calls: each line is its units per email times the price, times a million."""
    api = FunctionRun("api", 1024, cpu=[0.0105] * 10)  # 10.5 ms: billed 11 ms, 1 GB
    api.tally.wru["messages"] = 50  # 5 WRU per email
    api.tally.rru["tenants"] = 10
    api.tally.sqs_requests = 10
    api.tally.calls["secretsmanager:GetSecretValue"] = 1
    api.tally.calls["s3:PutObject"] = 2
    api.tally.calls["s3:GetObject"] = 5
    scenario = Scenario("t", 10, 10, {"api": api}, Tally(), {"api": 1000})
    got = costs(scenario, "arm64", sides=("api",)).lines
    assert got["API Gateway"] == pytest.approx(3.50)
    assert got["Lambda requests"] == pytest.approx(0.20)
    assert got["Lambda GB-s"] == pytest.approx(0.011 * prices.LAMBDA_GB_SECOND_ARM64.dollars * 1e6)
    assert got["DynamoDB writes"] == pytest.approx(5 * 0.625)
    assert got["DynamoDB reads"] == pytest.approx(0.125)
    assert got["SQS"] == pytest.approx(0.40)
    assert got["Secrets Manager"] == pytest.approx(0.1 * 0.05 / 10_000 * 1e6)
    assert got["S3"] == pytest.approx(0.2 * 5 + 0.5 * 0.4)
    logs = (1000 + 260 * 10) / 10  # captured lines plus Lambda's own per invocation
    assert got["CloudWatch Logs"] == pytest.approx(logs * 0.50 / 1024**3 * 1e6)
    x86 = costs(scenario, "x86_64", sides=("api",)).lines["Lambda GB-s"]
    assert x86 == pytest.approx(0.011 * prices.LAMBDA_GB_SECOND_X86.dollars * 1e6)


def test_a_cold_first_invocation_is_billed_as_a_warm_one() -> None:
    run = FunctionRun("send-worker", 512, cpu=[0.5, 0.002, 0.004, 0.003])
    assert run.warm_cpu() == [0.003, 0.002, 0.004, 0.003]
    assert run.billed_gb_seconds() == pytest.approx((0.003 + 0.002 + 0.004 + 0.003) / 2)
    assert FunctionRun("api", 1024, cpu=[0.25]).warm_cpu() == [0.25]  # nothing warm to compare with
