"""The HTTP front: requests on 127.0.0.1 become API Gateway REST proxy events, as deployed.

It runs the REQUEST authorizer first (except on the public routes: the OpenAPI document and Swagger UI
at /v1/docs), then the API function, and answers a refused key with the same problem document the
deployed gateway response gives. `/v1/admin` paths go to the admin function instead, only once their
SigV4 signature checks out with the local credentials (local.sigv4, what API Gateway's AWS_IAM does
deployed); a missing, wrong or expired signature is a 403 problem.

With a `TenantThrottle`, it also does what the usage plans do deployed: each tenant's requests (keyed by
the authorizer's `usageIdentifierKey`) take a token from a bucket with its API plan's rate and burst, and
a request that finds none is refused with 429 `too-many-requests` (with `Retry-After`) before the api
function runs; a tenant whose plan is not one of the plans is refused with 403, as API Gateway refuses a
key in no usage plan.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.lambda_runtime import Handler, LocalContext
from local.sigv4 import SignatureError, SignedRequest, SigningCredentials, verify
from petrel.api.http import problem_body, single_value_headers
from petrel.api.openapi import PUBLIC_PATHS
from petrel.errors import RequestTooLarge, TooManyRequests
from petrel.models.api import MAX_REQUEST_BYTES

log = logging.getLogger("petrel.local")
UNAUTHORIZED = {
    "type": "urn:petrel:problem:unauthorized",
    "title": "Missing or invalid API key",
    "status": 401,
    "detail": "send a valid API key as `Authorization: Bearer <key>`",
}
ADMIN_PREFIX = "/v1/admin"
# What a refused signature is answered with (the detail says which part failed).
SIGNATURE_PROBLEM = {
    "type": "urn:petrel:problem:signature-invalid",
    "title": "Missing or invalid AWS signature",
    "status": 403,
}


# What API Gateway answers a key that is in no usage plan (infra/constructs/api.py: INVALID_API_KEY).
NOT_ENROLLED = {
    "type": "about:blank",
    "title": "Forbidden",
    "status": 403,
    "detail": "Forbidden: the tenant is not enrolled in an API plan (petrel tenant enroll)",
}
# How long the throttle keeps a tenant's plan before it reads it again (a changed plan applies then).
PLAN_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class PlanLimits:
    """A usage plan's per-tenant throttle: steady requests per second, and requests at once."""

    rate_per_second: float
    burst: int


@dataclass
class _Bucket:
    limits: PlanLimits
    tokens: float
    at: float


