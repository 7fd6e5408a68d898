"""Provision and seed a tenant: the one way the local stack, the tests and the benchmarks make a tenant
that can send (tenant, sending domain, SMTP server, API key) and register the mailboxes Petrel reads,
through the same admin services the `petrel` CLI uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from petrel.services import tenants

if TYPE_CHECKING:
    from local.dns_publish import ZonePublisher
    from petrel.models.records import Mailbox, SendingDomain
    from petrel.services.domains import DomainDeps
    from petrel.services.mailboxes import MailboxDeps


@dataclass(frozen=True)
class RelayAccount:
    """An SMTP submission account of a MailU (or stand-in) that a tenant's server relays through."""

    host: str
    port: int
    username: str
    password: str
    security: str = "starttls"
    ca_bundle: str | None = None  # PEM of the CA to trust (a stand-in's self-signed one)

    def server_settings(self, **overrides: Any) -> dict[str, Any]:
        """`tenants.add_smtp_server`'s keyword arguments for this account, with `overrides` applied."""
        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "username": self.username,
            "password": self.password,
            "ca_bundle": self.ca_bundle,
        }
        return settings | overrides


# The shaping of a seeded server (the local stack's, the tests', the benchmarks'): a server on this
# machine has no reputation to warm up, the platform's default rates (20/s, 5/s per provider) would
# make every local run wait on tokens; and local mail bounces on purpose (the tests, a developer trying
# bounces), which must not pause a lone server for an hour: it is paused only when every one of its
# last sends bounced. A caller's own `shaping=` replaces this.
LOCAL_SHAPING: dict[str, Any] = {
    "warmup": [],
    "bounce_threshold": 1.0,
    "rate_per_second": 500.0,
    "burst": 1000,
    "provider_rate_per_second": 250.0,
    "provider_burst": 500,
}


@dataclass(frozen=True)
class SeededTenant:
    """What a seeded tenant sends with: its id, its server's id and its API key (shown once)."""

    tenant_id: str
    server_id: str
    api_key: str
    domain: str

    def address(self, local_part: str) -> str:
        return f"{local_part}@{self.domain}"


def seed_tenant(
    admin: tenants.AdminDeps,
    name: str,
    *,
    domain: str,
    relay: RelayAccount,
    key_name: str = "",
    return_path_domain: str | None = None,
    allow_unverified_domains: bool = False,
    **server: Any,
) -> SeededTenant:
    """A tenant sending from `domain` through one SMTP server: `relay`'s account, with any `add_smtp_server`
        setting overridden by `server` (e.g. a fault proxy's host and port, another CA bundle; its shaping is
    LOCAL_SHAPING unless `shaping` is given). Bounces go to
        `return_path_domain` (default: `domain` itself). The domain is pending until its records are published
        and verified (`publish_and_verify`); `allow_unverified_domains` lets the tenant send before (tests)."""
    tenant = tenants.create_tenant(admin, name, allow_unverified_domains=allow_unverified_domains)
    # the server first: the domain's SPF record authorizes the tenant's servers
    settings = relay.server_settings(**({"shaping": LOCAL_SHAPING} | server))
    created = tenants.add_smtp_server(admin, tenant.tenant_id, **settings)
    tenants.add_domain(admin, tenant.tenant_id, domain, return_path_domain)
    key = tenants.create_api_key(admin, tenant.tenant_id, key_name or name)
    return SeededTenant(tenant_id=tenant.tenant_id, server_id=created.server_id, api_key=key.secret, domain=domain)


@dataclass(frozen=True)
class ImapAccount:
    """A mailbox account of a MailU (or stand-in) that the poller reads over IMAP."""

    address: str
    password: str
    host: str
    port: int
    security: str = "tls"
    ca_bundle: str | None = None  # PEM of the CA to trust (a stand-in's self-signed one)


def register_mailbox(deps: MailboxDeps, tenant_id: str, account: ImapAccount) -> Mailbox:
    """Register `account` for the poller (INBOX, messages left where they are), as `petrel mailbox add`
    does: its password goes to Secrets Manager only. Its domain must be one of the tenant's."""
    from petrel.services import mailboxes

    return mailboxes.add_mailbox(
        deps,
        tenant_id,
        address=account.address,
        host=account.host,
        port=account.port,
        security=account.security,
        password=account.password,
        ca_bundle=account.ca_bundle,
    )


def publish_and_verify(deps: DomainDeps, dns: ZonePublisher, tenant_id: str, domain: str) -> SendingDomain:
    """What a tenant does after `POST /v1/domains`: publish the domain's records (`SendingDomain.records`)
    at its DNS host, here `dns` (the local Knot), then verify them; the domain as verification left it
    (`verified` when SPF and DKIM check out). `deps.resolver` must ask that same server."""
    from local.dns_publish import publish_domain
    from petrel.services import domains

    record = domains.get_domain(deps, tenant_id, domain)
    publish_domain(dns, record)
    return domains.verify_domain(deps, record)
