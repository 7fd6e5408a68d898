"""In-memory TenantStore, ordered like the DynamoDB adapter (by sort key within a tenant)."""

from __future__ import annotations

from datetime import datetime

from petrel.models.records import ApiKey, SendingDomain, SmtpServer, Tenant
from petrel.ports import AlreadyExists, RecordNotFound, WriteConflict


class FakeTenantStore:
    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.api_keys: dict[tuple[str, str], ApiKey] = {}
        self.domains: dict[tuple[str, str], SendingDomain] = {}
        self.servers: dict[tuple[str, str], SmtpServer] = {}

    def put_tenant(self, tenant: Tenant) -> None:
        self.tenants[tenant.tenant_id] = tenant

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id)

    def list_tenants(self) -> list[Tenant]:
        return sorted(self.tenants.values(), key=lambda t: t.created_at)

    def put_api_key(self, key: ApiKey) -> None:
        self.api_keys[(key.tenant_id, key.key_id)] = key

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        found = [k for k in self.api_keys.values() if k.key_hash == key_hash]
        return found[0] if len(found) == 1 else None  # an ambiguous hash resolves to nothing, like the GSI query

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        return [k for (t, _), k in sorted(self.api_keys.items()) if t == tenant_id]

    def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> None:
        key = self.api_keys.get((tenant_id, key_id))
        if key is None:
            raise RecordNotFound(f"no API key {key_id}")
        if key.revoked_at is not None:
            raise WriteConflict(f"API key {key_id} is revoked already")
        self.api_keys[(tenant_id, key_id)] = key.model_copy(update={"revoked_at": at})

    def create_domain(self, domain: SendingDomain) -> None:
        if (domain.tenant_id, domain.domain) in self.domains:
            raise AlreadyExists(f"tenant {domain.tenant_id} has domain {domain.domain} already")
        self.domains[(domain.tenant_id, domain.domain)] = domain

    def put_domain(self, domain: SendingDomain) -> None:
        self.domains[(domain.tenant_id, domain.domain)] = domain

    def get_domain(self, tenant_id: str, domain: str) -> SendingDomain | None:
        return self.domains.get((tenant_id, domain))

    def list_domains(self, tenant_id: str) -> list[SendingDomain]:
        return [d for (t, _), d in sorted(self.domains.items()) if t == tenant_id]

    def put_server(self, server: SmtpServer) -> None:
        self.servers[(server.tenant_id, server.server_id)] = server

    def list_servers(self, tenant_id: str) -> list[SmtpServer]:
        return [s for (t, _), s in sorted(self.servers.items()) if t == tenant_id]

    def delete_server(self, tenant_id: str, server_id: str) -> None:
        if self.servers.pop((tenant_id, server_id), None) is None:
            raise RecordNotFound(f"no SMTP server {server_id}")
