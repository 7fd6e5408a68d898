"""Tenant administration: tenants and their settings, API keys, sending domains, SMTP servers.

Used by the `petrel` command (cli/); every refusal is a ConfigurationError whose text is the one line
the operator reads.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Final

from petrel.errors import ConfigurationError
from petrel.ids import new_id
from petrel.models.records import POOLS, Pool, SendingDomain, ServerShaping, SmtpSecurity, SmtpServer, Tenant
from petrel.ports import (
    Clock,
    JobQueue,
    MessageStore,
    RecordNotFound,
    SecretStore,
    TenantStore,
    UsagePlans,
    WriteConflict,
)
from petrel.services.auth import MintedKey, mint_api_key, usage_key, usage_key_name
from petrel.services.suspension import HeldMail, release_held

# The longest `max_age_hours` anywhere: infra.config's bound on an environment's max_message_age_hours.
# An environment passes its own (lower) limit in AdminDeps: its retention must outlast every retry.
MAX_AGE_HOURS_CEILING = 24 * 30
# A tenant's message size limit: at least a small message with headers; at most what the worker can
# build, DKIM-sign and relay in memory (it holds the whole encoded message, more than once).
MIN_MESSAGE_BYTES = 10 * 1024
MAX_MESSAGE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class AdminDeps:
    tenants: TenantStore
    secrets: SecretStore
    clock: Clock
    secrets_prefix: str
    # The environment's max_message_age_hours (cdk.json): a tenant may not retry longer than its
    # messages and bodies are kept.
    max_age_hours_limit: int = MAX_AGE_HOURS_CEILING
    # The environment's API plans: name -> the name of its API Gateway usage plan ("": none, the local
    # stack). A tenant's `api_plan` must be one of these names.
    api_plans: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_API_PLAN: ""})
    # Where the plans' usage plans are (None: no API Gateway, nothing to enroll), and the environment's
    # name prefix its tenants' usage keys are made of (petrel.services.auth.usage_key).
    usage_plans: UsagePlans | None = None
    usage_key_prefix: str = "petrel-local"


DEFAULT_API_PLAN: Final = "standard"  # Tenant.api_plan's default
# The most messages per second a tenant's own sending rate may be set to.
MAX_SEND_RATE = 100_000.0

# The longest reason a suspension keeps (it is shown to the tenant in every refused send's problem).
MAX_SUSPENDED_REASON = 500


class Unchanged(Enum):
    """The value of a setting whose None means something (a quota's None removes the limit)."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED


@dataclass(frozen=True)
class TenantSettings:
    """The settings of a tenant an operator may change. None leaves `name`, `max_message_bytes`,
    `max_age_hours` and `allow_unverified_domains` as they are (or at their defaults); a quota is left
    as it is by UNCHANGED, and None removes it (no limit)."""

    name: str | None = None
    max_message_bytes: int | None = None
    max_age_hours: int | None = None
    daily_quota: int | Unchanged | None = UNCHANGED
    per_second_quota: int | Unchanged | None = UNCHANGED
    allow_unverified_domains: bool | None = None
    api_plan: str | None = None  # one of the environment's plans (AdminDeps.api_plans)
    # Messages per second the workers relay for the tenant; None: no limit of its own.
    send_rate_per_second: float | Unchanged | None = UNCHANGED

    def changes(self) -> dict[str, object]:
        found: dict[str, object] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is UNCHANGED or (value is None and item.name not in NULLABLE):
                continue
            found[item.name] = value
        return found


# The tenant's recipient quotas (petrel.services.quotas): each a positive whole number, or None.
QUOTAS = ("daily_quota", "per_second_quota")
# The settings whose None is a value (no limit), not "unchanged".
NULLABLE = (*QUOTAS, "send_rate_per_second")


def _require_tenant(deps: AdminDeps, tenant_id: str) -> Tenant:
    tenant = deps.tenants.get_tenant(tenant_id)
    if tenant is None:
        raise ConfigurationError(f"no tenant {tenant_id!r}")
    return tenant


def _checked(deps: AdminDeps, settings: TenantSettings) -> dict[str, object]:
    """The changes `settings` asks for, each within its bounds, with the name trimmed."""
    changes = settings.changes()
    if settings.name is not None:
        if not settings.name.strip():
            raise ConfigurationError("a tenant needs a name")
        changes["name"] = settings.name.strip()
    size = settings.max_message_bytes
    if size is not None and not MIN_MESSAGE_BYTES <= size <= MAX_MESSAGE_BYTES:
        raise ConfigurationError(
            f"max message bytes must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}, not {size}"
        )
    hours = settings.max_age_hours
    if hours is not None and not 1 <= hours <= deps.max_age_hours_limit:
        raise ConfigurationError(
            f"max age hours must be between 1 and {deps.max_age_hours_limit} in this environment "
            f"(its max_message_age_hours), not {hours}"
        )
    for quota in QUOTAS:
        value = changes.get(quota)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            name = quota.replace("_", " ")
            raise ConfigurationError(f"{name} must be a whole number of recipients of at least 1, or none, not {value}")
    flag = settings.allow_unverified_domains
    if flag is not None and not isinstance(flag, bool):
        raise ConfigurationError(f"allow unverified domains must be true or false, not {flag!r}")
    plan = settings.api_plan
    if plan is not None and plan not in deps.api_plans:
        raise ConfigurationError(f"unknown API plan {plan!r}: this environment's plans are {', '.join(deps.api_plans)}")
    rate = changes.get("send_rate_per_second")
    if rate is not None and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= MAX_SEND_RATE or math.isnan(rate)
    ):
        raise ConfigurationError(
            f"send rate must be a number of messages per second above 0 and at most {MAX_SEND_RATE:g}, or none, "
            f"not {rate}"
        )
    return changes


