"""Suspension with mail queued and scheduled, through the deployed handlers on moto (DynamoDB, SQS,
EventBridge Scheduler) and a real SMTP server: the held mail waits on its schedules, and resume sends
each message once, even though the holds' schedules fire afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from petrel.adapters.queues import SqsJobQueue
from petrel.services import tenants
from petrel.services.suspension import HELD_REASON
from tests.integration.test_handlers_moto import (
    Stack,
    _email,
    stack,  # noqa: F401 (the fixture, registered by its name)
)

pytestmark = pytest.mark.integration


def _recipient(on: Stack, email_id: str) -> dict[str, object]:
    [recipient] = on.get(email_id)["recipients"]
    return recipient


def test_suspended_mail_waits_on_moto_and_resume_sends_each_message_once(stack: Stack) -> None:  # noqa: F811
    tenant_id = stack.tenant.tenant_id
    # Sending-domain verification is not what this test is about: the tenant's testing setting skips it.
    tenants.update_tenant(stack.admin, tenant_id, tenants.TenantSettings(allow_unverified_domains=True))
    queued = stack.send(to="bob@example.org")
    scheduled = stack.send(to="carol@example.org", send_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat())
    queued_message = queued["recipients"][0]["id"]

    tenants.suspend_tenant(stack.admin, tenant_id, "unpaid invoice")

    refused = stack.call("POST", "/v1/emails", _email(to="dan@example.org"))
    assert refused.status == 403 and "unpaid invoice" in refused.body["detail"]
    assert stack.pump() == 1  # the queued message's job: held, not attempted
    held = _recipient(stack, queued["id"])
    assert (held["status"], held["failure_reason"], held["attempts"]) == ("deferred", HELD_REASON, 0)
    assert stack.schedules() == sorted([f"{queued_message}-1", f"{scheduled['id']}-release"])

    # Both fire while the tenant is still suspended: the release's message is held too, the held one again.
    assert stack.fire_schedules(timedelta(hours=3)) == 2
    assert stack.pump() == 3  # the release job, the send job it queued, the hold's retry
    for email_id in (queued["id"], scheduled["id"]):
        again = _recipient(stack, email_id)
        assert (again["status"], again["failure_reason"], again["attempts"]) == ("deferred", HELD_REASON, 0)
    assert len(stack.schedules()) == 2 and stack.smtp.handler.received == []

    queue = SqsJobQueue(stack.aws["sqs"], {pool: stack.queue_url(pool) for pool in ("transactional", "bulk")})
    resumed = tenants.resume_tenant(stack.admin, tenant_id, messages=stack.operator.messages, queue=queue)

    assert resumed.released == 2 and not resumed.tenant.suspended
    assert stack.pump() == 2
    assert stack.fire_schedules(timedelta(hours=4)) == 2  # the holds' retries, after the release
    assert stack.pump() == 2  # their jobs find the attempt done: nothing is sent again
    for email_id in (queued["id"], scheduled["id"]):
        sent = _recipient(stack, email_id)
        assert (sent["status"], sent["attempts"], sent["failure_reason"]) == ("relayed", 1, None)
    assert len(stack.smtp.handler.received) == 2 and stack.schedules() == []
