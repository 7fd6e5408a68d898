"""Message ids derive from their email's id (petrel.ids), so a message id leads to its email without an index."""

from __future__ import annotations

import pytest

from petrel.ids import EMAIL_TAIL, MAX_MESSAGES, email_id_of, is_id, message_id, new_email_id, new_id


def test_an_email_ids_messages_lead_back_to_it_and_are_distinct() -> None:
    email_id = new_email_id(1_768_469_400_000)
    ids = [message_id(email_id, n) for n in range(1, 51)]

    assert is_id(email_id, "em") and email_id.endswith(EMAIL_TAIL)
    assert all(is_id(i, "msg") for i in ids)  # the API's id checks accept them
    assert len(set(ids)) == 50
    assert {email_id_of(i) for i in ids} == {email_id}
    assert ids == sorted(ids)  # in recipient order


def test_email_ids_keep_time_order_and_differ_within_a_millisecond() -> None:
    earlier, later = new_email_id(1_000), new_email_id(2_000)
    assert earlier < later
    assert len({new_email_id(5_000) for _ in range(1000)}) == 1000


def test_an_older_random_message_id_names_no_email_of_its_own() -> None:
    old = new_id("msg")
    derived = email_id_of(old)
    assert derived is not None and is_id(derived, "em") and derived.endswith(EMAIL_TAIL)


@pytest.mark.parametrize("value", ["em_01KB00000000000000000000000", "msg_short", "nope", ""])
def test_what_is_not_a_message_id_has_no_email(value: str) -> None:
    assert email_id_of(value) is None


@pytest.mark.parametrize("position", [0, -1, MAX_MESSAGES + 1])
def test_positions_outside_the_range_are_refused(position: int) -> None:
    with pytest.raises(ValueError):
        message_id(new_email_id(), position)
