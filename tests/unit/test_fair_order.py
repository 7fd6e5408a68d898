"""The local queue pump's fair-queue ordering: round-robin by MessageGroupId within what it received.

Invariants: the order is a permutation of what was received (nothing lost, nothing twice); each group's
messages keep their received order; in each round every group with messages left gives one; a group with
fewer messages in flight comes first; a message without a group is a group of its own.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from local.lambda_runtime import QueuePump, fair_order, message_group


def _message(group: str | None, n: int) -> dict[str, Any]:
    attributes = {"MessageGroupId": group} if group else {}
    return {"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": f"{group}:{n}", "Attributes": attributes}


def _ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["MessageId"] for m in messages]


def test_groups_are_interleaved_in_the_order_first_seen() -> None:
    received = [_message("a", 0), _message("a", 1), _message("a", 2), _message("b", 3), _message("c", 4)]
    received += [_message("b", 5), _message("a", 6)]

    assert _ids(fair_order(received)) == ["m0", "m3", "m4", "m1", "m5", "m2", "m6"]


def test_a_group_with_fewer_in_flight_goes_first() -> None:
    received = [_message("a", 0), _message("a", 1), _message("b", 2), _message("c", 3)]

    ordered = fair_order(received, {"a": 40, "b": 3})

    assert _ids(ordered) == ["m3", "m2", "m0", "m1"]  # c has none in flight, then b, then the flooding a


def test_messages_without_a_group_are_each_a_group_of_their_own() -> None:
    received = [_message("a", 0), _message("a", 1), _message(None, 2), _message(None, 3)]

    assert message_group(received[2]) != message_group(received[3])
    assert _ids(fair_order(received)) == ["m0", "m2", "m3", "m1"]


@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=60))
def test_the_order_is_a_fair_permutation(groups: list[str | None]) -> None:
    received = [_message(group, n) for n, group in enumerate(groups)]

    ordered = fair_order(received)

    assert sorted(_ids(ordered)) == sorted(_ids(received))
    for group in {message_group(m) for m in received}:
        assert [m for m in ordered if message_group(m) == group] == [m for m in received if message_group(m) == group]
    # Round-robin: any prefix holds at most one more message of a group than of any other group that still
    # had messages to give at that point.
    counts: dict[str, int] = {}
    totals = {g: sum(1 for m in received if message_group(m) == g) for g in {message_group(m) for m in received}}
    for message in ordered:
        group = message_group(message)
        counts[group] = counts.get(group, 0) + 1
        waiting = [g for g in totals if counts.get(g, 0) < totals[g]]
        assert all(counts[group] <= counts.get(g, 0) + 1 for g in waiting)


class _OneReceiveSqs:
    """An SQS client that returns one receive's messages once, and records what is deleted."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self._messages = messages
        self.deleted: list[str] = []

    def receive_message(self, **_: Any) -> dict[str, Any]:
        messages, self._messages = self._messages, []
        return {"Messages": messages}

    def delete_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.deleted += [entry["ReceiptHandle"] for entry in Entries]
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries]}


def test_the_pump_hands_the_function_one_receive_round_robin() -> None:
    received = [_message("a", n) for n in range(8)] + [_message("b", 8), _message("b", 9)]
    sqs = _OneReceiveSqs(received)
    seen: list[list[str]] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        seen.append([record["messageId"] for record in event["Records"]])
        return {"batchItemFailures": [{"itemIdentifier": "m9"}]}

    pump = QueuePump(sqs, "url", "arn", handler, function_name="f")

    assert pump.poll_once() == 10
    assert seen == [["m0", "m8", "m1", "m9", "m2", "m3", "m4", "m5", "m6", "m7"]]
    assert sorted(sqs.deleted) == sorted(f"r{n}" for n in range(9))  # all but the failed record
