"""The ingest side under crashes, end to end: a delivery report is applied exactly once however often
the poller and the ingest worker fall over on the way.

Invariant: every message in a registered mailbox reaches its Petrel message once. The poller queues a
message before it saves its folder's cursor, so a crash between the two queues it again on the next
poll; the ingest job's record id is derived from the message's bytes, and applying it is a conditional
write plus an `outcome` mark, so however many copies of the job run and however many of them crash
between storing the record and applying it, there is one inbound record, one status change and one
`email.delivered` event, and nothing is left on the ingest queue or its dead-letter queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from local.platform import LocalPlatform
from petrel.models.records import FolderCursor
from tests.e2e.support.api import Api
from tests.e2e.support.aws_state import aws_client, dead_letters
from tests.e2e.support.tracking import wait_until

pytestmark = pytest.mark.e2e

CRASHES = 2  # of each kind: the same step crashes more than once


class InjectedCrash(Exception):
    """A crash of one poll of a mailbox, or of one ingest job's handling."""


class CrashingCursors:
    """The poller's MailboxStore: the next `crashes` cursor saves of one mailbox that move past `after`
    raise before writing, i.e. after the poller queued what it fetched and before it recorded that."""

    def __init__(self, inner: Any, mailbox_id: str, after: int, crashes: int) -> None:
        self._inner = inner
        self._mailbox, self._after = mailbox_id, after
        self._lock = threading.Lock()
        self.left = crashes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def save_cursor(self, cursor: FolderCursor, *, expected: FolderCursor | None) -> None:
        with self._lock:
            crash = self.left > 0 and cursor.mailbox_id == self._mailbox and cursor.last_uid > self._after
            if crash:
                self.left -= 1
        if crash:
            raise InjectedCrash("poller: after queuing, before saving the cursor")
        self._inner.save_cursor(cursor, expected=expected)


class CrashingApply:
    """The ingest worker's MessageStore: the next `crashes` status changes of one message raise before
    writing, i.e. after the job stored the inbound record and before it applied the report."""

    def __init__(self, inner: Any, message_id: str, crashes: int) -> None:
        self._inner = inner
        self._message = message_id
        self._lock = threading.Lock()
        self.left = crashes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transition(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            crash = self.left > 0 and key.message_id == self._message
            if crash:
                self.left -= 1
        if crash:
            raise InjectedCrash("ingest: after storing the record, before applying it")
        return self._inner.transition(key, *args, **kwargs)


@contextlib.contextmanager
def replaced(container: Any, name: str, **changes: Any) -> Iterator[None]:
    """The container's `name` deps (a frozen dataclass it builds once) with `changes`, for the duration:
    the handlers read them from the container on every invocation."""
    original = getattr(container, name)
    container.__dict__[name] = dataclasses.replace(original, **changes)
    try:
        yield
    finally:
        container.__dict__[name] = original


def _ingest_queue_depth(platform: LocalPlatform) -> int:
    attributes = aws_client(platform, "sqs").get_queue_attributes(
        QueueUrl=platform.info["aws"]["queues"]["ingest"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_a_report_is_applied_once_when_the_poller_and_the_ingest_worker_crash_twice_each(
    platform: LocalPlatform, api: Api
) -> None:
    functions = platform.running()
    admin = platform.admin
    assert admin is not None
    tenant_id = platform.info["tenant_id"]
    [bounces] = [m for m in platform.info["mailboxes"] if m["address"].startswith("bounces@")]
    # Let a poll settle what came before (another test's reports), then note how far INBOX is read.
    wait_until(lambda: _ingest_queue_depth(platform) == 0, 30, "an idle ingest queue")
    before = admin.mailboxes.get_cursor(tenant_id, bounces["mailbox_id"], "INBOX")
    dlq_before = dead_letters(platform)

    poller, ingest = functions.poller.container, functions.ingest.container
    cursors = CrashingCursors(poller.poll.mailboxes, bounces["mailbox_id"], before.last_uid if before else 0, CRASHES)
    with replaced(poller, "poll", mailboxes=cursors):
        status, sent = api.call(
            "POST",
            "/v1/emails",
            {
                "from": platform.info["from_address"],
                "to": platform.info["test_mailbox"]["address"],
                "subject": f"crashes {uuid.uuid4().hex[:8]}",
                "text": "x",
            },
        )
        assert status == 202, sent
        message_id = sent["recipients"][0]["id"]
        applying = CrashingApply(ingest.ingest.messages, message_id, CRASHES)
        with replaced(ingest, "ingest", messages=applying):
            view = api.wait_for(sent["id"], lambda v: v["recipients"][0]["status"] == "delivered", timeout=60)
            assert (cursors.left, applying.left) == (0, 0), "not every planned crash happened"
            # The jobs that crashed come back after their visibility timeout and find the work done.
            wait_until(
                lambda: _ingest_queue_depth(platform) == 0,
                platform.config.visibility_timeout * 2 + 20,
                "the ingest queue drained",
            )

    # The final state of every record: the message, its events, the inbound records, the cursor, the queues.
    _, view = api.call("GET", f"/v1/emails/{sent['id']}")
    assert view["recipients"][0]["status"] == "delivered"
    kinds = [e["type"] for e in view["events"]]
    assert kinds == ["email.queued", "email.sent", "email.delivered"], kinds
    status, page = api.call("GET", f"/v1/inbound?email_id={sent['id']}")
    assert status == 200, page
    assert [item["kind"] for item in page["data"]] == ["delivery_report"], page
    after = admin.mailboxes.get_cursor(tenant_id, bounces["mailbox_id"], "INBOX")
    assert after is not None and after.last_uid > (before.last_uid if before else 0)
    health = admin.mailboxes.get_health(tenant_id, bounces["mailbox_id"])
    assert health is not None and health.last_success_at is not None
    assert dead_letters(platform) == dlq_before, "a job went to a dead-letter queue"
