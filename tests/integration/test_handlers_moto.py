"""The deployed handlers (api, authorizer, send_worker, ingest_worker) in-process against moto and a real SMTP server.

Events are built the way API Gateway (REST proxy, REQUEST authorizer) and the SQS event source
build them (see local/front.py and local/lambda_runtime.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws

from local import handlers
from local.handlers import LocalFunction
from local.lambda_runtime import LocalContext, QueuePump
from local.provision import LocalResources, provision
from local.scheduler import ScheduleFirer
from local.seed import RelayAccount, SeededTenant, seed_tenant
from local.timer import Every
from petrel import resources
from petrel.container.admin import AdminContainer, AdminSettings
from petrel.container.api import ApiContainer
from petrel.container.authorizer import AuthorizerContainer
from petrel.container.base import AwsClients
from petrel.container.sweeper import SweeperContainer
from petrel.container.worker import WorkerContainer
from petrel.models.records import SCOPES
from petrel.services import tenants
from petrel.services.tenants import AdminDeps
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer, TlsFiles

pytestmark = pytest.mark.integration

STAGE_ARN = "arn:aws:execute-api:us-east-1:000000000000:api123/test"


def _email(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "Jane <jane@example.com>",
        "to": "bob@example.org",
        "subject": "Hi",
        "text": "Hello",
    }
    body.update(fields)
    return body


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: str

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Stack:
    aws: dict[str, Any]
    made: LocalResources
    operator: AdminContainer  # what `petrel` (the CLI) administers the tenants with
    tenant: SeededTenant
    smtp: RunningServer
    monkeypatch: pytest.MonkeyPatch
    session: boto3.session.Session
    # The functions' environment, as infra gives it to each function (`setenv` changes it).
    env: dict[str, str]
    # Each function as Lambda runs it: its own settings, container and boto3 clients, built from `env` on
    # first use (and again after `setenv`, like a new deployment). Built as the local stack builds them.
    _api: LocalFunction[ApiContainer] | None = None
    _authorizer: LocalFunction[AuthorizerContainer] | None = None
    _worker: LocalFunction[WorkerContainer] | None = None
    _sweeper: LocalFunction[SweeperContainer] | None = None

    @property
    def admin(self) -> AdminDeps:
        return self.operator.admin

    @property
    def key(self) -> str:
        return self.tenant.api_key

    def clients(self) -> AwsClients:
        """A function's own clients, on the run's warm session (moto intercepts every call)."""
        return AwsClients(self.session)

    def api(self, event: dict[str, Any]) -> dict[str, Any]:
        if self._api is None:
            self._api = handlers.api(self.env, self.clients())
        result: dict[str, Any] = self._api.handler(event, LocalContext("api"))
        return result

    def authorizer(self, event: dict[str, Any]) -> dict[str, Any]:
        if self._authorizer is None:
            self._authorizer = handlers.authorizer(self.env, self.clients())
        result: dict[str, Any] = self._authorizer.handler(event, LocalContext("authorizer"))
        return result

    @property
    def worker(self) -> LocalFunction[WorkerContainer]:
        if self._worker is None:
            self._worker = handlers.worker(self.env, self.clients())
        return self._worker

    def send_worker(self, event: dict[str, Any], context: LocalContext | None = None) -> Any:
        return self.worker.handler(event, context or LocalContext("send_worker"))

    def sweeper(self, event: dict[str, Any], context: LocalContext | None = None) -> Any:
        if self._sweeper is None:
            self._sweeper = handlers.sweeper(self.env, self.clients())
        return self._sweeper.handler(event, context or LocalContext("sweeper"))

    def authorize(self, authorization: str | None, method: str = "GET", path: str = "/v1/emails") -> dict[str, Any]:
        headers = {"Authorization": authorization} if authorization is not None else {}
        event = {
            "type": "REQUEST",
            "methodArn": f"{STAGE_ARN}/{method}{path}",
            "resource": "/v1/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": headers,
        }
        return self.authorizer(event)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Response:
        all_headers = {"Authorization": f"Bearer {key or self.key}", "Content-Type": "application/json"}
        all_headers.update(headers or {})
        policy = self.authorize(all_headers["Authorization"], method, path)
        assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
        event = {
            "resource": "/v1/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": all_headers,
            "queryStringParameters": query,
            "pathParameters": {"proxy": path.removeprefix("/v1/")},
            "body": body if body is None or isinstance(body, str) else json.dumps(body),
            "isBase64Encoded": False,
            "requestContext": {
                "requestId": "req-test",
                "stage": "test",
                "httpMethod": method,
                "authorizer": {**policy["context"], "principalId": policy["principalId"]},
            },
        }
        result = self.api(event)
        return Response(result["statusCode"], result["headers"], result["body"])

    def send(self, **fields: Any) -> dict[str, Any]:
        response = self.call("POST", "/v1/emails", _email(**fields))
        assert response.status == 202, response.raw
        sent: dict[str, Any] = response.body
        return sent

    def get(self, email_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/emails/{email_id}")
        assert response.status == 200, response.raw
        view: dict[str, Any] = response.body
        return view

    def queue_url(self, pool: str = "transactional") -> str:
        return self.made.queue_urls[f"send-{pool}"]

    def pump(self, pool: str = "transactional") -> int:
        """Run the send worker over what is on the queue, as Lambda's SQS event source would."""
        url = self.queue_url(pool)
        arn = self.aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        handled = 0
        while count := QueuePump(self.aws["sqs"], url, arn, self.send_worker, function_name="send_worker").poll_once():
            handled += count
        return handled

    def receive_records(self, expected: int, pool: str = "transactional") -> list[dict[str, Any]]:
        """Take `expected` messages off the queue as SQS event records (without running the worker)."""
        records: list[dict[str, Any]] = []
        for _ in range(10):
            out = self.aws["sqs"].receive_message(
                QueueUrl=self.queue_url(pool), MaxNumberOfMessages=10, AttributeNames=["All"]
            )
            for m in out.get("Messages", []):
                records.append(
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": m["Attributes"],
                        "messageAttributes": {},
                        "md5OfBody": hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
                        "eventSource": "aws:sqs",
                        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:send",
                        "awsRegion": REGION,
                    }
                )
            if len(records) >= expected:
                break
        assert len(records) == expected
        return records

    def fire_schedules(self, later: timedelta = timedelta(days=1)) -> int:
        """Play EventBridge Scheduler `later` from now: every schedule due by then puts its job on its queue."""
        firer = ScheduleFirer(self.aws["scheduler"], self.aws["sqs"], self.made.schedule_group)
        return firer.fire_due(datetime.now(UTC) + later, sweep=True)

    def schedules(self) -> list[str]:
        pages = self.aws["scheduler"].list_schedules(GroupName=self.made.schedule_group)
        return sorted(s["Name"] for s in pages["Schedules"])

    def setenv(self, name: str, value: str) -> None:
        """Change a function setting; the functions are built again on next use, like a new deployment."""
        self.env[name] = value
        self._api = self._authorizer = self._worker = self._sweeper = None


