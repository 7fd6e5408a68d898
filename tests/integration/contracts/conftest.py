"""Each contract test runs twice: against the in-memory fake and against the real adapter under moto.

The moto tables, queues and bucket come from `local.provision`, so their keys and indexes are the
ones in `petrel.resources` (the same specs the CDK constructs deploy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.integration.aws_env import clean_aws_environment
from tests.integration.contracts.backends import Backend, fake_backend, moto_backend


@pytest.fixture(scope="session")
def aws_clients(boto_session: boto3.session.Session) -> dict[str, Any]:
    """Clients built once: moto intercepts them whenever a mock is active (building them is the slow part)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_aws_environment(monkeypatch)
        return {name: boto_session.client(name) for name in ("dynamodb", "sqs", "s3", "secretsmanager", "scheduler")}


@pytest.fixture(params=["fake", pytest.param("moto", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield fake_backend()
        return
    clients = request.getfixturevalue("aws_clients")
    clean_aws_environment(request.getfixturevalue("monkeypatch"))  # moto reads the profile too
    with mock_aws():
        yield moto_backend(clients)
