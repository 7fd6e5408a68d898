"""Fixtures shared by unit and integration tests: the in-memory doubles of every port."""

from __future__ import annotations

import pytest

from tests.fakes import FakeWorld, FixedClock

# LocalStack (one process for the whole run, started on first use): tests/integration/localstack.py.
pytest_plugins = ("tests.integration.localstack",)


@pytest.fixture
def world() -> FakeWorld:
    """Fresh fakes for every port, sharing one FixedClock."""
    return FakeWorld()


@pytest.fixture
def clock(world: FakeWorld) -> FixedClock:
    return world.clock