class TenantThrottle:
    """A token bucket per usage key with its tenant's plan's rate and burst (what API Gateway's usage plan
    throttle does per API key). `plan_of(tenant_id)` names the tenant's plan (None: no such tenant);
    it is asked again after `PLAN_CACHE_SECONDS`. Thread-safe: the front serves requests in threads."""

    def __init__(
        self,
        plans: Mapping[str, PlanLimits],
        plan_of: Callable[[str], str | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plans = dict(plans)
        self._plan_of = plan_of
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._known: dict[str, tuple[str | None, float]] = {}  # tenant -> (plan, when read)

    def _plan(self, tenant_id: str, now: float) -> str | None:
        cached = self._known.get(tenant_id)
        if cached is not None and now - cached[1] < PLAN_CACHE_SECONDS:
            return cached[0]
        plan = self._plan_of(tenant_id)
        self._known[tenant_id] = (plan, now)
        return plan

    def take(self, usage_key: str, tenant_id: str) -> float | None:
        """Take one token: None when there was one, else the seconds until there is one again.
        KeyError when the tenant's plan is none of the plans (not enrolled)."""
        with self._lock:
            now = self._clock()
            plan = self._plan(tenant_id, now)
            if plan is None or plan not in self._plans:
                raise KeyError(f"tenant {tenant_id!r} is on no known plan ({plan!r})")
            limits = self._plans[plan]
            bucket = self._buckets.get(usage_key)
            if bucket is None or bucket.limits != limits:  # new, or its plan changed: starts full
                bucket = self._buckets[usage_key] = _Bucket(limits, float(limits.burst), now)
            bucket.tokens = min(float(limits.burst), bucket.tokens + (now - bucket.at) * limits.rate_per_second)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / limits.rate_per_second


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def _discard(request: BaseHTTPRequestHandler, length: int) -> None:
    while length > 0:
        chunk = request.rfile.read(min(length, 1 << 20))
        if not chunk:
            return
        length -= len(chunk)


class ApiFront:
    def __init__(
        self,
        host: str,
        port: int,
        authorizer: Handler,
        api: Handler,
        stage: str = "api",
        *,
        admin: Handler | None = None,
        credentials: SigningCredentials | None = None,
        throttle: TenantThrottle | None = None,
    ) -> None:
        """`admin` (with the `credentials` its callers must sign with): the admin function, for
        `/v1/admin` paths; without it those paths go to the API like any other. `throttle`: each
        tenant's requests limited by its API plan, as the usage plans do deployed (None: no limit)."""
        if admin is not None and credentials is None:
            raise ValueError("the admin function needs the credentials its callers sign with")
        front = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                front.serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def __getattr__(self, name: str) -> Any:
                # Any other method (HEAD, OPTIONS, BREW ...) goes to the API as deployed (API Gateway's
                # ANY method), which answers it with a 405 problem document.
                if name.startswith("do_") and name[3:].isalpha() and name[3:].isupper():
                    return self._serve
                raise AttributeError(name)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """What the HTTP server itself refuses (a malformed request line, an over-long header)
                is a problem document too, never an HTML page."""
                status = HTTPStatus(code)
                document = {
                    "type": f"urn:petrel:problem:http-{code}",
                    "title": status.phrase,
                    "status": code,
                    "detail": message or status.description,
                }
                self.close_connection = True
                front._reply(
                    self,
                    code,
                    json.dumps(document),
                    {"Content-Type": "application/problem+json", "Connection": "close"},
                )

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self._authorizer = authorizer
        self._api = api
        self._admin = admin
        self._credentials = credentials
        self._stage = stage
        self._throttle = throttle
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="api-front", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        split = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            # Refused as the deployed API refuses it: the same problem document. The body is read and
            # dropped (a client that is still sending would otherwise never see the answer).
            _discard(request, length)
            too_large = RequestTooLarge(
                f"the body is {length} bytes; the API takes at most {MAX_REQUEST_BYTES}: "
                "upload large files first (POST /v1/attachments) and reference them by attachment_id"
            )
            request.close_connection = True
            self._reply(
                request,
                too_large.status,
                json.dumps(problem_body(too_large, split.path)),
                {"Content-Type": "application/problem+json", "Connection": "close"},
            )
            return
        body = request.rfile.read(length) if length else b""
        headers = {k: v for k, v in request.headers.items()}
        request_id = str(uuid.uuid4())
        # `path` as a custom domain gives it (no stage prefix): Swagger UI's server is then the root.
        context: dict[str, Any] = {
            "requestId": request_id,
            "stage": self._stage,
            "httpMethod": request.command,
            "path": split.path,
        }
        if self._admin is not None and is_admin_path(split.path):
            self._serve_admin(request, body, headers, context)
            return
        if split.path not in PUBLIC_PATHS:
            auth_event = {
                "type": "REQUEST",
                "methodArn": (
                    f"arn:aws:execute-api:us-east-1:000000000000:local/{self._stage}/{request.command}{split.path}"
                ),
                "resource": "/v1/{proxy+}",
                "path": split.path,
                "httpMethod": request.command,
                "headers": headers,
            }
            try:
                policy = self._authorizer(auth_event, LocalContext("authorizer"))
                allowed = policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
            except Exception:
                allowed = False
            if not allowed:
                self._reply(request, 401, json.dumps(UNAUTHORIZED), {"Content-Type": "application/problem+json"})
                return
            context["authorizer"] = {**policy.get("context", {}), "principalId": policy.get("principalId")}
            if self._throttle is not None and not self._admit(request, policy, split.path):
                return
        event = {
            "resource": "/v1/{proxy+}",
            "path": split.path,
            "httpMethod": request.command,
            "headers": headers,
            "queryStringParameters": dict(parse_qsl(split.query)) or None,
            "pathParameters": {"proxy": split.path.removeprefix("/v1/")},
            # Deployed, every body reaches the function base64-encoded (binary media type */*).
            "body": base64.b64encode(body).decode("ascii") if body else None,
            "isBase64Encoded": bool(body),
            "requestContext": context,
        }
        result = self._api(event, LocalContext("api"))
        self._reply(request, int(result["statusCode"]), result.get("body") or "", single_value_headers(result))

    def _admit(self, request: BaseHTTPRequestHandler, policy: Mapping[str, Any], path: str) -> bool:
        """The throttle's verdict on an authorized request; a refusal is answered here."""
        assert self._throttle is not None
        tenant_id = str((policy.get("context") or {}).get("tenant_id") or "")
        usage_key = str(policy.get("usageIdentifierKey") or "")
        try:
            if not usage_key:  # as deployed: with key source AUTHORIZER, no usage key is no plan
                raise KeyError("no usage identifier key")
            wait = self._throttle.take(usage_key, tenant_id)
        except KeyError:
            document = {**NOT_ENROLLED, "instance": path}
            self._reply(request, 403, json.dumps(document), {"Content-Type": "application/problem+json"})
            return False
        if wait is None:
            return True
        seconds = max(1, math.ceil(wait))
        refused = TooManyRequests(
            f"the tenant's API plan allows no more requests now: retry in {seconds} s", retry_after=seconds
        )
        headers = {"Content-Type": "application/problem+json", **refused.headers()}
        self._reply(request, refused.status, json.dumps(problem_body(refused, path)), headers)
        return False

    def _serve_admin(
        self, request: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str], context: dict[str, Any]
    ) -> None:
        """An admin request: verified as API Gateway's AWS_IAM does, then the admin function, whose request
        context carries the caller's identity (the signing access key's user)."""
        assert self._admin is not None and self._credentials is not None
        split = urlsplit(request.path)
        host = headers.get("Host") or headers.get("host") or ""
        signed = SignedRequest(request.command, host, split.path, split.query, headers, body)
        try:
            verify(signed, self._credentials)
        except SignatureError as refused:
            document = {**SIGNATURE_PROBLEM, "detail": str(refused), "instance": split.path}
            self._reply(request, 403, json.dumps(document), {"Content-Type": "application/problem+json"})
            return
        context["identity"] = {
            "userArn": self._credentials.user_arn,
            "caller": self._credentials.access_key,
            "accessKey": self._credentials.access_key,
            "accountId": self._credentials.account,
        }
        event = {
            "resource": ADMIN_PREFIX + "/{proxy+}",
            "path": split.path,
            "httpMethod": request.command,
            "headers": headers,
            "queryStringParameters": dict(parse_qsl(split.query)) or None,
            "pathParameters": {"proxy": split.path.removeprefix(ADMIN_PREFIX + "/")},
            "body": base64.b64encode(body).decode("ascii") if body else None,
            "isBase64Encoded": bool(body),
            "requestContext": context,
        }
        result = self._admin(event, LocalContext("admin-api"))
        self._reply(request, int(result["statusCode"]), result.get("body") or "", single_value_headers(result))

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: str, headers: dict[str, str]) -> None:
        payload = body.encode("utf-8")
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD":  # a HEAD answer has headers only
            request.wfile.write(payload)
