"""The authorizer function's container."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import _tenant_store
from petrel.settings import AuthorizerSettings

if TYPE_CHECKING:
    from petrel.adapters.dynamodb import (
        DynamoTenantStore,
    )


class AuthorizerContainer:
    def __init__(self, settings: AuthorizerSettings) -> None:
        self.settings = settings

    @cached_property
    def tenants(self) -> DynamoTenantStore:
        return _tenant_store(self.settings.tenants_table)
