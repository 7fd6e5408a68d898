"""Tenant administration (minimal): tenants, API keys, sending domains, SMTP servers."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from petrel.errors import ConfigurationError
from petrel.ids import new_id
from petrel.mail.addresses import AddressError, normalize_domain
from petrel.models.records import POOLS, Pool, SendingDomain, SmtpSecurity, SmtpServer, Tenant
from petrel.ports import Clock, SecretStore, TenantStore
from petrel.services.auth import MintedKey, mint_api_key


@dataclass(frozen=True)
class AdminDeps:
    tenants: TenantStore
    secrets: SecretStore
    clock: Clock
    secrets_prefix: str


def _require_tenant(deps: AdminDeps, tenant_id: str) -> Tenant:
    tenant = deps.tenants.get_tenant(tenant_id)
    if tenant is None:
        raise ConfigurationError(f"no tenant {tenant_id!r}")
    return tenant


def create_tenant(deps: AdminDeps, name: str, max_message_bytes: int | None = None) -> Tenant:
    if not name.strip():
        raise ConfigurationError("a tenant needs a name")
    tenant = Tenant(
        tenant_id=new_id("tn"),
        name=name.strip(),
        created_at=deps.clock.now(),
        **({"max_message_bytes": max_message_bytes} if max_message_bytes else {}),
    )
    deps.tenants.put_tenant(tenant)
    return tenant


def create_api_key(deps: AdminDeps, tenant_id: str, name: str = "") -> MintedKey:
    _require_tenant(deps, tenant_id)
    return mint_api_key(deps.tenants, deps.clock, tenant_id, name)


def revoke_api_key(deps: AdminDeps, tenant_id: str, key_id: str) -> None:
    if not deps.tenants.revoke_api_key(tenant_id, key_id, deps.clock.now()):
        raise ConfigurationError(f"no active API key {key_id!r} for tenant {tenant_id!r}")


def add_domain(deps: AdminDeps, tenant_id: str, domain: str, return_path_domain: str | None = None) -> SendingDomain:
    _require_tenant(deps, tenant_id)
    try:
        name = normalize_domain(domain)
        bounce = normalize_domain(return_path_domain) if return_path_domain else name
    except AddressError as exc:
        raise ConfigurationError(str(exc)) from exc
    record = SendingDomain(tenant_id=tenant_id, domain=name, return_path_domain=bounce, created_at=deps.clock.now())
    deps.tenants.put_domain(record)
    return record


def add_smtp_server(
    deps: AdminDeps,
    tenant_id: str,
    *,
    host: str,
    port: int,
    security: str,
    username: str,
    password: str,
    pool: str = "transactional",
    weight: int = 1,
    ca_bundle: str | None = None,
) -> SmtpServer:
    """Register a MailU submission endpoint; the password goes to Secrets Manager only."""
    _require_tenant(deps, tenant_id)
    if pool not in POOLS:
        raise ConfigurationError(f"pool must be one of {', '.join(POOLS)}")
    try:
        sec = SmtpSecurity(security)
    except ValueError as exc:
        raise ConfigurationError("security must be 'starttls' or 'tls'") from exc
    if not host.strip() or not username or not password:
        raise ConfigurationError("host, username and password are required")
    if port == 25:
        raise ConfigurationError("port 25 is not usable from Lambda; use 587 (starttls) or 465 (tls)")
    if ca_bundle:
        try:
            ssl.create_default_context(cadata=ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(f"the CA bundle is not valid PEM: {exc}") from exc
    server_id = new_id("srv")
    secret_name = f"{deps.secrets_prefix}{tenant_id}/smtp/{server_id}"
    try:
        server = SmtpServer(
            tenant_id=tenant_id,
            server_id=server_id,
            host=host.strip(),
            port=port,
            security=sec,
            username=username,
            secret_name=secret_name,
            ca_bundle=ca_bundle,
            pool=_pool(pool),
            weight=weight,
            created_at=deps.clock.now(),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc).splitlines()[0]) from exc
    deps.secrets.put_secret(secret_name, password)
    deps.tenants.put_server(server)
    return server


def set_smtp_password(deps: AdminDeps, tenant_id: str, server_id: str, password: str) -> SmtpServer:
    server = _find_server(deps, tenant_id, server_id)
    deps.secrets.put_secret(server.secret_name, password)
    return server


def remove_smtp_server(deps: AdminDeps, tenant_id: str, server_id: str) -> None:
    server = _find_server(deps, tenant_id, server_id)
    deps.tenants.delete_server(tenant_id, server_id)
    deps.secrets.delete_secret(server.secret_name)


def _find_server(deps: AdminDeps, tenant_id: str, server_id: str) -> SmtpServer:
    for server in deps.tenants.list_servers(tenant_id):
        if server.server_id == server_id:
            return server
    raise ConfigurationError(f"no SMTP server {server_id!r} for tenant {tenant_id!r}")


def _pool(value: str) -> Pool:
    return "bulk" if value == "bulk" else "transactional"
