"""Request and response bodies of the admin API (`/v1/admin/...`, IAM-authorized, petrel.api.admin).

Views are built from the stored records by `of(...)` and name exactly what an operator may see: never a
password, a key's hash, a secret's name or a private key. Requests refuse unknown fields, so a mistyped
setting is a 422 rather than a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from petrel.models.api import DomainView
from petrel.models.records import (
    ApiKey,
    FolderCursor,
    MailboxAfter,
    MailboxHealth,
    Pool,
    Scope,
    ServerShaping,
    SmtpSecurity,
    SmtpServer,
    Tenant,
)
from petrel.models.records import Mailbox as MailboxRecord

Password = Annotated[str, Field(min_length=1, max_length=1024)]
Quota = Annotated[int, Field(ge=1, le=1_000_000_000)]
PlanName = Annotated[str, Field(min_length=1, max_length=64)]  # one of the environment's API plans
SendRate = Annotated[float, Field(gt=0, le=100_000)]  # messages per second


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


@dataclass(frozen=True)
class Step:
    """One step of a connectivity check (connect, starttls/tls, auth or login, mail from, select ...)."""

    name: str
    ok: bool
    detail: str


# -- tenants -----------------------------------------------------------------------------------


class CreateTenantRequest(_Request):
    name: str = Field(min_length=1, max_length=200)
    max_message_bytes: int | None = None
    max_age_hours: int | None = None
    daily_quota: Quota | None = None
    per_second_quota: Quota | None = None
    allow_unverified_domains: bool = False
    api_plan: PlanName | None = None  # None: the default plan ("standard")
    send_rate_per_second: SendRate | None = None  # None: no rate of its own (its servers' limits)


class UpdateTenantRequest(_Request):
    """PATCH: a field left out is unchanged; a quota sent as JSON `null` is removed (no limit)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    max_message_bytes: int | None = None
    max_age_hours: int | None = None
    daily_quota: Quota | None = None
    per_second_quota: Quota | None = None
    allow_unverified_domains: bool | None = None
    api_plan: PlanName | None = None  # moves the tenant's API key to that plan's usage plan
    send_rate_per_second: SendRate | None = None  # null: no rate of its own


class SuspendRequest(_Request):
    reason: str | None = Field(default=None, max_length=500)


class TenantView(_View):
    tenant_id: str
    name: str
    created_at: datetime
    max_message_bytes: int
    max_age_hours: int
    daily_quota: int | None
    per_second_quota: int | None
    allow_unverified_domains: bool
    suspended_at: datetime | None
    suspended_reason: str | None
    status: Literal["active", "suspended"]
    api_plan: str
    send_rate_per_second: float | None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        return cls(
            tenant_id=tenant.tenant_id,
            name=tenant.name,
            created_at=tenant.created_at,
            max_message_bytes=tenant.max_message_bytes,
            max_age_hours=tenant.max_age_hours,
            daily_quota=tenant.daily_quota,
            per_second_quota=tenant.per_second_quota,
            allow_unverified_domains=tenant.allow_unverified_domains,
            suspended_at=tenant.suspended_at,
            suspended_reason=tenant.suspended_reason,
            status="suspended" if tenant.suspended else "active",
            api_plan=tenant.api_plan,
            send_rate_per_second=tenant.send_rate_per_second,
        )


class TenantList(_View):
    tenants: list[TenantView]


class EnrollmentView(_View):
    tenant_id: str
    api_plan: str
    enrolled: bool  # False: this environment has no API Gateway usage plans (the local stack)


class EnrollmentList(_View):
    enrollments: list[EnrollmentView]


class ResumedTenant(_View):
    tenant: TenantView
    released: int  # held messages put back on their queues


# -- API keys ----------------------------------------------------------------------------------


class CreateKeyRequest(_Request):
    name: str = Field(default="", max_length=200)
    scopes: list[Scope] | None = Field(default=None, min_length=1)  # None: every scope


class CreatedKey(_View):
    key_id: str
    api_key: str  # shown once: only its hash is kept
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime


class KeyView(_View):
    key_id: str
    prefix: str
    name: str
    scopes: list[str]  # the scopes the key really has (an older key's `emails:*`: all of them)
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyView:
        return cls(
            key_id=key.key_id,
            prefix=key.prefix,
            name=key.name,
            scopes=list(key.granted),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyList(_View):
    keys: list[KeyView]


class RevokedKey(_View):
    key_id: str
    revoked_at: datetime


# -- SMTP servers ------------------------------------------------------------------------------


class WarmupStepRequest(_Request):
    day: int = Field(ge=0, le=3650)  # the server's age in days from which the cap applies
    daily_cap: int = Field(ge=1, le=1_000_000_000)  # messages per UTC day


class ShapingRequest(_Request):
    """A server's traffic shaping (ServerShaping); a field left out keeps its value (the default, on
    create). `warmup: []` means no warm-up ramp (a server that is warm already)."""

    rate_per_second: float | None = Field(default=None, gt=0, le=10_000)
    burst: int | None = Field(default=None, ge=1, le=100_000)
    provider_rate_per_second: float | None = Field(default=None, gt=0, le=10_000)
    provider_burst: int | None = Field(default=None, ge=1, le=100_000)
    warmup: list[WarmupStepRequest] | None = Field(default=None, max_length=100)
    concurrency: int | None = Field(default=None, ge=1, le=32)
    bounce_window: int | None = Field(default=None, ge=10, le=100_000)
    bounce_min_sends: int | None = Field(default=None, ge=1, le=100_000)
    bounce_threshold: float | None = Field(default=None, gt=0, le=1)
    failure_threshold: int | None = Field(default=None, ge=1, le=1000)
    probation_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)

    def given(self) -> dict[str, object]:
        """The fields sent, as petrel.services.servers.shaped takes them."""
        return self.model_dump(exclude_none=True)