@pytest.fixture
def stack(
    monkeypatch: pytest.MonkeyPatch,
    boto_session: boto3.session.Session,
    submission_server: RunningServer,
    tls_files: TlsFiles,
) -> Iterator[Stack]:
    clean_aws_environment(monkeypatch)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        resources.POWERTOOLS_METRICS_NAMESPACE_ENV: "PetrelTest",
        resources.POWERTOOLS_SERVICE_NAME_ENV: "petrel-test",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        aws = {
            name: boto_session.client(name) for name in ("dynamodb", "sqs", "s3", "secretsmanager", "scheduler", "iam")
        }
        made = provision(
            aws["dynamodb"],
            aws["sqs"],
            aws["s3"],
            prefix="petrel-test",
            visibility_timeout=30,
            max_receive_count=3,
            scheduler=aws["scheduler"],
            iam=aws["iam"],
        )
        operator = AdminContainer(
            AdminSettings(
                name_prefix=made.prefix,
                tenants_table=made.tables[resources.TENANTS.name],
                messages_table=made.tables[resources.MESSAGES.name],
                secrets_prefix=made.secrets_prefix,
                region=REGION,
            ),
            clients=AwsClients(boto_session),
        )
        relay = RelayAccount(
            host="127.0.0.1",
            port=submission_server.port,
            username=USERNAME,
            password=PASSWORD,
            ca_bundle=tls_files.ca_pem,
        )
        tenant = seed_tenant(
            operator.admin,
            "Acme",
            domain="example.com",
            return_path_domain="bounce.example.com",
            relay=relay,
            key_name="tests",
            allow_unverified_domains=True,  # no DNS here: the domain stays pending
        )
        yield Stack(aws, made, operator, tenant, submission_server, monkeypatch, boto_session, made.environment())


