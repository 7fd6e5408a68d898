"""The domain checker's container: the tenants table, the tenants' secrets (a retired DKIM key's secret
is deleted once its grace has passed) and the DNS resolvers of its settings."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import TenantStoresContainer, dns_resolver
from petrel.settings import DomainCheckerSettings

if TYPE_CHECKING:
    from petrel.adapters.dns import DnsPythonResolver
    from petrel.services.domains import DomainDeps


class DomainCheckContainer(TenantStoresContainer[DomainCheckerSettings]):
    """The tenants' stores as every container builds them (TenantStoresContainer; only a create reads
    the mailboxes, the re-check never does) and the domains service on them."""

    function = "domain-checker"

    @classmethod
    def from_env(cls) -> DomainCheckContainer:
        return cls(DomainCheckerSettings.from_env())

    @cached_property
    def resolver(self) -> DnsPythonResolver:
        return dns_resolver(self.settings)

    @cached_property
    def domains(self) -> DomainDeps:
        from petrel.services.domains import domain_deps

        return domain_deps(self)