class WarmupStepView(_View):
    day: int
    daily_cap: int


class ShapingView(_View):
    rate_per_second: float
    burst: int
    provider_rate_per_second: float
    provider_burst: int
    warmup: list[WarmupStepView]
    concurrency: int
    bounce_window: int
    bounce_min_sends: int
    bounce_threshold: float
    failure_threshold: int
    probation_minutes: int

    @classmethod
    def of(cls, shaping: ServerShaping) -> ShapingView:
        return cls.model_validate(shaping.model_dump())


class ServerEventView(_View):
    type: Literal["server.paused", "server.resumed"]
    at: datetime
    detail: str | None


class CreateServerRequest(_Request):
    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 587 with starttls, 465 with tls
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str = Field(min_length=1, max_length=320)
    password: Password
    pool: Pool = "transactional"
    weight: int = Field(default=1, ge=1, le=1000)
    ca_bundle: str | None = Field(default=None, max_length=256 * 1024)  # PEM text
    shaping: ShapingRequest | None = None  # None: the platform's defaults


class UpdateServerRequest(_Request):
    """PATCH: a field left out is unchanged; `ca_bundle: ""` drops the server's own CA."""

    host: str | None = Field(default=None, min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: SmtpSecurity | None = None
    username: str | None = Field(default=None, min_length=1, max_length=320)
    pool: Pool | None = None
    weight: int | None = Field(default=None, ge=1, le=1000)
    ca_bundle: str | None = Field(default=None, max_length=256 * 1024)
    shaping: ShapingRequest | None = None  # only the shaping fields sent change


class ServerPasswordRequest(_Request):
    password: Password
    verify: bool = True  # try SMTP AUTH with it first; store it only if the server takes it


class ServerView(_View):
    server_id: str
    tenant_id: str
    host: str
    port: int
    security: SmtpSecurity
    username: str
    pool: Pool
    weight: int
    enabled: bool
    ca_bundle: str | None
    created_at: datetime
    shaping: ShapingView
    # An automatic pause (bounce rate, connection failures) or one by command: no traffic until resumed.
    paused_at: datetime | None
    paused_reason: str | None
    resume_at: datetime | None  # probation: it resumes on its own then (None: by command only)
    events: list[ServerEventView]  # the last server.paused / server.resumed, the newest last

    @classmethod
    def of(cls, server: SmtpServer) -> ServerView:
        return cls.model_validate(server.model_dump(exclude={"secret_name"}))


class ServerList(_View):
    servers: list[ServerView]


class StepView(_View):
    name: str
    ok: bool
    detail: str


class ServerCheck(_View):
    ok: bool
    steps: list[StepView]


# -- sending domains (the view is the tenant API's, petrel.models.api.DomainView) -------------------


class DomainList(_View):
    domains: list[DomainView]


# -- mailboxes ---------------------------------------------------------------------------------


class CreateMailboxRequest(_Request):
    address: str = Field(min_length=3, max_length=320)
    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 993 with tls, 143 with starttls
    security: SmtpSecurity = SmtpSecurity.TLS
    username: str | None = Field(default=None, min_length=1, max_length=320)  # None: the address
    password: Password
    ca_bundle: str | None = Field(default=None, max_length=256 * 1024)
    folders: list[str] | None = Field(default=None, min_length=1, max_length=50)  # None: INBOX
    after: MailboxAfter = MailboxAfter.LEAVE
    move_to: str | None = None


class UpdateMailboxRequest(_Request):
    host: str | None = Field(default=None, min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: SmtpSecurity | None = None
    username: str | None = Field(default=None, min_length=1, max_length=320)
    ca_bundle: str | None = Field(default=None, max_length=256 * 1024)  # "": the system's CAs again
    folders: list[str] | None = Field(default=None, min_length=1, max_length=50)
    after: MailboxAfter | None = None
    move_to: str | None = None
    enabled: bool | None = None


class MailboxPasswordRequest(_Request):
    password: Password


class HealthView(_View):
    polled_at: datetime
    error: str | None
    error_at: datetime | None
    last_success_at: datetime | None


class CursorView(_View):
    uidvalidity: int
    last_uid: int
    updated_at: datetime


class MailboxView(_View):
    mailbox_id: str
    tenant_id: str
    address: str
    host: str
    port: int
    security: SmtpSecurity
    username: str
    ca_bundle: str | None
    folders: list[str]
    after: MailboxAfter
    move_to: str | None
    enabled: bool
    created_at: datetime
    health: HealthView | None = None
    cursors: dict[str, CursorView | None] = Field(default_factory=dict)

    @classmethod
    def of(
        cls,
        mailbox: MailboxRecord,
        health: MailboxHealth | None = None,
        cursors: dict[str, FolderCursor | None] | None = None,
    ) -> MailboxView:
        fields = mailbox.model_dump(exclude={"secret_name"})
        return cls.model_validate(
            {
                **fields,
                "health": health.model_dump() if health else None,
                "cursors": {f: (c.model_dump() if c else None) for f, c in (cursors or {}).items()},
            }
        )


class MailboxList(_View):
    mailboxes: list[MailboxView]


class MailboxCheck(_View):
    ok: bool
    steps: list[StepView]
    folders: list[StepView]  # the `select` steps: each folder read-only, with its message count