def create_tenant(
    deps: AdminDeps,
    name: str,
    max_message_bytes: int | None = None,
    *,
    max_age_hours: int | None = None,
    daily_quota: int | None = None,
    per_second_quota: int | None = None,
    allow_unverified_domains: bool | None = None,
    api_plan: str | None = None,
    send_rate_per_second: float | None = None,
) -> Tenant:
    """A new tenant; settings not given keep the Tenant model's defaults (no quota: no limit), enrolled
    in its API plan (`enroll_tenant`) once it is stored: an enrollment that fails leaves the tenant
    stored, and creating its key, or `petrel tenant enroll`, finishes it."""
    changes = _checked(
        deps,
        TenantSettings(
            name=name,
            max_message_bytes=max_message_bytes,
            max_age_hours=max_age_hours,
            daily_quota=daily_quota,
            per_second_quota=per_second_quota,
            allow_unverified_domains=allow_unverified_domains,
            api_plan=api_plan,
            send_rate_per_second=send_rate_per_second,
        ),
    )
    tenant = Tenant.model_validate({"tenant_id": new_id("tn"), "created_at": deps.clock.now(), **changes})
    deps.tenants.put_tenant(tenant)
    enroll_tenant(deps, tenant)
    return tenant


def update_tenant(deps: AdminDeps, tenant_id: str, settings: TenantSettings) -> Tenant:
    """Change some settings of an existing tenant. Workers see the change once their cache expires; a
    new API plan is enrolled at once (after the tenant is stored: running the update again, or
    `petrel tenant enroll`, finishes an enrollment that failed)."""
    changes = _checked(deps, settings)
    if not changes:
        raise ConfigurationError("nothing to change: give at least one setting")
    tenant = _require_tenant(deps, tenant_id).model_copy(update=changes)
    deps.tenants.put_tenant(tenant)
    if "api_plan" in changes:
        enroll_tenant(deps, tenant)
    return tenant


@dataclass(frozen=True)
class Enrollment:
    tenant_id: str
    api_plan: str
    key_id: str | None  # the tenant's API Gateway key; None where there is no API Gateway


