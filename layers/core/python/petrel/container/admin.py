"""The operators' container: what the `petrel` command (cli/) administers, built from AdminSettings.

Not a Lambda function: the CLI builds it for the environment it targets (the local stack or a deployed
one), with one boto3 session shared by every client (AwsClients), like the functions' containers.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from petrel import resources
from petrel.container.base import AwsClients, TenantAdminContainer, message_store

# The AWS services the admin commands reach.
ADMIN_SERVICES = ("dynamodb", "secretsmanager", "sqs")

if TYPE_CHECKING:
    from petrel.adapters.dead_letters import SqsDeadLetters
    from petrel.services.redrive import RedriveDeps


class AdminSettings(BaseModel):
    """One environment's names, as the CLI finds them (the local stack's local.json, or cdk.json)."""

    model_config = ConfigDict(frozen=True)

    name_prefix: str
    tenants_table: str
    messages_table: str
    secrets_prefix: str
    # The environment's max_message_age_hours: how long a tenant's messages may be retried at most
    # (None: only the ceiling of petrel.services.tenants).
    max_age_hours_limit: int | None = Field(default=None, ge=1)
    region: str | None = None
    endpoint_url: str | None = None  # the local stack's embedded AWS; None: AWS itself
    # Services whose endpoint is not `endpoint_url` (the local stack's LocalStack backend: SQS, Secrets
    # Manager ... on LocalStack, DynamoDB on moto).
    service_endpoint_urls: dict[str, str] = Field(default_factory=dict)

    def endpoint_urls(self) -> dict[str, str]:
        """The endpoint of each service the container uses (none: AWS's own, or AWS_ENDPOINT_URL)."""
        chosen = {service: self.service_endpoint_urls.get(service, self.endpoint_url) for service in ADMIN_SERVICES}
        return {service: url for service, url in chosen.items() if url}

    @classmethod
    def for_prefix(cls, name_prefix: str, **fields: Any) -> AdminSettings:
        """The settings of a deployed environment, every name derived from its prefix (petrel.resources)."""
        return cls(
            name_prefix=name_prefix,
            tenants_table=resources.physical_name(name_prefix, resources.TENANTS.name),
            messages_table=resources.physical_name(name_prefix, resources.MESSAGES.name),
            secrets_prefix=resources.secrets_prefix(name_prefix),
            **fields,
        )


class AdminContainer(TenantAdminContainer[AdminSettings]):
    """Tenant administration (TenantAdminContainer: the same wiring as the admin API's) and
    dead-letter redrive for one environment, wired lazily on one boto3 session (`clients`; by default
    one that reaches `settings.endpoint_url`)."""

    function = "admin"

    def __init__(self, settings: AdminSettings, *, clients: AwsClients | None = None) -> None:
        super().__init__(settings, clients=clients or AwsClients(endpoint_urls=settings.endpoint_urls()))

    @property
    def max_age_hours_limit(self) -> int | None:
        return self.settings.max_age_hours_limit

    @cached_property
    def dead_letters(self) -> SqsDeadLetters:
        from petrel.adapters.dead_letters import SqsDeadLetters

        return SqsDeadLetters(self.clients.sqs(), self.settings.name_prefix)

    def backfill_listing(self) -> int:
        """Give message items stored before `by_tenant_v3` its keys (`petrel migrate listing`)."""
        return message_store(self.clients, self.settings.messages_table).backfill_listing()

    @cached_property
    def redrive(self) -> RedriveDeps:
        """What `petrel dlq redrive` needs to reopen the messages of the jobs it puts back."""
        from petrel.services.redrive import RedriveDeps

        return RedriveDeps(messages=self.messages, clock=self.clock)
