"""services.suppressions with the fake store: add, get, remove, list, address normalisation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from petrel.errors import Conflict, InvalidRequest, NotFound
from petrel.models.api import SuppressionRequest
from petrel.services import suppressions
from tests.fakes import FakeWorld


def _add(world: FakeWorld, email: str, **fields: str) -> None:
    suppressions.add(
        world.suppressions, world.clock, "tn_a", SuppressionRequest.model_validate({"email": email, **fields})
    )


def test_add_get_remove(world: FakeWorld) -> None:
    _add(world, "Bob <Bob@Example.org>", reason="complaint", note="asked by phone")

    shown = suppressions.get(world.suppressions, "tn_a", "bob%40example.ORG")
    assert (shown.email, shown.reason, shown.detail) == ("bob@example.org", "complaint", "asked by phone")
    assert shown.created_at == world.clock.now()

    suppressions.remove(world.suppressions, "tn_a", "BOB@example.org")
    with pytest.raises(NotFound):
        suppressions.get(world.suppressions, "tn_a", "bob@example.org")
    with pytest.raises(NotFound):
        suppressions.remove(world.suppressions, "tn_a", "bob@example.org")


def test_adding_twice_is_a_conflict_and_keeps_the_first(world: FakeWorld) -> None:
    _add(world, "bob@example.org", reason="manual")
    with pytest.raises(Conflict):
        _add(world, "BOB@example.org", reason="complaint")
    assert suppressions.get(world.suppressions, "tn_a", "bob@example.org").reason == "manual"


def test_lists_are_per_tenant_and_paged(world: FakeWorld) -> None:
    for i in range(5):
        _add(world, f"user{i}@example.org")
    suppressions.add(
        world.suppressions, world.clock, "tn_b", SuppressionRequest.model_validate({"email": "x@example.org"})
    )

    first = suppressions.list_page(world.suppressions, "tn_a", limit=3, cursor=None)
    second = suppressions.list_page(world.suppressions, "tn_a", limit=3, cursor=first.next_cursor)

    assert [s.email for s in first.data + second.data] == [f"user{i}@example.org" for i in range(5)]
    assert second.next_cursor is None


@pytest.mark.parametrize("limit", [0, 101])
def test_page_size_is_bounded(world: FakeWorld, limit: int) -> None:
    with pytest.raises(InvalidRequest, match="limit"):
        suppressions.list_page(world.suppressions, "tn_a", limit=limit, cursor=None)


def test_bad_input_is_refused(world: FakeWorld) -> None:
    with pytest.raises(InvalidRequest):
        suppressions.get(world.suppressions, "tn_a", "not-an-address")
    with pytest.raises(ValidationError):
        SuppressionRequest.model_validate({"email": "nope"})
    with pytest.raises(ValidationError):
        SuppressionRequest.model_validate({"email": "a@example.org", "reason": "Has Spaces"})
    with pytest.raises(InvalidRequest, match="cursor"):
        suppressions.list_page(world.suppressions, "tn_a", limit=3, cursor="!!!")
