"""The admin API function's container (petrel.api.admin.AdminApiPorts), built from AdminApiSettings.

The `petrel` command keeps its own container (petrel.container.admin) for bootstrapping and the dead
letters; this one serves `/v1/admin/...` deployed and in the local stack. Everything is built on first
use, on one boto3 session: a request for a tenant reads DynamoDB only, one that adds a server reaches
Secrets Manager too, only a resume reaches the messages table and the send queues.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from petrel.container.base import FunctionContainer, mailbox_store, message_store, tenant_store
from petrel.settings import AdminApiSettings

if TYPE_CHECKING:
    from petrel.adapters.dynamodb import DynamoMessageStore, DynamoTenantStore
    from petrel.adapters.imap import ImapClientReader
    from petrel.adapters.queues import SqsJobQueue
    from petrel.adapters.secrets import SecretsManagerStore
    from petrel.ports import MailboxStore
    from petrel.services.domains import DomainDeps
    from petrel.services.mailboxes import MailboxDeps
    from petrel.services.servers import SmtpCheck
    from petrel.services.tenants import AdminDeps

# Seconds each network step of a connectivity check may take: a check (and a verified password
# rotation) must answer within API Gateway's 29 s.
CHECK_TIMEOUT_SECONDS = 8.0


class AdminApiContainer(FunctionContainer[AdminApiSettings]):
    function = "admin-api"

    @classmethod
    def from_env(cls) -> AdminApiContainer:
        return cls(AdminApiSettings.from_env())

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return tenant_store(self.clients, self.settings.tenants_table)

    @cached_property
    def messages(self) -> DynamoMessageStore:
        return message_store(self.clients, self.settings.messages_table)

    @cached_property
    def mailboxes(self) -> MailboxStore:
        return mailbox_store(self.clients, self.settings.tenants_table)

    @cached_property
    def secrets(self) -> SecretsManagerStore:
        from petrel.adapters.secrets import SecretsManagerStore

        return SecretsManagerStore(self.clients.secretsmanager())

    @cached_property
    def queue(self) -> SqsJobQueue:
        from petrel.adapters.queues import SqsJobQueue

        return SqsJobQueue(self.clients.sqs(), self.settings.queue_urls())

    @cached_property
    def admin(self) -> AdminDeps:
        from petrel.services.tenants import AdminDeps

        return AdminDeps(
            tenants=self.tenants,
            secrets=self.secrets,
            clock=self.clock,
            secrets_prefix=self.settings.secrets_prefix,
            max_age_hours_limit=self.settings.max_message_age_hours,
        )

    @cached_property
    def mailbox_admin(self) -> MailboxDeps:
        from petrel.services.mailboxes import MailboxDeps

        return MailboxDeps(
            tenants=self.tenants,
            mailboxes=self.mailboxes,
            secrets=self.secrets,
            clock=self.clock,
            secrets_prefix=self.settings.secrets_prefix,
        )

    @cached_property
    def domains(self) -> DomainDeps:
        from petrel.adapters.dns import DnsPythonResolver, parse_resolvers
        from petrel.services.domains import DomainDeps

        settings = self.settings
        return DomainDeps(
            tenants=self.tenants,
            secrets=self.secrets,
            resolver=DnsPythonResolver(parse_resolvers(settings.dns_resolvers), settings.dns_timeout_seconds),
            clock=self.clock,
            secrets_prefix=settings.secrets_prefix,
            mailboxes=self.mailboxes,
            log=self.telemetry.logger,
        )

    @cached_property
    def smtp_check(self) -> SmtpCheck:
        from petrel.adapters.smtp_check import check_server
        from petrel.models.admin import Step
        from petrel.models.records import SmtpServer

        def check(server: SmtpServer, password: str, mail_from: str, report: Any) -> Step | None:
            return check_server(server, password, mail_from, report, timeout=CHECK_TIMEOUT_SECONDS)

        return check

    @cached_property
    def mailbox_reader(self) -> ImapClientReader:
        from petrel.adapters.imap import ImapClientReader

        return ImapClientReader(timeout=CHECK_TIMEOUT_SECONDS)
