"""In-memory TenantStore, ordered like the DynamoDB adapter (by sort key within a tenant)."""

from __future__ import annotations

import threading
from datetime import datetime

from petrel.models.records import ApiKey, SendingDomain, ServerEvent, SmtpServer, Tenant
from petrel.ports import AlreadyExists, RecordNotFound, WriteConflict


class FakeTenantStore:
    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.api_keys: dict[tuple[str, str], ApiKey] = {}
        self.domains: dict[tuple[str, str], SendingDomain] = {}
        self.domain_claims: dict[str, str] = {}  # domain -> the tenant that has it
        self.servers: dict[tuple[str, str], SmtpServer] = {}
        self.quotas: dict[tuple[str, str], int] = {}  # (tenant, window) -> units counted
        self.quota_expiry: dict[tuple[str, str], int] = {}
        self._quota_lock = threading.Lock()  # a counter's check and add are one step, as in DynamoDB
        self._domain_lock = threading.Lock()  # a domain's revision check and write are one step too

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
        if domain.domain.lower() in self.domain_claims:
            raise AlreadyExists(f"domain {domain.domain} belongs to a tenant already")
        self.domains[(domain.tenant_id, domain.domain)] = domain
        self.domain_claims[domain.domain.lower()] = domain.tenant_id

    def delete_domain(self, tenant_id: str, domain: str, expected_revision: int | None = None) -> None:
        with self._domain_lock:
            current = self.domains.get((tenant_id, domain))
            if current is None:
                raise RecordNotFound(f"no domain {domain}")
            if expected_revision is not None and current.revision != expected_revision:
                raise WriteConflict(f"domain {domain} is at revision {current.revision}, not {expected_revision}")
            del self.domains[(tenant_id, domain)]
            if self.domain_claims.get(domain.lower()) == tenant_id:
                del self.domain_claims[domain.lower()]

    def update_domain(self, domain: SendingDomain, expected_revision: int, *, claim: bool = False) -> None:
        if domain.revision != expected_revision + 1:
            raise ValueError(f"a write on revision {expected_revision} stores revision {expected_revision + 1}")
        with self._domain_lock:
            current = self.domains.get((domain.tenant_id, domain.domain))
            if current is None:
                raise RecordNotFound(f"no domain {domain.domain}")
            if current.revision != expected_revision:
                raise WriteConflict(f"domain {domain.domain} is at revision {current.revision}")
            owner = self.domain_claims.get(domain.domain.lower())
            if claim and owner not in (None, domain.tenant_id):
                raise AlreadyExists(f"domain {domain.domain} belongs to another tenant")
            self.domains[(domain.tenant_id, domain.domain)] = domain
            if claim:
                self.domain_claims[domain.domain.lower()] = domain.tenant_id

    def find_domain(self, domain: str) -> SendingDomain | None:
        owner = self.domain_claims.get(domain.lower())
        return None if owner is None else self.domains.get((owner, domain.lower()))

    def list_all_domains(self) -> list[SendingDomain]:
        return [d for _, d in sorted(self.domains.items())]

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

    def pause_server(
        self, tenant_id: str, server_id: str, *, at: datetime, reason: str, resume_at: datetime | None
    ) -> bool:
        with self._domain_lock:
            server = self.servers.get((tenant_id, server_id))
            if server is None or server.paused_at is not None:
                return False
            event = ServerEvent(type="server.paused", at=at, detail=reason)
            self.servers[(tenant_id, server_id)] = server.model_copy(
                update={
                    "paused_at": at,
                    "paused_reason": reason,
                    "resume_at": resume_at,
                    "events": (*server.events, event),
                }
            )
            return True

    def resume_server(self, tenant_id: str, server_id: str, *, paused_at: datetime, at: datetime, detail: str) -> bool:
        with self._domain_lock:
            server = self.servers.get((tenant_id, server_id))
            if server is None or server.paused_at != paused_at:
                return False
            event = ServerEvent(type="server.resumed", at=at, detail=detail)
            self.servers[(tenant_id, server_id)] = server.model_copy(
                update={"paused_at": None, "paused_reason": None, "resume_at": None, "events": (*server.events, event)}
            )
            return True

    def consume_quota(self, tenant_id: str, window: str, units: int, *, limit: int, expires_at: int) -> bool:
        with self._quota_lock:
            count = self.quotas.get((tenant_id, window), 0)
            if count + units > limit:
                return False
            self.quotas[(tenant_id, window)] = count + units
            self.quota_expiry.setdefault((tenant_id, window), expires_at)
            return True

    def release_quota(self, tenant_id: str, window: str, units: int) -> None:
        with self._quota_lock:
            count = self.quotas.get((tenant_id, window))
            if count is not None and count >= units:
                self.quotas[(tenant_id, window)] = count - units
