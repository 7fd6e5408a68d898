"""local.sigv4: the local front's SigV4 check, against requests botocore signed as the CLI signs them.

The invariant: `verify` returns only for a request signed by the local credentials, for this region and
`execute-api`, within five minutes, over exactly the method, path, query, signed headers and body that
arrived. Each test changes one of those and expects a refusal.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.sigv4 import SignatureError, SignedRequest, SigningCredentials, verify

HOST = "127.0.0.1:8080"
LOCAL = SigningCredentials("local", "local", "us-east-1")


def signed(
    method: str = "POST",
    path: str = "/v1/admin/tenants/tn_1/keys",
    body: bytes = b'{"name":"ci"}',
    *,
    query: str = "",
    key: tuple[str, str] = ("local", "local"),
    region: str = "us-east-1",
    service: str = "execute-api",
    headers: dict[str, str] | None = None,
) -> tuple[SignedRequest, datetime]:
    """A request botocore signed, as the front receives it (Host added by the HTTP client), and its time."""
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method=method, url=url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    SigV4Auth(Credentials(*key), service, region).add_auth(request)
    prepared = request.prepare()
    split = urlsplit(prepared.url)
    arrived = {**dict(prepared.headers), "Host": HOST}
    at = datetime.strptime(arrived["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return SignedRequest(method, HOST, split.path, split.query, arrived, body), at


def refused(request: SignedRequest, at: datetime, text: str, credentials: SigningCredentials = LOCAL) -> None:
    with pytest.raises(SignatureError, match=text):
        verify(request, credentials, now=at)


def test_a_request_signed_by_the_local_credentials_passes() -> None:
    request, at = signed()
    verify(request, LOCAL, now=at)
    listing, at = signed("GET", "/v1/admin/tenants/tn_1/keys", b"", query="prefix=ptl_abc&x=a%20b")
    verify(listing, LOCAL, now=at)
    encoded, at = signed("GET", "/v1/admin/domains/b%C3%BCcher.example", b"")
    verify(encoded, LOCAL, now=at)


def test_a_request_without_a_signature_is_refused() -> None:
    request, at = signed()
    unsigned = {k: v for k, v in request.headers.items() if k != "Authorization"}
    refused(replace(request, headers=unsigned), at, "not signed")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ptl_abc",
        "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/execute-api/aws4_request",
        "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/execute-api, SignedHeaders=host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/execute-api/aws4_request, "
        "SignedHeaders=x-amz-date;host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/execute-api/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=XYZ",
    ],
)
def test_a_garbled_authorization_header_is_refused(authorization: str) -> None:
    request, at = signed()
    refused(replace(request, headers={**request.headers, "Authorization": authorization}), at, ".")


def test_another_access_key_is_refused() -> None:
    request, at = signed(key=("AKIAOTHER", "local"))
    refused(request, at, "access key this stack does not know")


def test_a_wrong_secret_key_is_refused() -> None:
    request, at = signed(key=("local", "not-local"))
    refused(request, at, "does not match")


def test_another_region_or_service_is_refused() -> None:
    request, at = signed(region="eu-west-1")
    refused(request, at, "eu-west-1/execute-api")
    request, at = signed(service="s3")
    refused(request, at, "us-east-1/s3")


@pytest.mark.parametrize(
    "change",
    [
        lambda r: replace(r, body=b'{"name":"cj"}'),
        lambda r: replace(r, path="/v1/admin/tenants/tn_2/keys"),
        lambda r: replace(r, query="prefix=ptl_"),
        lambda r: replace(r, method="PUT"),
        lambda r: replace(r, headers={**r.headers, "Content-Type": "text/plain"}),
        lambda r: replace(r, headers={**r.headers, "Host": "127.0.0.1:9999"}),
    ],
    ids=["body", "path", "query", "method", "signed-header", "host"],
)
def test_a_request_changed_after_signing_is_refused(change: object) -> None:
    request, at = signed()
    refused(change(request), at, "does not match")  # type: ignore[operator]


def test_a_signature_more_than_five_minutes_off_is_refused_and_within_it_passes() -> None:
    request, at = signed()
    verify(request, LOCAL, now=at + timedelta(minutes=4, seconds=59))
    verify(request, LOCAL, now=at - timedelta(minutes=4, seconds=59))
    refused(request, at + timedelta(minutes=5, seconds=1), "expired")
    refused(request, at - timedelta(minutes=5, seconds=1), "expired")


def test_a_body_hash_that_is_not_the_bodys_is_refused() -> None:
    request, at = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    refused(request, at, "not the SHA-256 of the body")


def test_a_signed_header_missing_from_the_request_is_refused() -> None:
    request, at = signed()
    stripped = {k: v for k, v in request.headers.items() if k != "Content-Type"}
    refused(replace(request, headers=stripped), at, "'content-type' is not in the request")


def test_the_callers_arn_names_the_access_key() -> None:
    assert LOCAL.user_arn == "arn:aws:iam::000000000000:user/local"
