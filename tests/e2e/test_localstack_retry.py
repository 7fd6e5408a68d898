"""A retry end to end on LocalStack: the send worker's deferral becomes an EventBridge Scheduler schedule
(the real adapter) on LocalStack, the schedule puts the job on LocalStack's SQS queue, and the worker
then relays the message through a real SMTP server.

SQS, S3, Secrets Manager and Scheduler are LocalStack's; DynamoDB is moto's server (LocalStack's needs
Java at run time). Each function has its own container and settings, built as `make run` builds them:
the API and authorizer behind the local HTTP front, the worker behind a queue pump (Lambda's SQS event
source).

Who fires the schedule: LocalStack's free edition stores schedules but never runs them (measured with
2026.3.0: an `at(...)` and a `rate(1 minute)` schedule targeting SQS stayed unfired for 75 s; its docs
say Scheduler is "mocked functionality ... does not emulate schedule execution or target triggering").
So, as with moto, the local stack's ScheduleFirer fires it, reading and deleting it through LocalStack's
Scheduler API: the same firer `make run` uses, here held to a second Scheduler implementation.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from local.front import ApiFront
from local.lambda_runtime import QueuePump
from local.provision import LocalResources, provision
from local.scheduler import ScheduleFirer
from local.seed import RelayAccount, SeededTenant, seed_tenant
from local.tls import TlsFiles, make_tls_files
from petrel import resources
from petrel.adapters.scheduler import at_expression
from petrel.container.admin import AdminContainer, AdminSettings
from petrel.container.api import ApiContainer
from petrel.container.authorizer import AuthorizerContainer
from petrel.container.base import AwsClients
from petrel.container.worker import WorkerContainer
from petrel.entrypoints.api import create_api
from petrel.entrypoints.authorizer import create_authorizer
from petrel.entrypoints.send_worker import create_worker
from petrel.models.retry import schedule_name
from petrel.settings import ApiSettings, AuthorizerSettings, SendWorkerSettings
from tests.integration.aws_env import REGION
from tests.integration.localstack import LocalAwsClients
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.localstack]

RECIPIENT = "bob@example.org"
RETRY_SECONDS = 2  # the whole retry ladder here: one step, no jitter


@dataclass
class RetryStack:
    aws: LocalAwsClients
    made: LocalResources
    tenant: SeededTenant
    smtp: RunningServer
    front: ApiFront

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.front.url}/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.tenant.api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def wait_for(self, email_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, view = self.request("GET", f"/emails/{email_id}")
            assert status == 200, view
            if done(view):
                return dict(view)
            assert time.monotonic() < deadline, f"gave up waiting; last seen: {view}"
            time.sleep(0.2)

    def schedule(self, name: str) -> dict[str, Any] | None:
        scheduler = self.aws["scheduler"]
        try:
            found: dict[str, Any] = scheduler.get_schedule(Name=name, GroupName=self.made.schedule_group)
        except scheduler.exceptions.ResourceNotFoundException:
            return None
        return found


def _status(view: dict[str, Any]) -> str:
    return str(view["recipients"][0]["status"])


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path)


@pytest.fixture
def smtp(tls_files: TlsFiles) -> Iterator[RunningServer]:
    server = start_server(tls_files, security="starttls")
    yield server
    server.stop()


@pytest.fixture
def stack(localstack_aws: LocalAwsClients, smtp: RunningServer, tls_files: TlsFiles) -> Iterator[RetryStack]:
    aws = localstack_aws
    prefix = f"petrel-e2e{aws.account[-4:]}"
    made = provision(
        aws["dynamodb"],
        aws["sqs"],
        aws["s3"],
        prefix=prefix,
        visibility_timeout=30,
        max_receive_count=3,
        scheduler=aws["scheduler"],
        iam=aws["iam"],
    )
    env = made.environment() | {resources.RETRY_DELAYS_ENV: str(RETRY_SECONDS), resources.RETRY_JITTER_ENV: "0"}

    def clients() -> AwsClients:
        """Each function's own session, on the same account: LocalStack's services and moto's DynamoDB."""
        session = boto3.session.Session(region_name=REGION, aws_access_key_id=aws.account, aws_secret_access_key="test")
        endpoints = dict.fromkeys(("sqs", "s3", "secretsmanager", "scheduler"), aws.localstack.endpoint)
        return AwsClients(session, endpoint_urls=endpoints | {"dynamodb": aws.dynamodb_endpoint})

    admin = AdminContainer(
        AdminSettings(
            name_prefix=prefix,
            tenants_table=made.tables[resources.TENANTS.name],
            messages_table=made.tables[resources.MESSAGES.name],
            secrets_prefix=made.secrets_prefix,
        ),
        clients=clients(),
    )
    relay = RelayAccount("127.0.0.1", smtp.port, USERNAME, PASSWORD, ca_bundle=tls_files.ca_pem)
    tenant = seed_tenant(admin.admin, "Acme", domain="example.com", relay=relay, allow_unverified_domains=True)

    api = ApiContainer(ApiSettings.model_validate(env), clients=clients())
    authorizer = AuthorizerContainer(AuthorizerSettings.model_validate(env), clients=clients())
    worker = WorkerContainer(SendWorkerSettings.model_validate(env), clients=clients())
    front = ApiFront("127.0.0.1", 0, create_authorizer(authorizer), create_api(api))
    queue = resources.SEND_TRANSACTIONAL.name
    pump = QueuePump(
        aws["sqs"], made.queue_urls[queue], made.queue_arns[queue], create_worker(worker), function_name="send-worker"
    )
    front.start()
    pump.start()
    try:
        yield RetryStack(aws, made, tenant, smtp, front)
    finally:
        pump.stop()
        pump.join(timeout=10)
        front.stop()


