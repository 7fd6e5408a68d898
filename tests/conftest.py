"""Fixtures shared by unit and integration tests: the in-memory doubles of every port, and the real DNS
server (Knot) that the DNS tests publish into."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.fakes import FakeWorld, FixedClock

if TYPE_CHECKING:
    from local.knot import KnotServer

# LocalStack (one process for the whole run, started on first use): tests/integration/localstack.py.
pytest_plugins = ("tests.integration.localstack",)


@pytest.fixture
def world() -> FakeWorld:
    """Fresh fakes for every port, sharing one FixedClock."""
    return FakeWorld()


@pytest.fixture
def clock(world: FakeWorld) -> FixedClock:
    return world.clock


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """One Knot DNS server (knotd on a free loopback port) for the whole run; stopped at the end. Tests
    add zones of their own (e.g. `<uuid>.test`), so they never see each other's records."""
    from local.knot import KnotServer, install_knot  # dnspython: imported only by the tests that use it

    install_knot()  # a no-op when knotd is there (`make test` installs it first): never skip
    with KnotServer(tmp_path_factory.mktemp("knot")) as server:
        yield server
