"""LocalStack as the third backend of the contract tests, for the ports whose AWS service its free
edition serves without Docker: JobQueue (SQS), BlobStore (S3), SecretStore (Secrets Manager) and
RetryScheduler (EventBridge Scheduler). DynamoDB's ports stay on the fake and moto.

The backend is the same real adapters as moto's (`moto_backend`) on other clients: SQS, S3, Secrets
Manager, Scheduler and IAM on LocalStack, DynamoDB on moto's server (a contract module that mixes
ports, like the scheduler's with the suppressions', runs its DynamoDB tests there). Each test gets an
account of its own on LocalStack and a table prefix of its own on moto: nothing carries over.
"""

from __future__ import annotations

import itertools
from types import ModuleType

import pytest

from tests.integration.contracts.backends import Backend, moto_backend
from tests.integration.localstack import LocalAwsClients

# The contract modules of the ports LocalStack serves.
LOCALSTACK_CONTRACTS = frozenset({"test_blob_queue_secret_stores", "test_scheduler_and_suppressions"})

_prefixes = itertools.count(1)


def backend_kinds(module: ModuleType) -> list[object]:
    """The backends a contract module runs against: the fake, moto, and LocalStack where it serves the port."""
    kinds: list[object] = ["fake", pytest.param("moto", marks=pytest.mark.integration)]
    if module.__name__.rsplit(".", 1)[-1] in LOCALSTACK_CONTRACTS:
        kinds.append(pytest.param("localstack", marks=[pytest.mark.integration, pytest.mark.localstack]))
    return kinds


def localstack_backend(request: pytest.FixtureRequest) -> Backend:
    aws: LocalAwsClients = request.getfixturevalue("localstack_aws")
    return moto_backend(aws.clients, kind="localstack", prefix=f"petrel-ls{next(_prefixes)}")