def test_a_deferral_is_scheduled_on_localstack_fired_onto_its_queue_and_relayed(stack: RetryStack) -> None:
    stack.smtp.handler.script[RECIPIENT] = ("rcpt", "451 4.3.0 Try again later")

    status, sent = stack.request(
        "POST", "/emails", {"from": "Jane <jane@example.com>", "to": RECIPIENT, "subject": "Hi", "text": "Hello"}
    )
    assert status == 202, sent
    message_id = sent["recipients"][0]["id"]

    # The first attempt: 451 at RCPT, so the message waits on a schedule in LocalStack's Scheduler.
    deferred = stack.wait_for(sent["id"], lambda v: _status(v) == "deferred")
    assert deferred["recipients"][0]["last_reply"]["code"] == 451
    name = schedule_name(message_id, 1)
    schedule = stack.schedule(name)
    assert schedule is not None, f"no schedule {name} in {stack.made.schedule_group}"
    target = schedule["Target"]
    assert target["Arn"] == stack.made.queue_arns[resources.SEND_TRANSACTIONAL.name]
    assert target["DeadLetterConfig"]["Arn"] == stack.made.schedules_dlq_arn
    job = json.loads(target["Input"])
    assert (job["message_id"], job["attempt"]) == (message_id, 1)  # the attempt it follows (the lease's condition)
    next_attempt_at = datetime.fromisoformat(deferred["recipients"][0]["next_attempt_at"])
    assert schedule["ScheduleExpression"] == at_expression(next_attempt_at)

    # The server takes mail again; the schedule comes due and puts the job on LocalStack's queue.
    del stack.smtp.handler.script[RECIPIENT]
    firer = ScheduleFirer(stack.aws["scheduler"], stack.aws["sqs"], stack.made.schedule_group, poll_seconds=0.2)
    firer.start()
    try:
        view = stack.wait_for(sent["id"], lambda v: _status(v) == "relayed")
    finally:
        firer.stop()
        firer.join(timeout=10)

    assert firer.fired == 1
    assert stack.schedule(name) is None  # deleted as it fired (ActionAfterCompletion=DELETE)
    assert view["recipients"][0]["attempts"] == 2
    delivered = [m for m in stack.smtp.handler.received if RECIPIENT in m.rcpt_to]
    assert len(delivered) == 1 and b"Subject: Hi" in delivered[0].data
