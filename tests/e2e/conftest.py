"""End-to-end fixtures: the whole local platform (real Postfix + Dovecot) driven over HTTP.

The platform runs in this process (the tests inject faults into its functions' containers), with each
function's environment its own; what it sets process-wide (the AWS endpoint, Powertools' settings) it
puts back when it stops, and the fixture checks that it did: no later test directory inherits any of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.mailu import ensure_installed, install_packages
from local.platform import LocalConfig, LocalPlatform
from tests.e2e.support.api import Api


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
    if ensure_installed():
        install_packages()  # never skip: CI installs the real servers
    before = _environment()
    # Postfix and Dovecot drop privileges: the work dir must be reachable by their users.
    workdir = Path(tempfile.mkdtemp(prefix="petrel-e2e-"))
    workdir.chmod(0o755)
    # The poller every second: a delivery report or a reply is ingested within a couple of seconds.
    local = LocalPlatform(LocalConfig(workdir=workdir, api_port=0, poll_seconds=1.0))
    try:
        local.start()
        yield local
    finally:
        local.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert _environment() == before, "the local platform left changes in the process environment"


def _environment() -> dict[str, str]:
    """The process environment, less what pytest itself changes from test to test."""
    return {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="package")
def api(platform: LocalPlatform) -> Api:
    return Api(platform.info["api_url"], platform.info["api_key"])
