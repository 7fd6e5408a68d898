"""`make run BACKEND=localstack`: the local platform with SQS, S3, Secrets Manager and Scheduler on
LocalStack (DynamoDB on moto's server) relays a message through the real Postfix stand-in, and a
deferral waits on a schedule in LocalStack's Scheduler (fired by the local firer: LocalStack's free
Scheduler never fires), comes back through LocalStack's queue and is relayed. The ingest side runs there
too: Postfix's success report, read by the poller into LocalStack's S3 and ingest queue, ends the first
message `delivered`."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from local.platform import LocalPlatform
from tests.e2e.support.api import Api, mailbox_of, read_mailbox
from tests.e2e.support.platform import running_platform
from tests.e2e.support.tracking import SENT

pytestmark = [pytest.mark.e2e, pytest.mark.localstack]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalPlatform]:
    """The platform as `python -m local --backend localstack` runs it (in this process, to set the
    stand-in's reply rules)."""
    with running_platform("petrel-localstack-", backend="localstack") as platform:
        yield platform


def _status(view: dict[str, Any]) -> str:
    return str(view["recipients"][0]["status"])


def _send(api: Api, info: dict[str, Any], to: str, subject: str) -> dict[str, Any]:
    status, sent = api.call(
        "POST", "/v1/emails", {"from": info["from_address"], "to": to, "subject": subject, "text": "hi"}
    )
    assert status == 202, sent
    return dict(sent)


def test_localstack_serves_the_queues_and_schedules_and_moto_the_tables(stack: LocalPlatform) -> None:
    info = stack.info
    endpoints = info["aws"]["endpoint_urls"]
    assert info["backend"] == "localstack"
    assert endpoints["dynamodb"] == info["aws"]["endpoint_url"]
    localstack = endpoints["sqs"]
    assert localstack != endpoints["dynamodb"]
    assert {endpoints[s] for s in ("s3", "secretsmanager", "scheduler")} == {localstack}
    assert all(url.startswith(localstack) for url in info["aws"]["queues"].values())
    # The schedule group exists where the worker's RetryScheduler creates schedules: LocalStack, not moto.
    aws = stack.aws
    assert aws is not None, "the platform is not running"
    group = info["aws"]["schedules"]["group"]
    assert group in _groups(aws.client("scheduler"))
    assert group not in _groups(aws.session().client("scheduler", endpoint_url=endpoints["dynamodb"]))


def _groups(scheduler: Any) -> list[str]:
    return [g["Name"] for g in scheduler.list_schedule_groups()["ScheduleGroups"]]


def test_a_message_is_relayed_and_a_deferral_retried_through_localstack(stack: LocalPlatform) -> None:
    info = stack.info
    api = Api(info["api_url"], info["api_key"])
    box = info["test_mailbox"]
    subject = f"via LocalStack {uuid.uuid4().hex[:8]}"
    sent = _send(api, info, box["address"], subject)
    assert len(read_mailbox(box, subject=subject)) == 1
    view = api.wait_for(sent["id"], lambda v: _status(v) == "delivered", timeout=60)
    assert [a["reply"]["code"] for a in view["recipients"][0]["attempt_log"]] == [250]
    assert "email.delivered" in [event["type"] for event in view["events"]]

    later, password = f"later-{uuid.uuid4().hex[:6]}@{stack.config.recipient_domain}", secrets.token_urlsafe(12)
    stack.mailu.add_users({later: password})
    stack.mailu.set_recipient_rule(later, "451 4.3.0 Try again later")
    try:
        deferred = _send(api, info, later, f"{subject} later")
        view = api.wait_for(deferred["id"], lambda v: _status(v) == "deferred")
        assert view["recipients"][0]["last_reply"]["code"] == 451
    finally:
        stack.mailu.clear_recipient_rule(later)
    view = api.wait_for(deferred["id"], lambda v: _status(v) in SENT)
    recipient = view["recipients"][0]
    assert recipient["attempts"] >= 2 and recipient["attempt_log"][-1]["reply"]["code"] == 250, recipient
    events = [event["type"] for event in view["events"]]
    assert events.index("email.deferred") < events.index("email.sent"), events
    assert len(read_mailbox(mailbox_of(info, later, password), subject=f"{subject} later")) == 1
