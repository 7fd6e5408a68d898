"""End-to-end fixtures: the whole local platform (real Postfix + Dovecot) driven over HTTP."""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from local.mailu import ensure_installed, install_packages
from local.platform import LocalConfig, LocalPlatform


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped end-to-end test is a failure: it would hide a missing Postfix or Dovecot."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"end-to-end test skipped in CI: {report.longrepr}"


@dataclass
class Api:
    base: str
    key: str

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_for(self, email_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 40.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, view = self.call("GET", f"/v1/emails/{email_id}")
            assert status == 200, view
            if done(view):
                return view
            time.sleep(0.3)
        raise AssertionError(f"email {email_id} did not reach the expected state: {json.dumps(view, indent=1)}")


@pytest.fixture(scope="package")
def platform() -> Iterator[LocalPlatform]:
    """One local stack for the end-to-end tests, stopped when they are done (package scope): its queue
    pumps, schedule firer and sweeper timer run handlers through the process-wide containers, and must
    not go on running against the environment of the test directories that come after."""
    if ensure_installed():
        install_packages()  # never skip: CI installs the real servers
    saved = dict(os.environ)
    # Postfix and Dovecot drop privileges: the work dir must be reachable by their users.
    workdir = Path(tempfile.mkdtemp(prefix="petrel-e2e-"))
    workdir.chmod(0o755)
    local = LocalPlatform(LocalConfig(workdir=workdir, api_port=0))
    try:
        local.start()
        yield local
    finally:
        local.stop()
        os.environ.clear()
        os.environ.update(saved)
        from petrel import container

        container.reset()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="package")
def api(platform: LocalPlatform) -> Api:
    return Api(platform.info["api_url"], platform.info["api_key"])


def read_mailbox(
    box: dict[str, Any], count: int = 1, timeout: float = 30.0, subject: str | None = None
) -> list[EmailMessage]:
    """Messages in INBOX over IMAPS, verified against the stand-in's CA (as a user's client would)."""
    context = ssl.create_default_context(cafile=box["ca_file"])
    deadline = time.monotonic() + timeout
    found: list[EmailMessage] = []
    while time.monotonic() < deadline:
        with imaplib.IMAP4_SSL(box["imap_host"], box["imap_port"], ssl_context=context) as imap:
            imap.login(box["username"], box["password"])
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "ALL")
            found = []
            for number in data[0].split():
                _, parts = imap.fetch(number, "(RFC822)")
                raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
                message = message_from_bytes(raw, policy=policy.default)
                assert isinstance(message, EmailMessage)
                if subject is None or message["Subject"] == subject:
                    found.append(message)
        if len(found) >= count:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{len(found)} of {count} messages arrived in {box['address']}")


def mailbox_of(platform: LocalPlatform, address: str, password: str) -> dict[str, Any]:
    return {**platform.info["test_mailbox"], "address": address, "username": address, "password": password}


def workdir_of(platform: LocalPlatform) -> Path:
    return platform.workdir