def enroll_tenant(deps: AdminDeps, tenant: Tenant) -> Enrollment:
    """Put the tenant's API Gateway key (made once, found again by its name) in its plan's usage plan
    and in no other: the edge then throttles its requests by that plan (the authorizer names the key).

    Safe to repeat at any step. The key leaves its other plans first (API Gateway refuses a key in two
    plans of one stage), so while a plan changes the tenant's requests may be refused (403) for the
    moment between the two calls. A tenant whose plan is not (or no longer) one of the environment's is
    a ConfigurationError, and nothing is changed."""
    usage_plan = deps.api_plans.get(tenant.api_plan)
    if usage_plan is None:
        raise ConfigurationError(
            f"tenant {tenant.tenant_id!r} is on API plan {tenant.api_plan!r}, which this environment does not "
            f"have ({', '.join(deps.api_plans)}): give it one with PATCH (petrel tenant update --api-plan)"
        )
    if deps.usage_plans is None or not usage_plan:
        return Enrollment(tenant.tenant_id, tenant.api_plan, None)
    plans = deps.usage_plans
    plan_id = plans.plan_id(usage_plan)
    key_id = plans.ensure_key(
        usage_key_name(deps.usage_key_prefix, tenant.tenant_id), usage_key(deps.usage_key_prefix, tenant.tenant_id)
    )
    for other in sorted({name for name in deps.api_plans.values() if name and name != usage_plan}):
        plans.remove_key(plans.plan_id(other), key_id)
    plans.add_key(plan_id, key_id)
    return Enrollment(tenant.tenant_id, tenant.api_plan, key_id)


def enroll_all(deps: AdminDeps) -> list[Enrollment]:
    """`enroll_tenant` for every tenant (the upgrade step for tenants made before usage plans)."""
    return [enroll_tenant(deps, tenant) for tenant in sorted(deps.tenants.list_tenants(), key=lambda t: t.tenant_id)]


def suspend_tenant(deps: AdminDeps, tenant_id: str, reason: str | None = None) -> Tenant:
    """Stop the tenant's sending: its sends are refused (403, with `reason`), its queued and scheduled
    mail is held by the workers (petrel.services.suspension) until `resume_tenant`. Suspending a
    suspended tenant keeps the first `suspended_at` (and takes the new reason, when one is given).
    Workers see it once their tenant cache expires; the API at once."""
    tenant = _require_tenant(deps, tenant_id)
    text = (reason or "").strip() or None
    if text is not None and len(text) > MAX_SUSPENDED_REASON:
        raise ConfigurationError(f"a suspension reason is at most {MAX_SUSPENDED_REASON} characters")
    if tenant.suspended and text is None:
        return tenant
    suspended = tenant.model_copy(
        update={"suspended_at": tenant.suspended_at or deps.clock.now(), "suspended_reason": text}
    )
    deps.tenants.put_tenant(suspended)
    return suspended


@dataclass(frozen=True)
class Resumed:
    tenant: Tenant
    released: int  # held messages put back on their queues now


def resume_tenant(deps: AdminDeps, tenant_id: str, *, messages: MessageStore, queue: JobQueue) -> Resumed:
    """Let the tenant send again and put its held mail back on its queues at once (how many: `released`).

    The suspension is cleared first, so a worker that leases a released message finds the tenant
    active. Resuming an active tenant releases whatever is still held (a resume that stopped half-way
    is finished by running it again); a message whose job the queue refused stays held, and its hold
    schedule brings it within `HOLD_SECONDS`. A worker whose tenant cache still says suspended may
    hold a message once more after this: that message goes when its hold schedule fires."""
    tenant = _require_tenant(deps, tenant_id)
    if tenant.suspended:
        tenant = tenant.model_copy(update={"suspended_at": None, "suspended_reason": None})
        deps.tenants.put_tenant(tenant)
    return Resumed(tenant, release_held(HeldMail(messages, queue), tenant_id))


