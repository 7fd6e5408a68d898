"""The authorizer function's container: its settings, its telemetry, and the tenant store it reads keys from."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import FunctionContainer, tenant_store
from petrel.settings import AuthorizerSettings

if TYPE_CHECKING:
    from petrel.adapters.dynamodb import DynamoTenantStore


class AuthorizerContainer(FunctionContainer[AuthorizerSettings]):
    function = "authorizer"

    @classmethod
    def from_env(cls) -> AuthorizerContainer:
        return cls(AuthorizerSettings.from_env())

    @property
    def usage_key_prefix(self) -> str:
        return self.settings.usage_key_prefix

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return tenant_store(self.clients, self.settings.tenants_table)
