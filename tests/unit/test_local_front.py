"""local.front: methods it does not know and requests it cannot parse are problem documents (issue 7, defect 9)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from local.front import ApiFront
from tests.fakes import FakeWorld
from tests.unit.api_fakes import Api


def _allow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "principalId": "key_1",
        "policyDocument": {"Statement": [{"Effect": "Allow"}]},
        "context": {"tenant_id": "tn_a", "scopes": "read"},
    }


def _refuse(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise AssertionError("a public route went through the authorizer")


@pytest.fixture
def front(world: FakeWorld) -> Iterator[ApiFront]:
    api = Api(world)
    server = ApiFront("127.0.0.1", 0, _allow, lambda event, context: api(event))
    server.start()
    yield server
    server.stop()


def _raw(front: ApiFront, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = front.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                if len(body) >= int(headers.get("content-length", "0")):
                    return int(lines[0].split()[1]), headers, body
    raise AssertionError(f"no complete answer: {data!r}")


@pytest.mark.parametrize("method", ["BREW", "OPTIONS", "TRACE"])
def test_an_unknown_method_is_a_405_problem(front: ApiFront, method: str) -> None:
    status, headers, body = _raw(
        front, f"{method} /v1/emails HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 405 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "urn:petrel:problem:method-not-allowed"


def test_a_malformed_request_is_a_problem(front: ApiFront) -> None:
    status, headers, body = _raw(front, b"GET /v1/emails HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n")
    assert status == 431 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 431


@pytest.mark.parametrize(
    ("path", "content_type"), [("/v1/openapi.json", "application/json"), ("/v1/docs", "text/html")]
)
def test_the_document_and_swagger_ui_need_no_key(world: FakeWorld, path: str, content_type: str) -> None:
    api = Api(world)
    server = ApiFront("127.0.0.1", 0, _refuse, lambda event, context: api(event))
    server.start()
    try:
        status, headers, body = _raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    finally:
        server.stop()
    assert status == 200 and headers["content-type"] == content_type
    if path == "/v1/docs":  # Swagger UI served locally tries requests against the front's root
        assert b'"url": "/"' in body and b"/v1/emails/batch" in body
