"""The admin API function's container (petrel.api.admin.AdminApiPorts), built from AdminApiSettings.

The `petrel` command keeps its own container (petrel.container.admin) for bootstrapping and the dead
letters; this one serves `/v1/admin/...` deployed and in the local stack. Everything is built on first
use, on one boto3 session: a request for a tenant reads DynamoDB only, one that adds a server reaches
Secrets Manager too, only a resume reaches the messages table and the send queues.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from petrel.container.base import TenantAdminContainer, dns_resolver
from petrel.settings import AdminApiSettings

if TYPE_CHECKING:
    from petrel.adapters.dns import DnsPythonResolver
    from petrel.adapters.imap import ImapClientReader
    from petrel.adapters.queues import SqsJobQueue
    from petrel.adapters.usage_plans import ApiGatewayUsagePlans
    from petrel.services.domains import DomainDeps
    from petrel.services.servers import SmtpCheck

# Seconds each network step of a connectivity check may take: a check (and a verified password
# rotation) must answer within API Gateway's 29 s.
CHECK_TIMEOUT_SECONDS = 8.0


class AdminApiContainer(TenantAdminContainer[AdminApiSettings]):
    """The stores and the tenant and mailbox bundles as the CLI's container builds them
    (TenantAdminContainer), plus the send queues, DNS and the connectivity checks."""

    function = "admin-api"

    @classmethod
    def from_env(cls) -> AdminApiContainer:
        return cls(AdminApiSettings.from_env())

    @property
    def max_age_hours_limit(self) -> int:
        return self.settings.max_message_age_hours

    @property
    def api_plans(self) -> dict[str, str]:
        return self.settings.api_plans

    @property
    def usage_key_prefix(self) -> str:
        return self.settings.usage_key_prefix

    @cached_property
    def usage_plans(self) -> ApiGatewayUsagePlans | None:
        """API Gateway's usage plans, where the stack made them (none in the local stack: its front
        throttles each tenant by its plan itself)."""
        if not any(self.settings.api_plans.values()):
            return None
        from petrel.adapters.usage_plans import ApiGatewayUsagePlans

        return ApiGatewayUsagePlans(self.clients.client("apigateway"))

    @cached_property
    def queue(self) -> SqsJobQueue:
        from petrel.adapters.queues import SqsJobQueue

        return SqsJobQueue(self.clients.sqs(), self.settings.queue_urls())

    @cached_property
    def resolver(self) -> DnsPythonResolver:
        return dns_resolver(self.settings)

    @cached_property
    def domains(self) -> DomainDeps:
        from petrel.services.domains import domain_deps

        return domain_deps(self)

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
