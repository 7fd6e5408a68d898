"""The local stack's API over HTTP, and a user's mailbox over IMAPS."""

from __future__ import annotations

import imaplib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

# The problem type of a request over the tenant's API plan (petrel.errors.TooManyRequests).
THROTTLED = "urn:petrel:problem:too-many-requests"
THROTTLE_RETRIES = 30


@dataclass(frozen=True)
class Api:
    """A client of one API key: JSON in, (status, JSON) out; HTTP errors are answers, not exceptions."""

    base: str
    key: str

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        return self._send(method, path, data, "application/json", headers)

    def post_raw(self, path: str, data: bytes, content_type: str = "message/rfc822") -> tuple[int, Any]:
        """POST raw bytes (not JSON), e.g. a whole message to `/v1/inbound/raw`."""
        return self._send("POST", path, data, content_type, None)

    def _send(
        self, method: str, path: str, data: bytes | None, content_type: str, headers: dict[str, str] | None
    ) -> tuple[int, Any]:
        """One request; a 429 of the tenant's API plan (the front's per-tenant throttle, as API Gateway's
        usage plan deployed) is waited out for its Retry-After and the request sent again, as a client
        of a throttled API does. Any other answer, a quota's 429 included, is returned as it is."""
        for _ in range(THROTTLE_RETRIES):
            request = urllib.request.Request(self.base + path, data=data, method=method)
            request.add_header("Authorization", f"Bearer {self.key}")
            request.add_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                request.add_header(name, value)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                answer = json.loads(error.read() or b"null")
                throttled = error.code == 429 and isinstance(answer, dict) and answer.get("type") == THROTTLED
                if not throttled:
                    return error.code, answer
                time.sleep(float(error.headers.get("Retry-After") or 1))
        return 429, answer

    def wait_for(self, email_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 40.0) -> dict[str, Any]:
        """Poll `GET /v1/emails/{id}` until `done(view)`; the view then."""
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, view = self.call("GET", f"/v1/emails/{email_id}")
            assert status == 200, view
            if done(view):
                return view
            time.sleep(0.3)
        raise AssertionError(f"email {email_id} did not reach the expected state: {json.dumps(view, indent=1)}")


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


def mailbox_of(info: dict[str, Any], address: str, password: str) -> dict[str, Any]:
    """The test mailbox's IMAP settings (local.json) for another user of the stand-in."""
    return {**info["test_mailbox"], "address": address, "username": address, "password": password}
