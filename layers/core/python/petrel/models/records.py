"""What Petrel stores: tenants and their configuration, emails, per-recipient messages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Pool = Literal["transactional", "bulk"]
POOLS: tuple[Pool, ...] = ("transactional", "bulk")


class Record(BaseModel):
    # defer_build: a model's validator is built on its first use, so a function pays at cold start only
    # for the records it really reads (the API never builds a Mailbox, the poller never an EmailRecord).
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class Tenant(Record):
    tenant_id: str
    name: str
    created_at: datetime
    max_message_bytes: int = 25 * 1024 * 1024  # the encoded message, as hosted providers allow
    max_age_hours: int = 24
    # Suspended: the API refuses its sends (403) and the workers hold its queued and scheduled mail
    # (not lost: it goes out when the tenant is resumed).
    suspended_at: datetime | None = None
    suspended_reason: str | None = None
    # Sending from a domain whose SPF and DKIM are not verified is refused unless this is set (testing).
    allow_unverified_domains: bool = False
    daily_quota: int | None = None  # emails' recipients accepted per UTC day; None: no limit
    per_second_quota: int | None = None  # recipients accepted per second; None: no limit
    # The API Gateway usage plan its requests are throttled by (infra/config.py `api_plans`).
    api_plan: str = "standard"
    # Messages per second the workers relay for it, across its servers (None: only its servers' limits).
    send_rate_per_second: float | None = Field(default=None, gt=0)

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None


Scope = Literal["send", "read", "domains", "suppressions", "inbound", "webhooks"]
SCOPES: tuple[Scope, ...] = ("send", "read", "domains", "suppressions", "inbound", "webhooks")
# Keys minted before scopes were split carry these two; they keep every scope.
LEGACY_SCOPES = frozenset({"emails:send", "emails:read"})


def granted_scopes(scopes: Iterable[str]) -> tuple[Scope, ...]:
    """The scopes a list of scope names grants, in SCOPES' order: an older key's `emails:*` names grant
    every scope, a name that is no scope grants nothing. Shared by the key record and the API's scope
    check (an authorizer answer cached before the scopes were split carries the old names)."""
    names = set(scopes)
    if names & LEGACY_SCOPES:
        return SCOPES
    return tuple(scope for scope in SCOPES if scope in names)


class ApiKey(Record):
    tenant_id: str
    key_id: str
    name: str = ""
    key_hash: str
    prefix: str
    scopes: tuple[str, ...] = SCOPES
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def granted(self) -> tuple[Scope, ...]:
        """The scopes this key has: an older key's `emails:*` scopes grant every scope."""
        return granted_scopes(self.scopes)


class DomainStatus(StrEnum):
    PENDING = "pending"  # created; its SPF or DKIM record has not been verified yet: mail is refused
    VERIFIED = "verified"  # SPF and DKIM verified: mail may go out
    FAILED = "failed"  # was verified, then a re-check found SPF or DKIM gone or wrong: mail is refused


class DkimSigner(StrEnum):
    PETREL = "petrel"  # Petrel signs with its own keys (private keys in Secrets Manager)
    MAILU = "mailu"  # the tenant's MailU (rspamd) signs; Petrel only verifies the published key


DkimAlgorithm = Literal["rsa", "ed25519"]
KeyState = Literal["active", "next", "retired"]
# active: signs now; next: published for a rotation, signs once its record is verified;
# retired: signed before a rotation, stays published until mail signed with it has landed.


class DomainKey(Record):
    """One DKIM key of a domain: its selector and public half (the private half is at `secret_name`)."""

    selector: str
    algorithm: DkimAlgorithm = "rsa"
    secret_name: str | None = None  # None when the tenant's MailU signs
    public_key: str = ""  # the p= value (base64), as published; "" when only the DNS knows it (mailu)
    state: KeyState = "active"
    created_at: datetime
    retired_at: datetime | None = None


