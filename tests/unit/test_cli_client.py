"""cli.client (the admin API's SigV4-signed JSON client) and cli.target's admin endpoint: what is signed,
where requests go, and how every error answer becomes one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from cli.client import (
    AdminClient,
    ApiError,
    HttpRequest,
    HttpResponse,
    TimedOut,
    Unreachable,
    error_of,
    segment,
    urllib_transport,
)
from cli.command import Context
from cli.errors import CliError
from cli.main import EXIT_FAILED, EXIT_REFUSED, explain
from cli.target import LOCAL, LOCAL_DOWN, Target, local_target, stack_output
from local.sigv4 import SignatureError, SignedRequest, SigningCredentials, verify
from tests.unit.cli_fakes import SETTINGS

REGION = "eu-west-1"
KEYS = SigningCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", REGION)


class Recorder:
    """A transport that keeps each request and answers what it is told to."""

    def __init__(self, *answers: HttpResponse | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[HttpRequest] = []
        self.timeouts: list[float] = []

    def __call__(self, request: HttpRequest, timeout: float) -> HttpResponse:
        self.requests.append(request)
        self.timeouts.append(timeout)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _json(status: int, body: Any, content_type: str = "application/json") -> HttpResponse:
    return HttpResponse(status, {"content-type": content_type}, json.dumps(body).encode())


def _client(
    transport: Recorder, base_url: str = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/", **kw: Any
) -> AdminClient:
    credentials = Credentials(KEYS.access_key, KEYS.secret_key, kw.pop("token", None))
    return AdminClient(base_url, REGION, credentials, transport=transport, **kw)


def _verify(request: HttpRequest, body: bytes | None = None) -> None:
    """The local front's check of the request as sent (urllib adds Host from the URL)."""
    from urllib.parse import urlsplit

    split = urlsplit(request.url)
    headers = {**request.headers, "Host": split.netloc}
    payload = request.body if body is None else body
    verify(SignedRequest(request.method, split.netloc, split.path, split.query, headers, payload or b""), KEYS)


# signing and URLs


def test_every_request_is_signed_for_execute_api_over_its_method_path_query_and_body() -> None:
    transport = Recorder(_json(201, {"tenant_id": "tn_1"}), _json(200, {"keys": []}))
    client = _client(transport)

    assert client.post("/tenants", {"name": "Acme"}) == {"tenant_id": "tn_1"}
    client.get("/tenants/tn_1/keys", {"prefix": "ptl_ab cd", "unused": None})

    created, listed = transport.requests
    assert created.url == "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/v1/admin/tenants"
    assert listed.url.endswith("/prod/v1/admin/tenants/tn_1/keys?prefix=ptl_ab+cd")
    assert created.headers["Content-Type"] == "application/json" and json.loads(created.body or b"") == {"name": "Acme"}
    authorization = created.headers["Authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEYS.access_key}/")
    assert f"/{REGION}/execute-api/aws4_request" in authorization and "host" in authorization
    for request in (created, listed):
        _verify(request)  # what the local front (and API Gateway) recompute
    with pytest.raises(SignatureError, match="does not match"):
        _verify(created, body=b'{"name":"Evil"}')  # the body is covered by the signature


def test_temporary_credentials_send_their_session_token() -> None:
    transport = Recorder(_json(200, {"tenants": []}))
    _client(transport, token="session-token").get("/tenants")
    [request] = transport.requests
    assert request.headers["X-Amz-Security-Token"] == "session-token"


def test_a_path_segment_is_percent_encoded() -> None:
    assert segment("tn_1") == "tn_1"
    assert segment("a/b c") == "a%2Fb%20c"


def test_an_empty_answer_is_none_and_a_body_that_is_not_json_is_one_line() -> None:
    transport = Recorder(HttpResponse(204, {}, b""), HttpResponse(200, {}, b"<html>"))
    client = _client(transport)
    assert client.delete("/tenants/tn_1/servers/srv_1") is None
    with pytest.raises(CliError, match=r"^the admin API answered 200 with a body that is not JSON$"):
        client.get("/tenants")


# errors, one line each


@pytest.mark.parametrize(
    ("status", "body", "line"),
    [
        (404, {"title": "Not found", "status": 404, "detail": "no tenant 'tn_x'"}, "Not found: no tenant 'tn_x'"),
        (
            422,
            {
                "title": "The request is not valid",
                "detail": "the request body is not valid: /port: too big",
                "errors": [{"pointer": "/port", "detail": "too big"}, {"pointer": "/host", "detail": "empty"}],
            },
            "The request is not valid: the request body is not valid: /port: too big (/host: empty)",
        ),
        (
            409,
            {"title": "Conflict", "detail": "the domain\n  acme.example is taken"},
            "Conflict: the domain acme.example is taken",
        ),
        (403, {"message": "Missing Authentication Token"}, "Missing Authentication Token"),
        (
            403,
            {"Message": "User: arn:aws:iam::1:user/x is not authorized"},
            "User: arn:aws:iam::1:user/x is not authorized",
        ),
        (502, None, "the admin API answered HTTP 502"),
    ],
)
def test_an_error_answer_is_one_line(status: int, body: Any, line: str) -> None:
    raw = json.dumps(body).encode() if body is not None else b""
    error = error_of(HttpResponse(status, {"content-type": "application/problem+json"}, raw))
    assert (str(error), error.status) == (line, status)


