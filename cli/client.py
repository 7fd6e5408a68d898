"""`AdminClient`: the CLI's way to the admin API (`/v1/admin/...`), every request signed with SigV4.

The admin API is authorized by IAM (API Gateway's AWS_IAM deployed; the local front verifies the same
signature with the local credentials), so the client signs each request with botocore's SigV4Auth for
the service `execute-api`. Answers are JSON; an error answer (an RFC 9457 problem, or API Gateway's
own `{"message": ...}`) becomes a `CliError` of one line. The transport is a function so tests can
hand the request to the admin application in process, without a socket.

Passwords travel only in request bodies, over the signed request; nothing here logs or prints a body.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from cli.errors import CliError

SERVICE = "execute-api"
ADMIN_PREFIX = "/v1/admin"
DEFAULT_TIMEOUT = 30.0
_MAX_ERROR_DETAILS = 3  # a problem's `errors` entries quoted in the one line


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


class Unreachable(Exception):
    """Nothing answered at the URL (connection refused, unknown host): the transport's to raise."""


class TimedOut(Exception):
    """The server did not answer in time: the transport's to raise."""


Transport = Callable[[HttpRequest, float], HttpResponse]


class ApiError(CliError):
    """An error answer of the admin API, as one line; `status` for the callers that branch on it."""

    def __init__(self, status: int, line: str, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(line)
        self.status = status
        self.problem = dict(problem or {})


def urllib_transport(request: HttpRequest, timeout: float) -> HttpResponse:
    """The request over HTTP(S) with urllib; error statuses are answers too (their body is the problem)."""
    if urlsplit(request.url).scheme not in ("http", "https"):
        raise Unreachable(f"not an HTTP(S) URL: {request.url}")
    opener = _opener(request.url)
    prepared = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        request.url, data=request.body, headers=dict(request.headers), method=request.method
    )
    try:
        with opener.open(prepared, timeout=timeout) as answer:
            return HttpResponse(answer.status, _lower(answer.headers.items()), answer.read())
    except urllib.error.HTTPError as answer:
        with answer:
            return HttpResponse(answer.code, _lower(answer.headers.items()), answer.read())
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TimedOut(str(exc.reason)) from None
        raise Unreachable(str(exc.reason)) from None
    except TimeoutError as exc:
        raise TimedOut(str(exc)) from None
    except ConnectionError as exc:
        raise Unreachable(str(exc)) from None


def _opener(url: str) -> urllib.request.OpenerDirector:
    """No proxy for the local stack on loopback (a proxy from the environment could not reach it)."""
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _lower(items: Sequence[tuple[str, str]] | Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


def segment(value: str) -> str:
    """One path segment, percent-encoded (an id or a domain never holds `/`, but nothing is trusted)."""
    return quote(value, safe="")


@dataclass
class AdminClient:
    """JSON requests to the admin API of one environment, signed as `credentials` in `region`.

    `base_url` is where `/v1/...` starts: the local front's URL, or the deployed stage's URL (the
    stack's `ApiUrl` output, which ends with the stage)."""

    base_url: str
    region: str
    credentials: Credentials | ReadOnlyCredentials
    transport: Transport = urllib_transport
    timeout: float = DEFAULT_TIMEOUT
    unreachable_advice: str | None = None  # the one line when nothing answers (locally: start `make run`)
    _signer: SigV4Auth | None = field(default=None, init=False, repr=False)

    def get(self, path: str, query: Mapping[str, str | None] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {}, timeout=timeout)

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, body)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def url(self, path: str, query: Mapping[str, str | None] | None = None) -> str:
        """The full URL of an admin path (`/tenants/...`, under /v1/admin)."""
        wanted = {name: value for name, value in (query or {}).items() if value is not None}
        suffix = f"?{urlencode(sorted(wanted.items()))}" if wanted else ""
        return f"{self.base_url.rstrip('/')}{ADMIN_PREFIX}{path}{suffix}"

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str | None] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty one, e.g. 204); an error answer raises ApiError."""
        signed = self.sign(method, self.url(path, query), body)
        wait = timeout or self.timeout
        try:
            response = self.transport(signed, wait)
        except Unreachable as exc:
            raise CliError(self.unreachable_advice or f"cannot reach the admin API at {self.base_url}: {exc}") from None
        except TimedOut:
            raise CliError(f"the admin API at {self.base_url} did not answer within {wait:g} s") from None
        if response.status >= 400:
            raise error_of(response)
        return _json(response) if response.body else None

    def sign(self, method: str, url: str, body: Mapping[str, Any] | None) -> HttpRequest:
        """The request with its SigV4 headers (X-Amz-Date, Authorization, and the session token if any)."""
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        prepared = AWSRequest(method=method, url=url, data=data, headers=headers)
        if self._signer is None:
            self._signer = SigV4Auth(self.credentials, SERVICE, self.region)
        self._signer.add_auth(prepared)
        return HttpRequest(method, url, {str(k): str(v) for k, v in prepared.headers.items()}, data)


def _json(response: HttpResponse) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        raise CliError(f"the admin API answered {response.status} with a body that is not JSON") from None


def error_of(response: HttpResponse) -> ApiError:
    """One line for an error answer: "<title>: <detail>" of a problem (with the first `errors` entries'
    details the detail does not already quote), API Gateway's `message`, or the bare status."""
    try:
        document = json.loads(response.body) if response.body else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    title = str(document.get("title") or "").strip()
    detail = str(document.get("detail") or document.get("message") or document.get("Message") or "").strip()
    if title and detail.lower().startswith(title.lower()):
        title = ""  # the detail says it already ("The request is not valid: the request is not valid: ...")
    parts = [part for part in (title, detail) if part]
    line = ": ".join(parts) if parts else f"the admin API answered HTTP {response.status}"
    extra = [
        text for text in _error_details(document.get("errors"))[:_MAX_ERROR_DETAILS] if text and text not in detail
    ]
    if extra:
        line = f"{line} ({'; '.join(extra)})"
    return ApiError(response.status, " ".join(line.split()), document)


def _error_details(errors: Any) -> list[str]:
    if not isinstance(errors, list):
        return []
    details = []
    for item in errors:
        if isinstance(item, dict):
            where = item.get("pointer") or item.get("parameter")
            text = str(item.get("detail") or "").strip()
            details.append(f"{where}: {text}" if where and text else text)
    return details
