"""Fixtures shared by unit and integration tests: the in-memory doubles of every port."""

from __future__ import annotations

import pytest

from tests.fakes import FakeWorld, FixedClock


@pytest.fixture
def world() -> FakeWorld:
    """Fresh fakes for every port, sharing one FixedClock."""
    return FakeWorld()


@pytest.fixture
def clock(world: FakeWorld) -> FixedClock:
    return world.clock