RecordPurpose = Literal["spf", "dkim", "dmarc", "return_path_mx", "return_path_spf", "mx"]
CheckStatus = Literal["pending", "verified", "missing", "wrong", "warning"]


class DnsRecordCheck(Record):
    """A DNS record the tenant must publish, and what the last verification found."""

    purpose: RecordPurpose
    type: Literal["TXT", "MX"]
    name: str  # the fully qualified owner name
    value: str  # what to publish (an MX is "<preference> <host>.")
    selector: str | None = None  # a DKIM record's selector
    required: bool = False  # SPF and DKIM: mail is refused until they are verified
    status: CheckStatus = "pending"
    found: tuple[str, ...] = ()  # what the lookup found (on wrong, warning)
    detail: str | None = None


class DomainEvent(Record):
    """`domain.verified` or `domain.dns_error`, kept on the domain (the last few)."""

    type: Literal["domain.verified", "domain.dns_error"]
    at: datetime
    detail: str | None = None


class SendingDomain(Record):
    tenant_id: str
    domain: str
    return_path_domain: str
    created_at: datetime
    status: DomainStatus = DomainStatus.PENDING
    signer: DkimSigner = DkimSigner.PETREL
    keys: tuple[DomainKey, ...] = ()
    spf: tuple[str, ...] = ()  # the mechanisms that authorize the tenant's MailU: include:, a:, ip4:, ip6:
    mx: tuple[str, ...] = ()  # the MailU hosts that receive for the return-path domain (and the domain)
    receives: bool = False  # the tenant receives mail at the domain itself (an MX record is asked for)
    dmarc_rua: str | None = None  # where aggregate reports go (mailto:...)
    records: tuple[DnsRecordCheck, ...] = ()  # what to publish and the last verification of each
    checked_at: datetime | None = None
    verified_at: datetime | None = None
    events: tuple[DomainEvent, ...] = ()
    # bumped by every write after the create (TenantStore.update_domain writes only on the revision it
    # read); a record stored before revisions existed reads as 0
    revision: int = 0

    @property
    def sendable(self) -> bool:
        return self.status is DomainStatus.VERIFIED

    @property
    def signing_keys(self) -> tuple[DomainKey, ...]:
        """Every key Petrel signs each message with: the active RSA key, then an active Ed25519 key."""
        if self.signer is not DkimSigner.PETREL:
            return ()
        return tuple(k for k in self.keys if k.state == "active")


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"
    TLS = "tls"


class WarmupStep(Record):
    """From the server's `day`-th day of age (0: the day it was added), at most `daily_cap` messages a
    UTC day through it."""

    day: int = Field(ge=0)
    daily_cap: int = Field(ge=1)


# A new server's ramp (README "Traffic shaping"): after the last step it has no daily cap.
DEFAULT_WARMUP: tuple[WarmupStep, ...] = (
    WarmupStep(day=0, daily_cap=500),
    WarmupStep(day=1, daily_cap=1_000),
    WarmupStep(day=2, daily_cap=2_000),
    WarmupStep(day=4, daily_cap=5_000),
    WarmupStep(day=7, daily_cap=10_000),
    WarmupStep(day=14, daily_cap=25_000),
    WarmupStep(day=21, daily_cap=50_000),
    WarmupStep(day=30, daily_cap=100_000),
)
WARMUP_DAYS = 45  # from this day of age on, no daily cap