def test_send_relay_and_read_back(stack: Stack) -> None:
    sent = stack.send(to=["Bob <bob@example.org>"])
    [recipient] = sent["recipients"]
    assert recipient["email"] == "bob@example.org" and recipient["status"] == "queued"

    assert stack.pump() == 1

    view = stack.get(sent["id"])
    [message] = view["recipients"]
    assert message["id"] == recipient["id"] and message["status"] == "relayed"
    assert message["attempts"] == 1
    assert message["last_reply"]["code"] == 250 and message["last_reply"]["stage"] == "data"
    [attempt] = message["attempt_log"]
    assert attempt["number"] == 1 and attempt["outcome"] == "relayed" and attempt["server_id"] == stack.tenant.server_id
    assert attempt["reply"]["code"] == 250
    assert [e["type"] for e in view["events"]] == ["email.queued", "email.sent"]
    assert view["from"] == "Jane <jane@example.com>" and view["message_id_header"].endswith("@example.com>")
    [received] = stack.smtp.handler.received
    assert received.mail_from == f"bounces+{recipient['id']}@bounce.example.com"
    assert received.rcpt_to == ("bob@example.org",)
    assert f"Message-ID: {view['message_id_header']}".encode() in received.data


def test_a_deferral_is_a_schedule_not_a_batch_failure(stack: Stack) -> None:
    stack.smtp.handler.script["soft@example.org"] = ("rcpt", "451 4.3.0 Temporary lookup failure")
    stack.smtp.handler.script["gone@example.org"] = ("rcpt", "550 5.1.1 <gone@example.org>: user unknown")
    sent = stack.send(to=["ok@example.org", "soft@example.org", "gone@example.org"])
    ids = {r["email"]: r["id"] for r in sent["recipients"]}
    records = stack.receive_records(3)

    result = stack.send_worker({"Records": records})

    assert result == {"batchItemFailures": []}  # SQS forgets the job: its receive count never grows
    assert stack.schedules() == [f"{ids['soft@example.org']}-1"]
    status = {m["email"]: m for m in stack.get(sent["id"])["recipients"]}
    assert status["ok@example.org"]["status"] == "relayed"
    assert status["soft@example.org"]["status"] == "deferred"
    assert status["soft@example.org"]["last_reply"]["enhanced"] == "4.3.0"
    assert status["gone@example.org"]["status"] == "bounced"
    assert status["gone@example.org"]["bounce_class"] == "hard"
    assert status["gone@example.org"]["last_reply"]["code"] == 550
    assert status["soft@example.org"]["next_attempt_at"] is not None
    assert stack.call("GET", "/v1/suppressions/gone@example.org").body["reason"] == "hard-bounce"

    del stack.smtp.handler.script["soft@example.org"]
    assert stack.fire_schedules() == 1 and stack.schedules() == []
    assert stack.pump() == 1
    assert stack.get(sent["id"])["recipients"][1]["status"] == "relayed"


def test_a_bounce_alone_is_not_a_batch_failure(stack: Stack) -> None:
    stack.smtp.handler.script["gone@example.org"] = ("rcpt", "550 5.1.1 user unknown")
    stack.send(to="gone@example.org")

    result = stack.send_worker({"Records": stack.receive_records(1)})

    assert result == {"batchItemFailures": []}


def test_idempotency_over_the_handler(stack: Stack) -> None:
    body = json.dumps(_email(subject="Invoice 42"))
    first = stack.call("POST", "/v1/emails", body, headers={"Idempotency-Key": "invoice-42"})
    again = stack.call("POST", "/v1/emails", body, headers={"Idempotency-Key": "invoice-42"})
    other = stack.call(
        "POST", "/v1/emails", json.dumps(_email(subject="Invoice 43")), headers={"Idempotency-Key": "invoice-42"}
    )

    assert first.status == again.status == 202
    assert again.raw == first.raw
    assert again.headers["Idempotency-Key"] == "invoice-42" and again.headers["Idempotent-Replayed"] == "true"
    assert other.status == 409
    assert other.headers["Content-Type"] == "application/problem+json"
    assert other.body["type"] == "urn:petrel:problem:idempotency-key-reused"
    listing = stack.call("GET", "/v1/emails").body
    assert [m["email_id"] for m in listing["data"]] == [first.body["id"]]
    assert stack.pump() == 1
    assert len(stack.smtp.handler.received) == 1


def test_another_tenants_key_cannot_see_the_email(stack: Stack) -> None:
    sent = stack.send()
    other = tenants.create_tenant(stack.admin, "Other")
    other_key = tenants.create_api_key(stack.admin, other.tenant_id).secret

    response = stack.call("GET", f"/v1/emails/{sent['id']}", key=other_key)

    assert response.status == 404
    assert response.body["type"] == "urn:petrel:problem:not-found"
    assert stack.call("GET", "/v1/emails", key=other_key).body["data"] == []
    assert stack.call("GET", f"/v1/emails/{sent['id']}").status == 200


