"""The admin API through the local front (local/front.py) over HTTP: SigV4-signed and unsigned requests.

The admin function runs as the local stack runs it (local.handlers.admin_api: its own settings from the
provisioned environment, its own container) on moto; the SMTP server whose password is rotated is a real
aiosmtpd submission server (STARTTLS + AUTH). What must hold: only a request signed with the local
credentials reaches the admin function (anything else is a 403 problem and changes nothing), and a
rotated password is stored only once the server accepted it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws

from local import handlers
from local.front import ApiFront
from local.provision import LocalResources, provision
from local.sigv4 import SigningCredentials
from petrel import resources
from petrel.container.base import AwsClients
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer, TlsFiles

pytestmark = pytest.mark.integration

LOCAL_KEYS = ("local", "local")
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass
class Answer:
    status: int
    content_type: str
    body: Any


def _deny(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An authorizer that refuses every API key: what reaches it is not an admin request."""
    return {"principalId": "nobody", "policyDocument": {"Statement": [{"Effect": "Deny"}]}}


def _no_api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise AssertionError("an admin request reached the tenant API")


@dataclass
class Front:
    url: str
    made: LocalResources
    session: boto3.session.Session

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        keys: tuple[str, str] | None = LOCAL_KEYS,
        at: datetime | None = None,
        sent_body: bytes | None = None,
    ) -> Answer:
        """`method path` with `body` as JSON, signed with `keys` (None: unsigned) at `at` (default: now);
        `sent_body` replaces the body after signing (a request changed on the way)."""
        data = json.dumps(body).encode() if body is not None else b""
        request = AWSRequest(
            method=method, url=self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        if keys is not None:
            _sign(request, Credentials(*keys), at or datetime.now(UTC))
        headers = {k: v for k, v in request.headers.items()}
        payload = sent_body if sent_body is not None else data
        prepared = urllib.request.Request(self.url + path, data=payload or None, headers=headers, method=method)
        try:
            with urllib.request.urlopen(prepared, timeout=30) as answer:
                status, content_type, raw = answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as answer:
            status, content_type, raw = answer.code, answer.headers["Content-Type"], answer.read()
        return Answer(status, content_type, json.loads(raw) if raw else None)

    def secret(self, name: str) -> str:
        value: str = self.session.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
        return value


def _sign(request: AWSRequest, credentials: Credentials, at: datetime) -> None:
    """SigV4 over `request` as botocore's SigV4Auth signs it, dated `at` (an old date: an expired one)."""
    signer = SigV4Auth(credentials, "execute-api", REGION)
    stamp = at.strftime(_STAMP)
    request.headers["X-Amz-Date"] = stamp
    request.context["timestamp"] = stamp
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{signer.credential_scope(request)}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


@pytest.fixture
def front(monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session) -> Iterator[Front]:
    clean_aws_environment(monkeypatch)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        resources.POWERTOOLS_METRICS_NAMESPACE_ENV: "PetrelTest",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        made = provision(
            boto_session.client("dynamodb"),
            boto_session.client("sqs"),
            boto_session.client("s3"),
            prefix="petrel-test",
            visibility_timeout=30,
            max_receive_count=3,
            scheduler=boto_session.client("scheduler"),
            iam=boto_session.client("iam"),
        )
        admin = handlers.admin_api(made.environment(), AwsClients(boto_session))
        server = ApiFront(
            "127.0.0.1",
            0,
            _deny,
            _no_api,
            admin=admin.handler,
            credentials=SigningCredentials(*LOCAL_KEYS, REGION),
        )
        server.start()
        try:
            yield Front(server.url, made, boto_session)
        finally:
            server.stop()


def _refused(answer: Answer, text: str) -> None:
    assert answer.status == 403, answer
    assert answer.content_type == "application/problem+json"
    assert answer.body["type"] == "urn:petrel:problem:signature-invalid" and text in answer.body["detail"]


def test_a_signed_request_reaches_the_admin_api(front: Front) -> None:
    created = front.send("POST", "/v1/admin/tenants", {"name": "Acme", "daily_quota": 500})
    assert created.status == 201, created
    tenant = created.body
    assert (tenant["name"], tenant["daily_quota"], tenant["status"]) == ("Acme", 500, "active")
    shown = front.send("GET", f"/v1/admin/tenants/{tenant['tenant_id']}")
    assert (shown.status, shown.body) == (200, tenant)
    missing = front.send("GET", "/v1/admin/tenants/tn_nobody")
    assert missing.status == 404 and missing.content_type == "application/problem+json"


def test_unsigned_and_badly_signed_requests_are_refused_and_change_nothing(front: Front) -> None:
    _refused(front.send("POST", "/v1/admin/tenants", {"name": "Unsigned"}, keys=None), "not signed")
    _refused(front.send("POST", "/v1/admin/tenants", {"name": "Wrong"}, keys=("local", "guess")), "does not match")
    _refused(front.send("POST", "/v1/admin/tenants", {"name": "Other"}, keys=("AKIAOTHER", "local")), "access key")
    old = datetime.now(UTC) - timedelta(minutes=6)
    _refused(front.send("POST", "/v1/admin/tenants", {"name": "Late"}, at=old), "expired")
    _refused(
        front.send("POST", "/v1/admin/tenants", {"name": "Small"}, sent_body=json.dumps({"name": "Large"}).encode()),
        "does not match",
    )
    assert front.send("GET", "/v1/admin/tenants").body == {"tenants": []}


def test_a_tenant_path_still_goes_through_the_api_key_authorizer(front: Front) -> None:
    answer = front.send("GET", "/v1/emails", keys=None)
    assert answer.status == 401 and answer.body["type"] == "urn:petrel:problem:unauthorized"


def test_a_rotated_password_is_stored_only_once_the_real_server_takes_it(
    front: Front, submission_server: RunningServer, tls_files: TlsFiles
) -> None:
    tenant_id = front.send("POST", "/v1/admin/tenants", {"name": "Acme"}).body["tenant_id"]
    added = front.send(
        "POST",
        f"/v1/admin/tenants/{tenant_id}/servers",
        {
            "host": submission_server.host,
            "port": submission_server.port,
            "username": USERNAME,
            "password": PASSWORD,
            "ca_bundle": tls_files.ca_pem,
        },
    )
    assert added.status == 201, added
    server_id = added.body["server_id"]
    base = f"/v1/admin/tenants/{tenant_id}/servers/{server_id}"
    tested = front.send("POST", f"{base}/test")
    assert tested.body["ok"] is True, tested
    [secret_name] = [s.secret_name for s in _servers(front, tenant_id)]  # the table the function wrote
    submission_server.handler.password = "the new password"  # changed on the server first
    wrong = front.send("PUT", f"{base}/password", {"password": "a mistyped password"})
    assert wrong.status == 422 and "535" in wrong.body["detail"], wrong
    assert front.secret(secret_name) == PASSWORD
    right = front.send("PUT", f"{base}/password", {"password": "the new password"})
    assert right.status == 200 and "the new password" not in json.dumps(right.body)
    assert front.secret(secret_name) == "the new password"
    assert front.send("POST", f"{base}/test").body["ok"] is True
    outcomes = [ok for _, ok in submission_server.handler.logins]  # smtplib may try two mechanisms per refusal
    assert outcomes.count(True) == 3 and outcomes[0] and outcomes[-2:] == [True, True] and not all(outcomes)


def _servers(front: Front, tenant_id: str) -> list[Any]:
    from petrel.adapters.dynamodb import DynamoTenantStore

    table = front.made.tables[resources.TENANTS.name]
    return DynamoTenantStore(front.session.client("dynamodb"), table).list_servers(tenant_id)
