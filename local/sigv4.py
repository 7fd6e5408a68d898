"""SigV4 verification for the local front's `/v1/admin/` paths: what API Gateway's `AWS_IAM` authorization
does deployed, done here with the local stack's one set of credentials.

The signature is recomputed with botocore's own `SigV4Auth` over the request as it arrived (method, path,
query, the headers the client says it signed, the body's SHA-256) and compared in constant time. What must
always hold: a request reaches the admin function only when its `Authorization` header is a well-formed
`AWS4-HMAC-SHA256` one, for the local access key, the configured region and the `execute-api` service,
dated within five minutes of now (`X-Amz-Date`, the same day as its scope), its body hash (when sent) the
body's, and its signature the one those credentials give. Anything else is refused with a reason that
names the failing part and never the expected signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)


class SignatureError(Exception):
    """The request is not signed, or not signed right: the front answers 403 with this text."""


@dataclass(frozen=True)
class SigningCredentials:
    """The one identity the local stack accepts (moto's and LocalStack's credentials)."""

    access_key: str
    secret_key: str
    region: str
    account: str = "000000000000"

    @property
    def user_arn(self) -> str:
        """The caller's ARN as the request context's `identity.userArn` carries it deployed."""
        return f"arn:aws:iam::{self.account}:user/{self.access_key}"


@dataclass(frozen=True)
class SignedRequest:
    """An incoming request as the front received it: `path` raw (as sent, percent-encoded), `query` the
    raw query string, `headers` as sent (any letter case)."""

    method: str
    host: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((str(v) for k, v in headers.items() if str(k).lower() == name), None)


def _parse(value: str | None) -> _Authorization:
    """The parts of an `Authorization` header, or a SignatureError saying what is missing."""
    if not value:
        raise SignatureError("the request is not signed: send it with AWS SigV4 (Authorization: AWS4-HMAC-SHA256 ...)")
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        raise SignatureError("the Authorization header is not an AWS4-HMAC-SHA256 signature")
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureError("the signature's credential scope is not <key>/<date>/<region>/<service>/aws4_request")
    signed = tuple(match["signed"].split(";"))
    if "host" not in signed or list(signed) != sorted(set(signed)):
        raise SignatureError("the signed headers must be sorted, distinct and include host")
    return _Authorization(scope[0], scope[1], scope[2], scope[3], signed, match["signature"])


def _timestamp(headers: Mapping[str, str], auth: _Authorization, now: datetime) -> str:
    """The request's X-Amz-Date, checked against the scope's date and the clock (5 minutes either way)."""
    value = _header(headers, "x-amz-date")
    if value is None or "x-amz-date" not in auth.signed_headers:
        raise SignatureError("the request has no signed X-Amz-Date header")
    try:
        at = datetime.strptime(value, _DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError(f"X-Amz-Date {value!r} is not of the form YYYYMMDDTHHMMSSZ") from None
    if value[:8] != auth.date:
        raise SignatureError("X-Amz-Date is not on the date of the signature's credential scope")
    if abs(now - at) > MAX_SKEW:
        raise SignatureError(f"the signature is dated {value}: more than 5 minutes from now (signature expired)")
    return value


def _body_hash(headers: Mapping[str, str], body: bytes) -> None:
    """A body hash the client sent must be the body's (API Gateway takes no unsigned payload)."""
    claimed = _header(headers, "x-amz-content-sha256")
    if claimed is not None and not hmac.compare_digest(claimed.lower(), hashlib.sha256(body).hexdigest()):
        raise SignatureError("X-Amz-Content-SHA256 is not the SHA-256 of the body")


def verify(request: SignedRequest, credentials: SigningCredentials, *, now: datetime | None = None) -> None:
    """Return when `request` carries a valid SigV4 signature by `credentials`; raise SignatureError otherwise."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = _parse(_header(request.headers, "authorization"))
    if not hmac.compare_digest(auth.access_key, credentials.access_key):
        raise SignatureError("the request is signed with an access key this stack does not know")
    if auth.region != credentials.region or auth.service != SERVICE:
        raise SignatureError(f"the signature is for {auth.region}/{auth.service}, not {credentials.region}/{SERVICE}")
    timestamp = _timestamp(request.headers, auth, now or datetime.now(UTC))
    _body_hash(request.headers, request.body)
    signed: dict[str, str] = {}
    for name in auth.signed_headers:
        value = request.host if name == "host" and _header(request.headers, "host") is None else None
        value = value if value is not None else _header(request.headers, name)
        if value is None:
            raise SignatureError(f"the signed header {name!r} is not in the request")
        signed[name] = value
    url = f"http://{signed['host']}{request.path}" + (f"?{request.query}" if request.query else "")
    aws_request = AWSRequest(method=request.method.upper(), url=url, data=request.body, headers=signed)
    aws_request.context["timestamp"] = timestamp
    signer = SigV4Auth(Credentials(credentials.access_key, credentials.secret_key), SERVICE, credentials.region)
    if signer.signed_headers(signer.headers_to_sign(aws_request)) != ";".join(auth.signed_headers):
        raise SignatureError("the signed headers include one SigV4 never signs")
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("the signature does not match the request (wrong secret key, or the request changed)")