def test_batch_with_one_valid_and_one_invalid_email(stack: Stack) -> None:
    response = stack.call("POST", "/v1/emails/batch", {"emails": [_email(), _email(to="not-an-address")]})

    assert response.status == 202
    first, second = response.body["results"]
    assert (first["index"], first["status"], first["error"]) == (0, 202, None)
    assert first["email"]["recipients"][0]["status"] == "queued"
    assert (second["index"], second["status"], second["email"]) == (1, 422, None)
    assert second["error"]["type"] == "urn:petrel:problem:invalid-request"
    assert [e["pointer"] for e in second["error"]["errors"]] == ["/emails/1/to/0"]  # absolute in the request
    assert stack.pump() == 1


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (_email(to=[]), ""),  # RFC 6901: the whole body
        (_email(subject="a\r\nBcc: eve@example.org"), "/subject"),
        (_email(headers={"Message-Id": "<x@y>"}), "/headers"),
        (_email(attachments=[{"filename": "a.txt", "content": "%%%"}]), "/attachments/0/content"),
        (_email(surprise=True), "/surprise"),
        (_email(text=None), ""),
    ],
)
def test_validation_failures_are_422_problems(stack: Stack, body: dict[str, Any], pointer: str) -> None:
    response = stack.call("POST", "/v1/emails", {k: v for k, v in body.items() if v is not None})

    assert response.status == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.body
    assert problem["type"] == "urn:petrel:problem:invalid-request" and problem["status"] == 422
    assert problem["instance"] == "/v1/emails" and problem["title"] and problem["detail"]
    assert pointer in [e["pointer"] for e in problem["errors"]]


def test_a_sender_domain_the_tenant_does_not_own(stack: Stack) -> None:
    response = stack.call("POST", "/v1/emails", _email(**{"from": "x@elsewhere.example"}))

    assert response.status == 422
    assert response.body["errors"][0]["pointer"] == "/from"


def test_malformed_json_is_400(stack: Stack) -> None:
    response = stack.call("POST", "/v1/emails", '{"from": "jane@example.com", ')

    assert response.status == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.body["type"] == "urn:petrel:problem:malformed-body"


def test_list_relayed_in_pages_of_one(stack: Stack) -> None:
    sent = [stack.send(subject=f"n{i}", to=f"user{i}@example.org") for i in range(3)]
    stack.pump()

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        query = {"status": "relayed", "limit": "1", **({"cursor": cursor} if cursor else {})}
        page = stack.call("GET", "/v1/emails", query=query)
        assert page.status == 200, page.raw
        seen += [m["id"] for m in page.body["data"]]
        assert all(m["status"] == "relayed" for m in page.body["data"])
        cursor = page.body["next_cursor"]
        if cursor is None:
            break

    assert seen == [s["recipients"][0]["id"] for s in reversed(sent)]  # newest first
    assert stack.call("GET", "/v1/emails", query={"status": "queued"}).body["data"] == []
    garbled = stack.call("GET", "/v1/emails", query={"status": "relayed", "cursor": "garbage"})
    assert garbled.status == 422
    bad_limit = stack.call("GET", "/v1/emails", query={"limit": "many"})
    assert bad_limit.status == 422


