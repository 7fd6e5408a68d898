"""Key scopes and tenant isolation over HTTP, as deployed: the local front (local/front.py) runs the real
authorizer function, then the real API function, both on moto (DynamoDB holds the keys and the mail).

The invariants (tests/unit/test_scopes.py holds them over every scope with the fakes): a key without an
operation's scope gets a 403 naming it and nothing is done; a key with the scope passes; a key stored
before the scopes were split reaches every route; another tenant's items are 404s and never listed.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local import handlers
from local.front import ApiFront
from local.provision import provision
from petrel import resources
from petrel.api.app import ApiApplication
from petrel.api.routes import Operation
from petrel.container.admin import AdminContainer, AdminSettings
from petrel.container.base import AwsClients
from petrel.models.records import SCOPES
from petrel.services import tenants
from petrel.services.auth import mint_api_key
from tests.fakes import records
from tests.integration.aws_env import REGION, clean_aws_environment

RAW = b"From: bob@example.org\r\nMessage-ID: <r1@example.org>\r\nSubject: hi\r\n\r\nHi\r\n"
BOGUS = {"id": "x_01JD8X3Q4W5E6R7T8Y9V0W1X2P", "email": "nobody@example.org", "domain": "nothing.example"}


@dataclass
class Answer:
    status: int
    content_type: str
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None


@dataclass
class Front:
    """The local front on a free port, over the authorizer and API functions as `make run` wires them."""

    url: str
    admin: tenants.AdminDeps
    api: handlers.LocalFunction[Any]
    operations: list[Operation]

    def key(self, tenant_id: str, scopes: Sequence[str] | None = None) -> str:
        return mint_api_key(self.admin.tenants, self.admin.clock, tenant_id, scopes=scopes).secret

    def call(self, secret: str, method: str, path: str, body: Any = None, media: str = "application/json") -> Answer:
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": media}
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Answer(response.status, response.headers.get("Content-Type", ""), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers.get("Content-Type", ""), error.read())

    def operation(self, secret: str, operation: Operation, values: dict[str, str] = BOGUS) -> Answer:
        """`operation` on `values` with a body it could take (an empty JSON object, a raw message)."""
        body: Any = None
        if operation.takes_body:
            body = RAW if operation.media != "application/json" else {}
        path = re.sub(r"<(\w+)>", lambda m: values[m.group(1)], operation.rule)
        return self.call(secret, operation.method, path, body, operation.media)


@pytest.fixture
def front(monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session) -> Iterator[Front]:
    clean_aws_environment(monkeypatch)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        aws = {name: boto_session.client(name) for name in ("dynamodb", "sqs", "s3", "scheduler", "iam")}
        made = provision(
            aws["dynamodb"],
            aws["sqs"],
            aws["s3"],
            prefix="petrel-scopes",
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
        env = made.environment()
        api = handlers.api(env, AwsClients(boto_session))
        authorizer = handlers.authorizer(env, AwsClients(boto_session))
        server = ApiFront("127.0.0.1", 0, authorizer.handler, api.handler)
        server.start()
        try:
            operations = ApiApplication(api.container).operations.all
            yield Front(server.url, operator.admin, api, [o for o in operations if o.scope is not None])
        finally:
            server.stop()


def _tenant(front: Front, name: str) -> str:
    return tenants.create_tenant(front.admin, name).tenant_id


def test_a_read_only_key_cannot_send(front: Front) -> None:
    tenant = _tenant(front, "Acme")
    reader, full = front.key(tenant, ["read"]), front.key(tenant)
    email = {"from": "jane@acme.example", "to": ["bob@example.org"], "subject": "Hi", "text": "x"}

    refused = front.call(reader, "POST", "/v1/emails", email)

    assert refused.status == 403 and refused.content_type == "application/problem+json"
    assert refused.body["detail"] == "this API key does not have the 'send' scope"
    assert front.call(reader, "GET", "/v1/emails").body["data"] == []
    assert front.call(full, "GET", "/v1/emails").body["data"] == []  # nothing was stored


def test_each_operation_takes_its_own_scope_and_refuses_the_others(front: Front) -> None:
    tenant = _tenant(front, "Acme")
    assert front.operations
    for operation in front.operations:
        others = [scope for scope in SCOPES if scope != operation.scope]
        refused = front.operation(front.key(tenant, others), operation)
        assert refused.status == 403, (operation, refused)
        assert refused.body["detail"] == f"this API key does not have the '{operation.scope}' scope"
        passed = front.operation(front.key(tenant, [str(operation.scope)]), operation)
        assert passed.status not in (401, 403), (operation, passed)


def test_a_key_stored_with_the_old_scope_names_reaches_every_route(front: Front) -> None:
    tenant = _tenant(front, "Acme")
    minted = mint_api_key(front.admin.tenants, front.admin.clock, tenant)
    front.admin.tenants.put_api_key(minted.key.model_copy(update={"scopes": ("emails:send", "emails:read")}))
    [stored] = front.admin.tenants.list_api_keys(tenant)
    assert stored.scopes == ("emails:send", "emails:read") and stored.granted == SCOPES

    for operation in front.operations:
        answer = front.operation(minted.secret, operation)
        assert answer.status not in (401, 403), (operation, answer)


def test_another_tenants_key_neither_reads_nor_lists_nor_removes(front: Front) -> None:
    acme, beta = _tenant(front, "Acme"), _tenant(front, "Beta")
    acme_key, beta_key = front.key(acme), front.key(beta)
    email, messages = records.email(acme, ("rcpt@example.org",), from_address="jane@acme.example")
    front.api.container.messages.create_email(email, messages, expires_at=0)
    added = front.call(acme_key, "POST", "/v1/suppressions", {"email": "gone@example.org"})
    assert added.status == 201, added
    mine = [
        f"/v1/emails/{email.email_id}",
        f"/v1/messages/{messages[0].message_id}",
        "/v1/suppressions/gone@example.org",
    ]
    assert [front.call(acme_key, "GET", path).status for path in mine] == [200, 200, 200]

    for path in mine:
        assert front.call(beta_key, "GET", path).status == 404
    assert front.call(beta_key, "DELETE", f"/v1/emails/{email.email_id}").status == 404
    assert front.call(beta_key, "DELETE", "/v1/suppressions/gone@example.org").status == 404
    for listing in ("/v1/emails", "/v1/suppressions", "/v1/inbound"):
        assert front.call(beta_key, "GET", listing).body["data"] == []

    assert [front.call(acme_key, "GET", path).status for path in mine] == [200, 200, 200]
    assert front.call(acme_key, "GET", f"/v1/messages/{messages[0].message_id}").body["status"] == "queued"
    assert len(front.call(acme_key, "GET", "/v1/emails").body["data"]) == 1
