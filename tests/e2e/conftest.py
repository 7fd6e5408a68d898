"""End-to-end fixtures: the whole local platform (real Postfix + Dovecot) driven over HTTP.

The platform runs in this process (the tests inject faults into its functions' containers), with each
function's environment its own; what it sets process-wide (the AWS endpoint, Powertools' settings) it
puts back when it stops, and the fixture checks that it did: no later test directory inherits any of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from local.platform import LocalPlatform
from tests.e2e.support.api import Api
from tests.e2e.support.platform import running_platform


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped end-to-end test is a failure: it would hide a missing Postfix or Dovecot."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"end-to-end test skipped in CI: {report.longrepr}"


@pytest.fixture(scope="package")
def platform() -> Iterator[LocalPlatform]:
    """One local stack for the end-to-end tests, stopped when they are done (package scope)."""
    before = _environment()
    # The poller every second: a delivery report or a reply is ingested within a couple of seconds.
    with running_platform("petrel-e2e-", poll_seconds=1.0) as local:
        yield local
    assert _environment() == before, "the local platform left changes in the process environment"


def _environment() -> dict[str, str]:
    """The process environment, less what pytest itself changes from test to test."""
    return {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="package")
def api(platform: LocalPlatform) -> Api:
    return Api(platform.info["api_url"], platform.info["api_key"])