def test_authorizer_allows_a_valid_key(stack: Stack) -> None:
    policy = stack.authorize(f"Bearer {stack.key}", "POST", "/v1/emails")

    [statement] = policy["policyDocument"]["Statement"]
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{STAGE_ARN}/*"}
    assert policy["context"]["tenant_id"] == stack.tenant.tenant_id
    assert tuple(policy["context"]["scopes"].split()) == SCOPES  # a key made without scopes has all
    assert policy["principalId"].startswith("key_")
    assert stack.key not in json.dumps(policy)


def test_authorizer_refuses_revoked_unknown_and_missing_keys(stack: Stack) -> None:
    minted = tenants.create_api_key(stack.admin, stack.tenant.tenant_id, "to revoke")
    tenants.revoke_api_key(stack.admin, stack.tenant.tenant_id, minted.key.key_id)

    for header in (f"Bearer {minted.secret}", "Bearer ptl_unknown0000000000000000000000", "Basic eDp5", None):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            stack.authorize(header)


def test_a_large_body_goes_through_s3_intact(stack: Stack) -> None:
    stack.setenv(resources.INLINE_BODY_LIMIT_ENV, "2048")
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400))

    sent = stack.send(text=text)
    stack.pump()

    key = f"bodies/{stack.tenant.tenant_id}/{sent['id']}.eml"
    stored = stack.aws["s3"].get_object(Bucket=stack.made.bucket, Key=key)["Body"].read()
    assert len(stored) > 2048
    item = stack.aws["dynamodb"].get_item(
        TableName=stack.made.tables[resources.MESSAGES.name],
        Key={"pk": {"S": f"{stack.tenant.tenant_id}#{sent['id']}"}, "sk": {"S": "EMAIL"}},
    )["Item"]
    assert "body_inline" not in item and item["body_key"]["S"] == key
    [received] = stack.smtp.handler.received
    # the stored body, byte for byte, under the DKIM-Signature the worker prepends (the seeded domain's key)
    signature, _, rest = received.data.partition(b"\r\nFrom: ")
    assert signature.startswith(b"DKIM-Signature: ")
    assert (b"From: " + rest).rstrip(b"\r\n") == stored.rstrip(b"\r\n")
    assert stack.get(sent["id"])["recipients"][0]["status"] == "relayed"


def test_a_wrong_smtp_password_keeps_the_message_until_it_is_fixed(stack: Stack) -> None:
    stack.setenv(resources.CONFIG_CACHE_ENV, "0")
    stack.smtp.handler.password = "rotated-on-mailu"  # the operator changed it on the server only
    sent = stack.send()
    assert len(sent["recipients"]) == 1

    stack.pump()

    [deferred] = stack.get(sent["id"])["recipients"]
    assert deferred["status"] == "deferred"
    assert deferred["last_reply"]["code"] == 535 and deferred["last_reply"]["stage"] == "auth"
    assert stack.smtp.handler.received == []

    tenants.set_smtp_password(stack.admin, stack.tenant.tenant_id, stack.tenant.server_id, "rotated-on-mailu")
    assert stack.fire_schedules() == 1
    stack.pump()

    view = stack.get(sent["id"])
    [relayed] = view["recipients"]
    assert relayed["status"] == "relayed" and relayed["attempts"] == 2
    assert [a["outcome"] for a in relayed["attempt_log"]] == ["softfail", "relayed"]
    assert [e["type"] for e in view["events"]] == ["email.queued", "email.deferred", "email.sent"]
    assert len(stack.smtp.handler.received) == 1


def test_send_at_is_released_by_its_schedule_and_cancel_deletes_it(stack: Stack) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    keep = stack.send(send_at=later, subject="Keep")
    drop = stack.send(send_at=later, subject="Drop")
    assert keep["recipients"][0]["status"] == drop["recipients"][0]["status"] == "scheduled"
    assert len(stack.schedules()) == 2 and stack.pump() == 0

    cancelled = stack.call("DELETE", f"/v1/emails/{drop['id']}")
    assert cancelled.status == 200, cancelled.raw
    assert [c["status"] for c in cancelled.body["cancelled"]] == ["cancelled"]
    assert stack.schedules() == [f"{keep['id']}-release"]  # one schedule per email, not per recipient

    assert stack.fire_schedules(timedelta(minutes=30)) == 0  # not due yet
    assert stack.fire_schedules(timedelta(hours=3)) == 1
    assert stack.pump() == 2  # the release job, then the send job it queued
    assert stack.get(keep["id"])["recipients"][0]["status"] == "relayed"
    assert stack.get(drop["id"])["recipients"][0]["status"] == "cancelled"
    assert len(stack.smtp.handler.received) == 1
    again = stack.call("DELETE", f"/v1/emails/{keep['id']}")
    assert again.body["cancelled"] == [] and again.body["not_cancelled"][0]["status"] == "relayed"


def test_a_release_queues_every_scheduled_recipient_through_the_worker(stack: Stack) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    sent = stack.send(send_at=later, to=[f"r{i}@example.org" for i in range(12)])
    assert stack.schedules() == [f"{sent['id']}-release"]

    assert stack.fire_schedules(timedelta(hours=3)) == 1
    assert stack.pump() == 13  # one release, then twelve sends (two SendMessageBatch calls)
    assert {r["status"] for r in stack.get(sent["id"])["recipients"]} == {"relayed"}
    assert len(stack.smtp.handler.received) == 12


def test_the_sweeper_requeues_a_message_left_without_a_job(stack: Stack) -> None:
    stack.setenv(resources.SWEEP_GRACE_ENV, "0")
    sent = stack.send()
    # The API died between storing and enqueuing: the job never reached the queue.
    stack.aws["sqs"].purge_queue(QueueUrl=stack.queue_url())
    assert stack.pump() == 0
    time.sleep(2.1)  # due times are whole seconds, and a run looks at what is a whole second old at least

    # As the local stack's timer runs it (deployed: an EventBridge rule).
    report = Every(stack.sweeper, interval_seconds=60, function_name="sweeper").invoke()

    assert report["repaired"] == {"queued": 1} and report["requeue_failed"] == 0
    assert stack.pump() == 1
    assert stack.get(sent["id"])["recipients"][0]["status"] == "relayed"
    again = stack.sweeper({})  # final: out of the due index
    assert again["repaired"] == {} and again["examined"] == 0


def test_suppression_routes(stack: Stack) -> None:
    added = stack.call("POST", "/v1/suppressions", {"email": "Bob@Example.org", "note": "asked us to stop"})
    assert added.status == 201 and added.body["email"] == "bob@example.org" and added.body["reason"] == "manual"
    assert stack.call("POST", "/v1/suppressions", {"email": "bob@example.org"}).status == 409
    assert stack.call("GET", "/v1/suppressions/bob%40example.org").body["detail"] == "asked us to stop"
    assert [s["email"] for s in stack.call("GET", "/v1/suppressions").body["data"]] == ["bob@example.org"]

    sent = stack.send(to=["bob@example.org"])
    stack.pump()
    view = stack.get(sent["id"])
    assert view["recipients"][0]["status"] == "suppressed" and stack.smtp.handler.received == []
    assert [e["type"] for e in view["events"]] == ["email.queued", "email.suppressed"]

    removed = stack.call("DELETE", "/v1/suppressions/bob@example.org")
    assert removed.status == 204
    assert stack.call("GET", "/v1/suppressions/bob@example.org").status == 404
    bad = stack.call("POST", "/v1/suppressions", {"email": "not-an-address"})
    assert bad.status == 422 and bad.headers["Content-Type"] == "application/problem+json"


# The worker under faults (issue 7): poison jobs end in the DLQ and say so; the invocation's budget.


def _drop_body_from_s3(stack: Stack, email_id: str) -> None:
    stack.aws["s3"].delete_object(Bucket=stack.made.bucket, Key=f"bodies/{stack.tenant.tenant_id}/{email_id}.eml")


def _expire_lease(stack: Stack, email_id: str, message_id: str) -> None:
    """What the visibility timeout (longer than the lease) does between two receives of a job."""
    stack.aws["dynamodb"].update_item(
        TableName=stack.made.tables[resources.MESSAGES.name],
        Key={"pk": {"S": f"{stack.tenant.tenant_id}#{email_id}"}, "sk": {"S": f"MSG#{message_id}"}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )


def test_a_poison_job_ends_in_the_dlq_failed_and_a_redrive_runs_it(stack: Stack) -> None:
    from petrel.adapters.dead_letters import SqsDeadLetters
    from petrel.services.redrive import reopen_for_redrive

    stack.setenv(resources.INLINE_BODY_LIMIT_ENV, "1024")
    stack.setenv(resources.MAX_RECEIVE_COUNT_ENV, "3")  # the fixture's queues: maxReceiveCount 3
    sent = stack.send(text="x" * 4000)
    [recipient] = sent["recipients"]
    key = f"bodies/{stack.tenant.tenant_id}/{sent['id']}.eml"
    body = stack.aws["s3"].get_object(Bucket=stack.made.bucket, Key=key)["Body"].read()
    _drop_body_from_s3(stack, sent["id"])
    url = stack.queue_url()
    stack.aws["sqs"].set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})

    arn = stack.aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pump = QueuePump(stack.aws["sqs"], url, arn, stack.send_worker, function_name="send_worker")
    for receive in range(3):
        assert pump.poll_once() == 1  # the body is gone: the worker raises, SQS keeps the job
        view = stack.get(sent["id"])["recipients"][0]
        if receive < 2:
            assert view["status"] == "sending"
            _expire_lease(stack, sent["id"], recipient["id"])
    assert pump.poll_once() == 0  # on the third failed receive SQS moved it to the DLQ

    view = stack.get(sent["id"])
    [failed] = view["recipients"]
    assert failed["status"] == "failed" and failed["failure_reason"] == "worker-error"
    assert failed["attempts"] == 1  # one attempt, taken over twice
    assert (
        view["events"][-1]["type"] == "email.failed" and view["events"][-1]["detail"] == "worker-error: RecordNotFound"
    )
    letters = SqsDeadLetters(stack.aws["sqs"], "petrel-test", wait_seconds=0)
    [letter] = letters.peek(resources.SEND_TRANSACTIONAL.name)
    assert letter.job is not None and letter.job.message_id == recipient["id"] and letter.job.attempt == 0

    stack.aws["s3"].put_object(Bucket=stack.made.bucket, Key=key, Body=body)  # the cause is fixed
    redrive = stack.operator.redrive  # what `petrel dlq redrive` reopens the messages with
    report = letters.redrive(resources.SEND_TRANSACTIONAL.name, prepare=lambda job: reopen_for_redrive(redrive, job))
    assert len(report.moved) == 1 and report.left == []
    assert stack.get(sent["id"])["recipients"][0]["status"] == "queued"
    assert stack.pump() == 1

    view = stack.get(sent["id"])
    assert view["recipients"][0]["status"] == "relayed" and len(stack.smtp.handler.received) == 1
    assert [e["type"] for e in view["events"]] == ["email.queued", "email.failed", "email.queued", "email.sent"]
    assert view["events"][2]["detail"] == "redriven"


def test_an_error_before_the_last_receive_is_only_a_batch_failure(stack: Stack) -> None:
    stack.setenv(resources.INLINE_BODY_LIMIT_ENV, "1024")
    sent = stack.send(text="x" * 4000)
    _drop_body_from_s3(stack, sent["id"])
    [record] = stack.receive_records(1)
    record["attributes"]["ApproximateReceiveCount"] = "2"

    with pytest.raises(BatchProcessingError):  # the whole batch failed: Lambda reports an error
        stack.send_worker({"Records": [record]})

    assert stack.get(sent["id"])["recipients"][0]["status"] == "sending"  # its next receive takes it over


class StoppedClockContext(LocalContext):
    """A Lambda context whose remaining time does not run down: the worker's budget at its start is
    then exactly `timeout_seconds`, however long the machine takes to get there."""

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


def test_records_with_no_time_left_are_handed_back_not_failed(stack: Stack) -> None:
    stack.setenv(resources.SMTP_TRANSACTION_ENV, "10")
    stack.setenv(resources.INVOCATION_MARGIN_ENV, "1")
    stack.setenv(resources.HANDBACK_DELAY_ENV, "7")
    sent = stack.send(to=["first@example.org", "second@example.org"])
    records = stack.receive_records(2)
    deadlines: list[tuple[float | None, float]] = []  # (the relay's deadline, when the relay was called)
    relay = stack.worker.container.deliver.relay
    real = relay.relay

    def spy(*args: Any, deadline: float | None = None) -> Any:
        deadlines.append((deadline, time.monotonic()))
        return real(*args, deadline=deadline)

    stack.monkeypatch.setattr(relay, "relay", spy)
    invoked = time.monotonic()

    # 8 s left: the first record always starts; the second would need 10 s + 1 s.
    result = stack.send_worker({"Records": records}, StoppedClockContext("send_worker", timeout_seconds=8))

    assert result == {"batchItemFailures": []}  # acknowledged: its receive count is not charged
    statuses = [r["status"] for r in stack.get(sent["id"])["recipients"]]
    assert sorted(statuses) == ["queued", "relayed"]
    # The relay's deadline is the invocation's end (its start + the 8 s it had) less the 1 s margin; the
    # invocation started after `invoked` and before the relay was called.
    [(deadline, called)] = deadlines
    assert deadline is not None and invoked + 7 <= deadline <= called + 7
    attributes = stack.aws["sqs"].get_queue_attributes(
        QueueUrl=stack.queue_url(), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # back on the queue, after 7 s
    handed_back = json.loads(records[1]["body"])
    [queued] = [r for r in stack.get(sent["id"])["recipients"] if r["status"] == "queued"]
    assert queued["id"] == handed_back["message_id"]


def test_a_hand_back_the_queue_refuses_is_a_batch_failure(stack: Stack) -> None:
    stack.setenv(resources.SMTP_TRANSACTION_ENV, "10")
    stack.send(to=["first@example.org", "second@example.org"])
    records = stack.receive_records(2)
    stack.monkeypatch.setattr(stack.worker.container.queue, "send_jobs", lambda pool, jobs, delay_seconds=0: list(jobs))

    result = stack.send_worker({"Records": records}, LocalContext("send_worker", timeout_seconds=8))

    assert result == {"batchItemFailures": [{"itemIdentifier": records[1]["messageId"]}]}  # never lost


# -- the ingest side: reports, replies and the inbound API over the handlers ---------------------------


def push(stack: Stack, raw: bytes) -> Response:
    """POST /v1/inbound/raw as API Gateway delivers a binary body: base64, isBase64Encoded."""
    authorization = f"Bearer {stack.key}"
    policy = stack.authorize(authorization, "POST", "/v1/inbound/raw")
    event = {
        "resource": "/v1/{proxy+}",
        "path": "/v1/inbound/raw",
        "httpMethod": "POST",
        "headers": {"Authorization": authorization, "Content-Type": "message/rfc822"},
        "queryStringParameters": None,
        "pathParameters": {"proxy": "inbound/raw"},
        "body": base64.b64encode(raw).decode(),
        "isBase64Encoded": True,
        "requestContext": {
            "requestId": "req-push",
            "stage": "test",
            "httpMethod": "POST",
            "authorizer": {**policy["context"], "principalId": policy["principalId"]},
        },
    }
    result = stack.api(event)
    return Response(result["statusCode"], result["headers"], result["body"])


def pump_ingest(stack: Stack) -> int:
    """Run the ingest worker over the ingest queue, as Lambda's SQS event source would."""
    function = handlers.ingest_worker(stack.env, stack.clients())
    url = stack.made.queue_urls[resources.INGEST.name]
    arn = stack.aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def run(event: dict[str, Any], context: LocalContext) -> Any:
        return function.handler(event, context)

    handled = 0
    while count := QueuePump(stack.aws["sqs"], url, arn, run, function_name="ingest_worker").poll_once():
        handled += count
    return handled


def report(message_id: str, recipient: str, *, action: str, status: str, diagnostic: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        f"To: bounces+{message_id}@bounce.example.com\r\n"
        f"Subject: Delivery Status Notification\r\nMessage-ID: <dsn-{message_id}-{action}@mx.example.org>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n'
        "\r\n--R\r\nContent-Type: text/plain\r\n\r\nSee the report.\r\n"
        "\r\n--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\nOriginal-Envelope-Id: {message_id}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n"
        "\r\n--R--\r\n"
    ).encode()


def test_a_pushed_report_bounces_the_relayed_message(stack: Stack) -> None:
    sent = stack.send(to=["bob@example.org"])
    [recipient] = sent["recipients"]
    assert stack.pump() == 1
    view = stack.get(sent["id"])
    assert view["recipients"][0]["status"] == "relayed"
    assert view["recipients"][0]["return_path"] == f"bounces+{recipient['id']}@bounce.example.com"

    raw = report(
        recipient["id"], "bob@example.org", action="failed", status="5.1.1", diagnostic="550 5.1.1 no such user"
    )
    pushed = push(stack, raw)
    assert pushed.status == 202, pushed.raw
    inbound_id = pushed.body["id"]
    assert push(stack, raw).body["id"] == inbound_id  # the same bytes are the same message
    assert pump_ingest(stack) == 2

    bounced = stack.get(sent["id"])["recipients"][0]
    assert bounced["status"] == "bounced" and bounced["bounce_class"] == "hard"
    assert bounced["last_reply"]["code"] == 550 and bounced["last_reply"]["enhanced"] == "5.1.1"
    listed = stack.call("GET", "/v1/inbound", query={"email_id": sent["id"]}).body
    [item] = listed["data"]
    assert item["id"] == inbound_id and item["kind"] == "delivery_report"
    assert item["related"] == {"email_id": sent["id"], "message_id": recipient["id"]}
    one = stack.call("GET", f"/v1/inbound/{inbound_id}").body
    assert one["report"]["status"] == "5.1.1" and one["report"]["action"] == "failed"
    assert one["report"]["original_envelope_id"] == recipient["id"]
    suppressions = stack.call("GET", "/v1/suppressions").body["data"]
    assert [s["email"] for s in suppressions] == ["bob@example.org"]


def test_a_delivered_report_then_a_reply(stack: Stack) -> None:
    sent = stack.send(to=["carol@example.org"])
    [recipient] = sent["recipients"]
    stack.pump()
    push(stack, report(recipient["id"], "carol@example.org", action="delivered", status="2.0.0", diagnostic="250 ok"))
    header = stack.get(sent["id"])["message_id_header"]
    reply = (
        f"From: carol@example.org\r\nTo: jane@example.com\r\nSubject: Re: Hi\r\nMessage-ID: <r1@example.org>\r\n"
        f"In-Reply-To: {header}\r\nReferences: {header}\r\n\r\nSounds good.\r\n\r\n> Hello\r\n"
    ).encode()
    assert push(stack, reply).status == 202
    assert pump_ingest(stack) == 2

    view = stack.get(sent["id"])
    assert view["recipients"][0]["status"] == "delivered"
    types = [event["type"] for event in view["events"]]
    assert "email.delivered" in types and "email.replied" in types
    replies = stack.call("GET", "/v1/inbound", query={"kind": "reply"}).body["data"]
    assert len(replies) == 1
    one = stack.call("GET", f"/v1/inbound/{replies[0]['id']}").body
    assert one["reply_text"].strip() == "Sounds good." and one["in_reply_to"] == header
    assert json.dumps(one).count("Hello") >= 1  # the whole text is kept beside the reply's own