def test_an_error_answer_raises_and_its_status_decides_the_exit_status() -> None:
    transport = Recorder(
        _json(404, {"title": "Not found", "detail": "no tenant 'tn_x'"}),
        _json(500, {"title": "Internal error", "detail": "request r1"}),
    )
    client = _client(transport)
    with pytest.raises(ApiError) as missing:
        client.get("/tenants/tn_x")
    with pytest.raises(ApiError) as broken:
        client.get("/tenants")
    assert explain(missing.value, local=True) == ("Not found: no tenant 'tn_x'", EXIT_REFUSED)
    assert explain(broken.value, local=True) == ("Internal error: request r1", EXIT_FAILED)


def test_nothing_listening_is_the_local_advice_locally_and_the_url_deployed() -> None:
    local = _client(
        Recorder(Unreachable("[Errno 111] Connection refused")), "http://127.0.0.1:9", unreachable_advice=LOCAL_DOWN
    )
    deployed = _client(Recorder(Unreachable("[Errno -2] Name or service not known")))
    with pytest.raises(CliError, match=f"^{LOCAL_DOWN}$".replace("(", r"\(").replace(")", r"\)")):
        local.get("/tenants")
    with pytest.raises(CliError, match=r"^cannot reach the admin API at https://abc123\..*: \[Errno -2\]"):
        deployed.get("/tenants")


def test_a_timeout_names_the_wait_and_a_check_may_wait_longer() -> None:
    transport = Recorder(TimedOut("timed out"), _json(200, {"ok": True, "steps": []}))
    client = _client(transport, timeout=5.0)
    with pytest.raises(CliError, match=r"did not answer within 5 s$"):
        client.get("/tenants")
    client.post("/tenants/tn_1/servers/srv_1/test", timeout=120.0)
    assert transport.timeouts == [5.0, 120.0]


def test_the_urllib_transport_takes_http_urls_only() -> None:
    request = HttpRequest("GET", "file:///etc/passwd", {}, None)
    with pytest.raises(Unreachable, match="not an HTTP"):
        urllib_transport(request, 1.0)


# where the admin API is


def _local_json(workdir: Path, **extra: object) -> None:
    aws = {
        "endpoint_url": "http://127.0.0.1:4566",
        "region": REGION,
        "prefix": "petrel-local",
        "tables": {"tenants": "petrel-local-tenants", "messages": "petrel-local-messages"},
    }
    (workdir / "local.json").write_text(json.dumps({"aws": aws, **extra}))


def test_locally_the_admin_api_is_the_front_signed_with_the_local_credentials(tmp_path: Path) -> None:
    _local_json(tmp_path, api_url="http://127.0.0.1:8080")
    endpoint = local_target(tmp_path).admin_endpoint()
    assert (endpoint.base_url, endpoint.region, endpoint.local) == ("http://127.0.0.1:8080", REGION, True)
    assert (endpoint.credentials.access_key, endpoint.credentials.secret_key) == ("local", "local")

    client = Context(env=LOCAL, workdir=tmp_path).client  # built on first use, nothing sent
    assert (client.base_url, client.region, client.unreachable_advice) == ("http://127.0.0.1:8080", REGION, LOCAL_DOWN)


def test_a_local_json_without_the_api_url_is_one_line_of_advice(tmp_path: Path) -> None:
    _local_json(tmp_path)
    with pytest.raises(CliError, match=r"^local.json has no api_url: restart the local stack with `make run`$"):
        local_target(tmp_path).admin_endpoint()


class FakeCloudFormation:
    def __init__(self, stacks: dict[str, list[dict[str, str]]]) -> None:
        self.stacks = stacks
        self.asked: list[str] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.asked.append(StackName)
        if StackName not in self.stacks:
            error = {"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}}
            raise ClientError(error, "DescribeStacks")  # type: ignore[arg-type]
        return {"Stacks": [{"StackName": StackName, "Outputs": self.stacks[StackName]}]}


def test_deployed_the_admin_api_is_the_stacks_api_url_output() -> None:
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/"
    cloudformation = FakeCloudFormation(
        {
            "petrel-prod": [
                {"OutputKey": "BodiesBucket", "OutputValue": "b"},
                {"OutputKey": "ApiUrl", "OutputValue": url},
            ]
        }
    )
    assert stack_output(cloudformation, "petrel-prod", "ApiUrl") == url
    assert cloudformation.asked == ["petrel-prod"]


def test_a_stack_not_deployed_or_without_the_output_is_one_line_of_advice() -> None:
    cloudformation = FakeCloudFormation({"petrel-dev": []})
    with pytest.raises(
        CliError, match=r"^stack petrel-prod is not deployed in this account and region \(make deploy\)$"
    ):
        stack_output(cloudformation, "petrel-prod", "ApiUrl")
    with pytest.raises(CliError, match=r"^stack petrel-dev has no output ApiUrl"):
        stack_output(cloudformation, "petrel-dev", "ApiUrl")


def test_deployed_without_credentials_is_one_line_of_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    target = Target(env="prod", settings=SETTINGS.model_copy(update={"region": REGION}))
    with pytest.raises(CliError, match=r"^no AWS credentials found"):
        target.admin_endpoint()


def test_a_detail_that_repeats_the_title_is_said_once() -> None:
    body = {"title": "The request is not valid", "detail": "the request is not valid: body: Field required"}
    error = error_of(HttpResponse(422, {}, json.dumps(body).encode()))
    assert str(error) == "the request is not valid: body: Field required"