class ServerShaping(Record):
    """How fast one SMTP server may be sent through, and when it is paused (petrel.services.shaping).
    Every field has the platform's default; a server stores only what its operator changed."""

    rate_per_second: float = Field(default=20.0, gt=0)  # messages per second through the server
    burst: int = Field(default=40, ge=1)  # tokens its bucket holds
    provider_rate_per_second: float = Field(default=5.0, gt=0)  # per destination provider (grouped by MX)
    provider_burst: int = Field(default=10, ge=1)
    # The daily cap by the server's age in days; () means none (a server already warm).
    warmup: tuple[WarmupStep, ...] = DEFAULT_WARMUP
    concurrency: int = Field(default=4, ge=1, le=32)  # SMTP sessions one worker keeps open to it
    bounce_window: int = Field(default=200, ge=10)  # the last N sends the bounce rate is taken over
    bounce_min_sends: int = Field(default=50, ge=1)  # fewer sends than this never pause the server
    bounce_threshold: float = Field(default=0.10, gt=0, le=1)  # hard bounces / sends that pause it
    failure_threshold: int = Field(default=5, ge=1)  # consecutive connection failures that pause it
    probation_minutes: int = Field(default=60, ge=1)  # a paused server resumes on its own after this


class ServerEvent(Record):
    """`server.paused` or `server.resumed`, kept on the server (the last few)."""

    type: Literal["server.paused", "server.resumed"]
    at: datetime
    detail: str | None = None


class SmtpServer(Record):
    """A tenant's MailU submission endpoint. The password is in Secrets Manager at `secret_name`."""

    tenant_id: str
    server_id: str
    host: str
    port: int = Field(ge=1, le=65535)
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str
    secret_name: str
    ca_bundle: str | None = None
    pool: Pool = "transactional"
    weight: int = Field(default=1, ge=1, le=1000)
    enabled: bool = True
    created_at: datetime
    shaping: ServerShaping = ServerShaping()
    # Paused by the worker's protection (bounce rate, connection failures) or by an operator: it takes
    # no traffic until resumed by command, or on its own at `resume_at` (probation; None: by command).
    paused_at: datetime | None = None
    paused_reason: str | None = None
    resume_at: datetime | None = None
    events: tuple[ServerEvent, ...] = ()

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def takes_traffic(self, now: datetime) -> bool:
        """Enabled and not paused, or paused with its probation over (the next dispatch ends the pause)."""
        if not self.enabled:
            return False
        return self.paused_at is None or (self.resume_at is not None and self.resume_at <= now)


class MailboxAfter(StrEnum):
    """What the poller does with a message once it is ingested."""

    LEAVE = "leave"
    SEEN = "seen"  # set \\Seen
    MOVE = "move"  # move it to the mailbox's `move_to` folder


class Mailbox(Record):
    """A tenant's MailU mailbox that Petrel reads over IMAP. The password is in Secrets Manager at
    `secret_name`. `address` is the mailbox's own address: its domain is one the tenant receives for
    (a recipient there is delivered locally, without SMTP)."""

    tenant_id: str
    mailbox_id: str
    address: str
    host: str
    port: int = Field(ge=1, le=65535)
    security: SmtpSecurity = SmtpSecurity.TLS
    username: str
    secret_name: str
    ca_bundle: str | None = None
    folders: tuple[str, ...] = ("INBOX",)
    after: MailboxAfter = MailboxAfter.LEAVE
    move_to: str | None = None
    enabled: bool = True
    created_at: datetime

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


class FolderCursor(Record):
    """How far the poller has read one folder of one mailbox: every UID up to `last_uid` of this
    `uidvalidity` has been handed to the ingest queue."""

    tenant_id: str
    mailbox_id: str
    folder: str
    uidvalidity: int
    last_uid: int = 0
    updated_at: datetime


class MailboxHealth(Record):
    """The last poll of a mailbox: when, and the error that stopped it (None when it went well)."""

    tenant_id: str
    mailbox_id: str
    polled_at: datetime
    error: str | None = None
    error_at: datetime | None = None  # the last failure's time (kept after a later success)
    last_success_at: datetime | None = None


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    RELAYED = "relayed"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


