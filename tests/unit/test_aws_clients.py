"""petrel.container.base.AwsClients: one boto3 session per container, one client per service on it,
with Petrel's botocore configuration and per-service endpoint overrides."""

from __future__ import annotations

import threading
from typing import Any

import boto3

from petrel.adapters.aws import client_config
from petrel.container.base import AwsClients
from petrel.container.worker import WorkerContainer
from tests.unit.test_send_worker_handler import _settings


class RecordingSession:
    """Stands in for a boto3 Session: records each client it is asked to build."""

    def __init__(self) -> None:
        self.built: list[tuple[str, Any, str | None]] = []

    def client(self, service: str, *, config: Any, endpoint_url: str | None = None) -> object:
        self.built.append((service, config, endpoint_url))
        return object()


def test_every_client_is_built_once_on_the_one_session() -> None:
    session = RecordingSession()
    clients = AwsClients(session, endpoint_urls={"sqs": "http://127.0.0.1:4566"})  # type: ignore[arg-type]

    first = [clients.dynamodb(), clients.sqs(), clients.s3(), clients.secretsmanager(), clients.scheduler()]
    again = [clients.dynamodb(), clients.sqs(), clients.s3(), clients.secretsmanager(), clients.scheduler()]

    assert [a is b for a, b in zip(first, again, strict=True)] == [True] * 5
    assert [service for service, _, _ in session.built] == ["dynamodb", "sqs", "s3", "secretsmanager", "scheduler"]
    endpoints = {service: endpoint for service, _, endpoint in session.built}
    assert endpoints == {
        "dynamodb": None,
        "sqs": "http://127.0.0.1:4566",
        "s3": None,
        "secretsmanager": None,
        "scheduler": None,
    }
    configs = {service: config for service, config, _ in session.built}
    assert configs["s3"].signature_version == "s3v4" and configs["dynamodb"].signature_version is None
    assert all(config.retries == {"mode": "standard", "max_attempts": 5} for config in configs.values())
    assert all((config.connect_timeout, config.read_timeout) == (5, 20) for config in configs.values())


def test_threads_building_clients_at_once_share_them() -> None:
    session = RecordingSession()
    clients = AwsClients(session)  # type: ignore[arg-type]
    got: list[object] = []

    def build() -> None:
        got.append(clients.sqs())

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(session.built) == 1 and len({id(client) for client in got}) == 1


class CountingSession:
    """A real boto3 session (no call is made: building a client needs no network) that counts clients."""

    def __init__(self) -> None:
        self.real = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="eu-west-1")
        self.built: list[str] = []

    def client(self, service: str, **kwargs: Any) -> Any:
        self.built.append(service)
        return self.real.client(service, **kwargs)  # type: ignore[call-overload]


def test_a_worker_container_builds_one_client_per_service_on_its_session() -> None:
    session = CountingSession()
    container = WorkerContainer(_settings(), clients=AwsClients(session))  # type: ignore[arg-type]

    deps = container.deliver  # three DynamoDB stores, S3, Secrets Manager, Scheduler
    queue = container.queue

    assert sorted(session.built) == ["dynamodb", "s3", "scheduler", "secretsmanager", "sqs"]  # one DynamoDB client
    assert queue is container.queue and deps is container.deliver  # each built once
    assert container.clients.s3().meta.region_name == "eu-west-1"


def test_building_a_real_client_leaves_the_next_clients_configuration_as_written() -> None:
    # botocore rewrites a client's config `retries` in place (max_attempts -> total_max_attempts): a
    # configuration shared between clients would drift after the first one.
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    AwsClients(session).sqs()
    assert client_config("sqs").retries == {"mode": "standard", "max_attempts": 5}
