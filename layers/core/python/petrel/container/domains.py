"""The domain checker's container: the tenants table, the tenants' secrets (a retired DKIM key's secret
is deleted once its grace has passed) and the DNS resolvers of its settings."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import FunctionContainer, tenant_store
from petrel.settings import DomainCheckerSettings

if TYPE_CHECKING:
    from petrel.services.domains import DomainDeps


class DomainCheckContainer(FunctionContainer[DomainCheckerSettings]):
    function = "domain-checker"

    @classmethod
    def from_env(cls) -> DomainCheckContainer:
        return cls(DomainCheckerSettings.from_env())

    @cached_property
    def domains(self) -> DomainDeps:
        from petrel.adapters.dns import DnsPythonResolver
        from petrel.adapters.secrets import SecretsManagerStore
        from petrel.services.domains import DomainDeps

        settings = self.settings
        return DomainDeps(
            tenants=tenant_store(self.clients, settings.tenants_table),
            secrets=SecretsManagerStore(self.clients.secretsmanager()),
            resolver=DnsPythonResolver.from_setting(settings.dns_resolvers, settings.dns_timeout_seconds),
            clock=self.clock,
            secrets_prefix=settings.secrets_prefix,
            log=self.telemetry.logger,
        )
