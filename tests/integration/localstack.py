"""LocalStack for the tests (a pytest plugin, registered in tests/conftest.py so that one process serves
the whole run): started on first use from its own venv (`make localstack`), on a free loopback port
with its state in the run's temporary directory, and stopped when the run ends.

Like Postfix and Dovecot, it is a real service the tests need: if it is not installed, the tests that
ask for it fail with the command that installs it (they are never skipped).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from local.localstack import LocalStack
from tests.integration.aws_env import REGION

if TYPE_CHECKING:
    import boto3

# boto3, botocore and moto's server are imported inside the fixtures: this plugin is loaded for every
# test run (tests/conftest.py), and the unit tests should not pay for them.

# What LocalStack serves for Petrel (DynamoDB stays on moto: LocalStack's needs Java at run time).
LOCALSTACK_SERVICES = ("sqs", "s3", "secretsmanager", "scheduler", "iam")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_accounts = itertools.count(100000000001)


def next_account() -> str:
    """A new AWS account id: LocalStack keeps each account's state apart when the access key id is a
    12-digit number, so every test gets empty queues, buckets, secrets and schedules without a restart."""
    return str(next(_accounts))


@dataclass(frozen=True)
class LocalAwsClients:
    """Clients on LocalStack (SQS, S3, Secrets Manager, Scheduler, IAM) and a DynamoDB client on moto's server."""

    localstack: LocalStack
    dynamodb_endpoint: str
    account: str
    clients: dict[str, Any]

    def __getitem__(self, service: str) -> Any:
        return self.clients[service]


@pytest.fixture(scope="session")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One LocalStack for the run (about 1.5 s to start once installed)."""
    server = LocalStack(port=free_port(), data_dir=tmp_path_factory.mktemp("localstack"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_dynamodb_endpoint() -> Iterator[str]:
    """moto's server for DynamoDB beside LocalStack (over HTTP, so no in-process mock can catch
    LocalStack's calls); tests keep apart by table prefix."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def localstack_session() -> boto3.session.Session:
    """One session for the run: its clients share the loaded service models (building is the slow part)."""
    import boto3

    return boto3.session.Session(region_name=REGION)


@pytest.fixture
def localstack_aws(
    localstack: LocalStack, moto_dynamodb_endpoint: str, localstack_session: boto3.session.Session
) -> LocalAwsClients:
    """Clients of a fresh account, each with its endpoint given explicitly (the environment's
    AWS_ENDPOINT_URL* settings cannot redirect them)."""
    from botocore.config import Config

    account = next_account()
    credentials = {"aws_access_key_id": account, "aws_secret_access_key": "test"}
    clients: dict[str, Any] = {
        service: localstack_session.client(  # type: ignore[call-overload]
            service,
            endpoint_url=localstack.endpoint,
            config=Config(signature_version="s3v4") if service == "s3" else None,
            **credentials,
        )
        for service in LOCALSTACK_SERVICES
    }
    clients["dynamodb"] = localstack_session.client(
        "dynamodb", endpoint_url=moto_dynamodb_endpoint, aws_access_key_id=account, aws_secret_access_key="test"
    )
    return LocalAwsClients(localstack, moto_dynamodb_endpoint, account, clients)