def create_api_key(deps: AdminDeps, tenant_id: str, name: str = "") -> MintedKey:
    _require_tenant(deps, tenant_id)
    return mint_api_key(deps.tenants, deps.clock, tenant_id, name)


def revoke_api_key(deps: AdminDeps, tenant_id: str, key_id: str) -> None:
    try:
        deps.tenants.revoke_api_key(tenant_id, key_id, deps.clock.now())
    except (RecordNotFound, WriteConflict) as exc:  # unknown, or revoked already
        raise ConfigurationError(f"no active API key {key_id!r} for tenant {tenant_id!r}") from exc


def add_domain(
    deps: AdminDeps,
    tenant_id: str,
    domain: str,
    return_path_domain: str | None = None,
    *,
    spf: list[str] | None = None,
) -> SendingDomain:
    """A new sending domain (for bootstrapping: the admin API's `domains` routes are the same service):
    its DKIM key in Secrets Manager and the records to publish (petrel.services.domains). It is pending
    until verified; a domain any tenant has already is refused."""
    from petrel.errors import PetrelError
    from petrel.models.api import CreateDomainRequest
    from petrel.services import domains

    tenant = _require_tenant(deps, tenant_id)
    try:
        request = CreateDomainRequest(domain=domain, return_path_domain=return_path_domain, spf=spf)
    except ValueError as exc:
        raise ConfigurationError(str(exc).splitlines()[0]) from exc
    domain_deps = domains.DomainDeps(
        tenants=deps.tenants, secrets=deps.secrets, resolver=None, clock=deps.clock, secrets_prefix=deps.secrets_prefix
    )
    try:
        return domains.create_domain(domain_deps, tenant, request)
    except PetrelError as exc:
        raise ConfigurationError(exc.detail) from exc


def checked_ca_bundle(value: str | None) -> str | None:
    """A CA bundle an operator gave a server or a mailbox, refused unless Python's ssl loads it (a bad
    one would fail every later connection instead); None for none ("" drops a bundle)."""
    if not value:
        return None
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(f"the CA bundle is not valid PEM: {exc}") from exc
    return value


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
    shaping: Mapping[str, object] | None = None,
) -> SmtpServer:
    """Register a MailU submission endpoint; the password goes to Secrets Manager only. `shaping`: the
    fields of its ServerShaping that differ from the defaults (petrel.services.servers.shaped)."""
    from petrel.services.servers import shaped

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
    checked_ca_bundle(ca_bundle)
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
            shaping=shaped(ServerShaping(), shaping),
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc).splitlines()[0]) from exc
    deps.secrets.put_secret(secret_name, password)
    deps.tenants.put_server(server)
    return server


def set_smtp_password(deps: AdminDeps, tenant_id: str, server_id: str, password: str) -> SmtpServer:
    server = find_server(deps, tenant_id, server_id)
    deps.secrets.put_secret(server.secret_name, password)
    return server


def remove_smtp_server(deps: AdminDeps, tenant_id: str, server_id: str) -> None:
    server = find_server(deps, tenant_id, server_id)
    deps.tenants.delete_server(tenant_id, server_id)
    # Its password goes too; one deleted already (a removal that stopped half-way) is no error.
    with contextlib.suppress(RecordNotFound):
        deps.secrets.delete_secret(server.secret_name)


def find_server(deps: AdminDeps, tenant_id: str, server_id: str) -> SmtpServer:
    """A tenant's SMTP server by id (ConfigurationError when there is none)."""
    for server in deps.tenants.list_servers(tenant_id):
        if server.server_id == server_id:
            return server
    raise ConfigurationError(f"no SMTP server {server_id!r} for tenant {tenant_id!r}")


def _pool(value: str) -> Pool:
    return "bulk" if value == "bulk" else "transactional"


def get_tenant(deps: AdminDeps, tenant_id: str) -> Tenant:
    """The tenant, or a ConfigurationError naming the id (so a mistyped id is not an empty listing)."""
    return _require_tenant(deps, tenant_id)
