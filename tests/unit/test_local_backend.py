"""`make run BACKEND=localstack`: each service's endpoint, as the local stack's clients, its child
processes (AWS_ENDPOINT_URL_<SERVICE>) and the CLI (`--env local`, from local.json) see it."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.errors import CliError
from cli.target import LOCAL_DOWN, local_target
from local.aws import LocalAws
from local.platform import LocalConfig

MOTO = "http://127.0.0.1:5000"
LOCALSTACK = "http://127.0.0.1:4566"
ON_LOCALSTACK = ("sqs", "s3", "secretsmanager", "scheduler")


def _aws() -> LocalAws:
    return LocalAws(MOTO, service_endpoints=dict.fromkeys(ON_LOCALSTACK, LOCALSTACK), backend="localstack")


def test_each_service_goes_to_the_backend_that_serves_it() -> None:
    aws = _aws()
    assert {service: aws.endpoint_for(service) for service in ("dynamodb", *ON_LOCALSTACK)} == {
        "dynamodb": MOTO,
        **dict.fromkeys(ON_LOCALSTACK, LOCALSTACK),
    }
    clients = aws.clients()
    assert clients.client("dynamodb").meta.endpoint_url == MOTO
    assert clients.client("sqs").meta.endpoint_url == LOCALSTACK
    assert aws.client("secretsmanager").meta.endpoint_url == LOCALSTACK
    environment = aws.environment()
    assert environment["AWS_ENDPOINT_URL"] == MOTO
    assert environment["AWS_ENDPOINT_URL_SECRETS_MANAGER"] == LOCALSTACK
    assert environment["AWS_ENDPOINT_URL_SQS"] == LOCALSTACK
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in environment


def test_moto_alone_serves_everything() -> None:
    aws = LocalAws(MOTO)
    assert set(aws.endpoints().values()) == {MOTO}
    assert not [name for name in aws.environment() if name.startswith("AWS_ENDPOINT_URL_")]


@pytest.mark.parametrize(("field", "value"), [("backend", "docker"), ("log_format", "xml")])
def test_an_unknown_backend_or_log_format_is_refused(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {field.replace('_', ' ')} '{value}'"):
        LocalConfig(workdir=tmp_path, **{field: value})  # type: ignore[arg-type]


def _local_json(workdir: Path, moto: str, localstack: str) -> None:
    aws = {
        "endpoint_url": moto,
        "endpoint_urls": {"dynamodb": moto, **dict.fromkeys(ON_LOCALSTACK, localstack)},
        "region": "us-east-1",
        "prefix": "petrel-local",
        "tables": {"tenants": "petrel-local-tenants", "messages": "petrel-local-messages"},
        "secrets_prefix": "petrel-local/tenants/",
    }
    (workdir / "local.json").write_text(json.dumps({"backend": "localstack", "aws": aws}))


def test_the_cli_follows_local_jsons_endpoint_per_service(tmp_path: Path) -> None:
    _local_json(tmp_path, MOTO, LOCALSTACK)
    settings = local_target(tmp_path).settings
    assert settings.endpoint_urls() == {"dynamodb": MOTO, "secretsmanager": LOCALSTACK, "sqs": LOCALSTACK}


@pytest.fixture
def listening() -> Iterator[str]:
    """An endpoint something listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def _closed_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_the_cli_says_the_stack_is_down_when_localstack_is_gone(tmp_path: Path, listening: str) -> None:
    _local_json(tmp_path, listening, listening)
    local_target(tmp_path).check_reachable()  # both listen
    _local_json(tmp_path, listening, _closed_endpoint())
    with pytest.raises(CliError, match=re.escape(LOCAL_DOWN)):
        local_target(tmp_path).check_reachable()
