"""What every function's container shares: one boto3 session and the clients built on it, the stores
built on those clients, and the container's own settings and telemetry.

Each container is built from its function's settings model (`WorkerContainer(settings)`, or
`WorkerContainer.from_env()` on Lambda) and builds what it owns lazily, on first use, so a function
pays at cold start only for what it uses. Tests pass their own `AwsClients` (a warm session, moto) or
build the services' deps from in-memory fakes instead.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from petrel.settings import StoreSettings

if TYPE_CHECKING:
    from boto3.session import Session
    from types_boto3_dynamodb.client import DynamoDBClient
    from types_boto3_s3.client import S3Client
    from types_boto3_scheduler.client import EventBridgeSchedulerClient
    from types_boto3_secretsmanager.client import SecretsManagerClient
    from types_boto3_sqs.client import SQSClient

    from petrel.adapters.clock import SystemClock
    from petrel.adapters.dns import DnsPythonResolver
    from petrel.adapters.dynamodb import DynamoMessageStore, DynamoSuppressionStore, DynamoTenantStore
    from petrel.adapters.inbound import DynamoInboundStore
    from petrel.adapters.mailboxes import DynamoMailboxStore
    from petrel.adapters.queues import SqsIngestQueue
    from petrel.adapters.scheduler import EventBridgeRetryScheduler
    from petrel.adapters.secrets import SecretsManagerStore
    from petrel.observability import Telemetry
    from petrel.ports import UsagePlans
    from petrel.services.mailboxes import MailboxDeps
    from petrel.services.tenants import AdminDeps

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


def secret_store(clients: AwsClients) -> SecretsManagerStore:
    from petrel.adapters.secrets import SecretsManagerStore

    return SecretsManagerStore(clients.secretsmanager())


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


class TenantSettings(Protocol):
    """The names the tenants' stores are built from (every settings model of a function that reads
    tenants' items and their secrets)."""

    @property
    def tenants_table(self) -> str: ...
    @property
    def secrets_prefix(self) -> str: ...


class TenantAdminSettings(TenantSettings, Protocol):
    """The names a container that administers tenants is built from (AdminSettings for the CLI,
    AdminApiSettings for the admin API function): the tenants' and the messages table a resume reads
    held mail from."""

    @property
    def messages_table(self) -> str: ...


class DnsSettings(Protocol):
    """PETREL_DNS_RESOLVERS and PETREL_DNS_TIMEOUT_SECONDS, as a function's settings read them."""

    @property
    def dns_resolvers(self) -> str: ...
    @property
    def dns_timeout_seconds(self) -> float: ...


def dns_resolver(settings: DnsSettings) -> DnsPythonResolver:
    from petrel.adapters.dns import DnsPythonResolver

    return DnsPythonResolver.from_setting(settings.dns_resolvers, settings.dns_timeout_seconds)


T = TypeVar("T", bound=TenantSettings)
A = TypeVar("A", bound=TenantAdminSettings)


class TenantStoresContainer(FunctionContainer[T]):
    """The tenants' items (tenants, keys, servers, domains, mailboxes: the tenants table) and their
    secrets (Secrets Manager, under `secrets_prefix`), as every container that reaches them builds them:
    the API's, the domain checker's, the CLI's and the admin API's."""

    @property
    def secrets_prefix(self) -> str:
        return self.settings.secrets_prefix

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return tenant_store(self.clients, self.settings.tenants_table)

    @cached_property
    def mailboxes(self) -> DynamoMailboxStore:
        """The mailboxes the poller reads (in the tenants table, beside their tenant)."""
        return mailbox_store(self.clients, self.settings.tenants_table)

    @cached_property
    def secrets(self) -> SecretsManagerStore:
        return secret_store(self.clients)


class TenantAdminContainer(TenantStoresContainer[A]):
    """What the `petrel` command's container and the admin API's share: the tenants' stores, the
    messages table, and the tenant and mailbox services' bundles built on them, so the CLI (and the
    local stack's seed) and the admin API administer through the same wiring."""

    @property
    def max_age_hours_limit(self) -> int | None:
        """The environment's max_message_age_hours (None: only petrel.services.tenants' ceiling)."""
        return None

    @cached_property
    def messages(self) -> DynamoMessageStore:
        return message_store(self.clients, self.settings.messages_table)

    @cached_property
    def admin(self) -> AdminDeps:
        from petrel.services.tenants import AdminDeps

        limit = self.max_age_hours_limit
        deps = AdminDeps(
            tenants=self.tenants,
            secrets=self.secrets,
            clock=self.clock,
            secrets_prefix=self.secrets_prefix,
            usage_plans=self.usage_plans,
        )
        replaced: dict[str, Any] = {}
        if limit is not None:
            replaced["max_age_hours_limit"] = limit
        if (plans := self.api_plans) is not None:
            replaced["api_plans"] = plans
            replaced["usage_key_prefix"] = self.usage_key_prefix
        return dataclasses.replace(deps, **replaced) if replaced else deps

    @property
    def api_plans(self) -> Mapping[str, str] | None:
        """The environment's API plans, name -> usage plan id (None: AdminDeps' default, one plan and
        no API Gateway, as the CLI's bootstrapping container has)."""
        return None

    @property
    def usage_plans(self) -> UsagePlans | None:
        """Where tenants are enrolled in their plans (None: nowhere, no API Gateway)."""
        return None

    @property
    def usage_key_prefix(self) -> str:
        return "petrel-local"

    @cached_property
    def mailbox_admin(self) -> MailboxDeps:
        """What `petrel mailbox ...` and `/v1/admin/.../mailboxes` administer: the mailboxes, their
        tenants and their passwords."""
        from petrel.services.mailboxes import MailboxDeps

        return MailboxDeps(
            tenants=self.tenants,
            mailboxes=self.mailboxes,
            secrets=self.secrets,
            clock=self.clock,
            secrets_prefix=self.secrets_prefix,
        )
