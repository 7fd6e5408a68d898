"""What every function's container shares: one boto3 session and the clients built on it, the stores
built on those clients, and the container's own settings and telemetry.

Each container is built from its function's settings model (`WorkerContainer(settings)`, or
`WorkerContainer.from_env()` on Lambda) and builds what it owns lazily, on first use, so a function
pays at cold start only for what it uses. Tests pass their own `AwsClients` (a warm session, moto) or
build the services' deps from in-memory fakes instead.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from petrel.settings import StoreSettings

if TYPE_CHECKING:
    from boto3.session import Session
    from types_boto3_dynamodb.client import DynamoDBClient
    from types_boto3_s3.client import S3Client
    from types_boto3_scheduler.client import EventBridgeSchedulerClient
    from types_boto3_secretsmanager.client import SecretsManagerClient
    from types_boto3_sqs.client import SQSClient

    from petrel.adapters.clock import SystemClock
    from petrel.adapters.dynamodb import DynamoMessageStore, DynamoSuppressionStore, DynamoTenantStore
    from petrel.adapters.inbound import DynamoInboundStore
    from petrel.adapters.mailboxes import DynamoMailboxStore
    from petrel.adapters.queues import SqsIngestQueue
    from petrel.adapters.scheduler import EventBridgeRetryScheduler
    from petrel.observability import Telemetry

S = TypeVar("S")


class AwsClients:
    """One boto3 session and one client per service on it, each built on first use (thread-safe).

    `session`: a session to build on (default: a new one, made with the first client).
    `endpoint_urls`: an endpoint per service name, overriding AWS_ENDPOINT_URL for that service.
    """

    def __init__(self, session: Session | None = None, *, endpoint_urls: Mapping[str, str] | None = None) -> None:
        self._session = session
        self._endpoint_urls = dict(endpoint_urls or {})
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def session(self) -> Session:
        with self._lock:
            return self._session_locked()

    def _session_locked(self) -> Session:
        if self._session is None:
            from petrel.adapters.aws import new_session

            self._session = new_session()
        return self._session

    def client(self, service: str) -> Any:
        """The container's client of `service` (boto3 sessions are not thread-safe: built under a lock)."""
        with self._lock:
            if service not in self._clients:
                from petrel.adapters.aws import new_client

                session = self._session_locked()
                self._clients[service] = new_client(session, service, endpoint_url=self._endpoint_urls.get(service))
            return self._clients[service]

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self.client("dynamodb")
        return client

    def sqs(self) -> SQSClient:
        client: SQSClient = self.client("sqs")
        return client

    def s3(self) -> S3Client:
        client: S3Client = self.client("s3")
        return client

    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self.client("secretsmanager")
        return client

    def scheduler(self) -> EventBridgeSchedulerClient:
        client: EventBridgeSchedulerClient = self.client("scheduler")
        return client


class FunctionContainer(Generic[S]):
    """The shape of every function's container: its settings, its AWS clients (one session), its
    telemetry (logger and metrics labelled with the function's name), injected or built lazily.

    Subclasses name their `function` (its role, e.g. "send-worker": its logs' service is
    `petrel-<role>`) and add a `from_env()` that reads their settings model from the environment.
    """

    function: ClassVar[str]

    def __init__(self, settings: S, *, clients: AwsClients | None = None, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.clients = clients or AwsClients()
        self._telemetry = telemetry
        self._telemetry_lock = threading.Lock()

    @property
    def telemetry(self) -> Telemetry:
        with self._telemetry_lock:
            if self._telemetry is None:
                from petrel.observability import telemetry

                self._telemetry = telemetry(self.function)
            return self._telemetry

    @cached_property
    def clock(self) -> SystemClock:
        from petrel.adapters.clock import SystemClock

        return SystemClock()


def tenant_store(clients: AwsClients, table: str) -> DynamoTenantStore:
    from petrel.adapters.dynamodb import DynamoTenantStore

    return DynamoTenantStore(clients.dynamodb(), table)


def message_store(clients: AwsClients, table: str) -> DynamoMessageStore:
    from petrel.adapters.dynamodb import DynamoMessageStore

    return DynamoMessageStore(clients.dynamodb(), table)


def suppression_store(clients: AwsClients, table: str) -> DynamoSuppressionStore:
    from petrel.adapters.dynamodb import DynamoSuppressionStore

    return DynamoSuppressionStore(clients.dynamodb(), table)


def mailbox_store(clients: AwsClients, table: str) -> DynamoMailboxStore:
    """Mailboxes, cursors and poll health: items of the tenants table (`table` is its name)."""
    from petrel.adapters.mailboxes import DynamoMailboxStore

    return DynamoMailboxStore(clients.dynamodb(), table)


def inbound_store(clients: AwsClients, table: str, bucket: str) -> DynamoInboundStore:
    """Incoming mail on the inbound table; `bucket` (the bodies bucket) keeps the contents too large
    for an item."""
    from petrel.adapters.blobs import S3BlobStore
    from petrel.adapters.inbound import DynamoInboundStore

    return DynamoInboundStore(clients.dynamodb(), table, S3BlobStore(clients.s3(), bucket))


def ingest_queue(clients: AwsClients, url: str) -> SqsIngestQueue:
    from petrel.adapters.queues import SqsIngestQueue

    return SqsIngestQueue(clients.sqs(), url)


def retry_scheduler(clients: AwsClients, settings: StoreSettings) -> EventBridgeRetryScheduler:
    from petrel.adapters.scheduler import EventBridgeRetryScheduler

    return EventBridgeRetryScheduler(
        clients.scheduler(),
        group=settings.schedule_group,
        role_arn=settings.scheduler_role_arn,
        dead_letter_arn=settings.scheduler_dlq_arn,
        queue_arns=settings.queue_arns(),
    )