# A job for a message in one of these states has nothing left to do.
FINAL_STATUSES = frozenset(
    {
        MessageStatus.RELAYED,
        MessageStatus.DELIVERED,
        MessageStatus.BOUNCED,
        MessageStatus.FAILED,
        MessageStatus.SUPPRESSED,
        MessageStatus.CANCELLED,
    }
)
# States a worker may take a lease from (besides `sending` whose lease has expired).
LEASABLE_STATUSES = (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SCHEDULED)
# States `DELETE /v1/emails/{id}` cancels: nothing has been relayed, nothing is in flight.
CANCELLABLE_STATUSES = (MessageStatus.SCHEDULED, MessageStatus.QUEUED, MessageStatus.DEFERRED)

RecipientKind = Literal["to", "cc", "bcc"]


class Recipient(Record):
    message_id: str
    email: str
    kind: RecipientKind


class Reply(Record):
    """An SMTP reply as stored and shown (code 0: no reply, a network failure)."""

    code: int
    enhanced: str | None = None
    text: str
    stage: str


class Attempt(Record):
    number: int
    started_at: datetime
    finished_at: datetime | None = None
    server_id: str | None = None
    outcome: str | None = None
    reply: Reply | None = None


class EventName(StrEnum):
    """What happened to a message, as its events timeline (and the API) names it.

    The values are stored in every message's `events` and shown by `GET /v1/emails/{id}`: renaming
    one is a migration, not a refactoring. A relayed message's event is `email.sent`.
    """

    QUEUED = "email.queued"
    SCHEDULED = "email.scheduled"
    SENT = "email.sent"
    DELIVERED = "email.delivered"  # a delivery report said so (or a local delivery)
    DEFERRED = "email.deferred"
    BOUNCED = "email.bounced"
    FAILED = "email.failed"
    SUPPRESSED = "email.suppressed"
    CANCELLED = "email.cancelled"
    COMPLAINED = "email.complained"  # an ARF report from the recipient's provider
    AUTO_REPLIED = "email.auto_replied"  # an automatic reply (out of office, vacation, ...)
    REPLIED = "email.replied"  # a human reply threaded to the message


class Event(Record):
    type: EventName
    at: datetime
    message_id: str
    recipient: str
    reply: Reply | None = None
    detail: str | None = None


class EmailRecord(Record):
    """One API request's email. The MIME body is built once at submission (same bytes every attempt)."""

    tenant_id: str
    email_id: str
    from_address: str
    subject: str
    header_message_id: str
    pool: Pool
    tags: dict[str, str] = Field(default_factory=dict)
    recipients: tuple[Recipient, ...]
    size: int
    body_inline: bytes | None = None
    body_key: str | None = None
    created_at: datetime


class MessageRecord(Record):
    """One recipient's copy of an email: the unit of status, retries and events."""

    tenant_id: str
    email_id: str
    message_id: str
    recipient: str
    kind: RecipientKind
    pool: Pool
    status: MessageStatus
    attempt: int = 0
    lease_until: int | None = None
    # How many times a worker took over the current attempt's expired lease (its holder died); reset by
    # the next attempt's lease. Past the environment's receive count the message ends `worker-error`.
    takeovers: int = 0
    bounce_class: str | None = None
    failure_reason: str | None = None
    last_reply: Reply | None = None
    next_attempt_at: datetime | None = None  # deferred: the retry's time; scheduled: send_at
    send_at: datetime | None = None  # asked for at submission; the maximum age counts from here
    attempts: tuple[Attempt, ...] = ()
    events: tuple[Event, ...] = ()
    # The envelope sender (VERP: `bounces+<message id>@<return-path domain>`), fixed at submission so
    # every attempt uses the same one and a client can correlate reports too. None on older records.
    return_path: str | None = None
    created_at: datetime
    updated_at: datetime


class Suppression(Record):
    """An address a tenant no longer sends to: added on a mailbox-class hard bounce, or by hand."""

    tenant_id: str
    email: str  # lower-cased
    reason: str  # "hard-bounce", "manual", ...
    detail: str | None = None  # the bounce's SMTP reply, or the caller's note
    message_id: str | None = None  # the message whose bounce added it
    created_at: datetime
