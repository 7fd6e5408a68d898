"""Each contract test runs against the in-memory fake and the real adapter under moto (and, for SQS, S3,
Secrets Manager and Scheduler, the real adapter on LocalStack: contracts/localstack.py).

The moto tables, queues and bucket come from `local.provision`, so their keys and indexes are the
ones in `petrel.resources` (the same specs the CDK constructs deploy).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

from tests.integration.aws_env import clean_aws_environment
from tests.integration.contracts.backends import Backend, fake_backend, moto_backend
from tests.integration.contracts.localstack import backend_kinds, localstack_backend


@pytest.fixture(scope="session")
def aws_clients(boto_session: boto3.session.Session) -> dict[str, Any]:
    """Clients built once: moto intercepts them whenever a mock is active (building them is the slow part)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_aws_environment(monkeypatch)
        return {name: boto_session.client(name) for name in ("dynamodb", "sqs", "s3", "secretsmanager", "scheduler")}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`backend` is the fake, moto, and LocalStack for the ports it serves (contracts/localstack.py)."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backend_kinds(metafunc.module), indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield fake_backend()
        return
    if request.param == "localstack":
        yield localstack_backend(request)
        return
    clients = request.getfixturevalue("aws_clients")
    monkeypatch = request.getfixturevalue("monkeypatch")
    clean_aws_environment(monkeypatch)  # moto reads the profile too
    atomic_requests(monkeypatch)
    with mock_aws():
        yield moto_backend(clients)


def atomic_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """One request at a time through moto's in-process mock, as AWS applies each request atomically:
    moto checks a condition and writes without a lock, so two threads' conditional writes on one item
    could both pass, and a test of "of two concurrent writers, one wins" would fail for moto's sake
    (seen in CI: both concurrent domain updates on one revision written)."""
    lock = threading.RLock()
    process = BotocoreStubber.process_request

    def locked(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", locked)
