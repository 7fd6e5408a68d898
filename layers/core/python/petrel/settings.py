"""Each function's environment as a pydantic settings model, validated once at cold start.

Names of the environment variables come from `petrel.resources`, so the CDK constructs that set
them and the code that reads them cannot disagree.
"""

from __future__ import annotations

import json
import os
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from petrel import resources as r
from petrel.models.records import Tenant
from petrel.models.retry import DEFAULT_DELAYS, DEFAULT_JITTER, RetryLadder, parse_delays

# The plan a tenant is on unless an operator chose another (Tenant.api_plan's default).
DEFAULT_API_PLAN: str = Tenant.model_fields["api_plan"].default


class _Settings(BaseModel):
    """Read from the process environment by each field's alias (pydantic-settings costs ~100 ms to import)."""

    # defer_build: a function validates only its own settings model; the others are never built.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, defer_build=True)

    @classmethod
    def from_env(cls) -> Self:
        return cls.model_validate(dict(os.environ))


class _SendQueueUrls(_Settings):
    """The send queues' URLs, for the functions that put jobs on them."""

    send_transactional_queue_url: str = Field(validation_alias=r.SEND_TRANSACTIONAL.env_var)
    send_bulk_queue_url: str = Field(validation_alias=r.SEND_BULK.env_var)

    def queue_urls(self) -> dict[str, str]:
        return {"transactional": self.send_transactional_queue_url, "bulk": self.send_bulk_queue_url}


class AuthorizerSettings(_Settings):
    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    # The environment's name prefix: the tenant's usage key (petrel.services.auth.usage_key) is made of it.
    usage_key_prefix: str = Field(default="petrel-local", min_length=1, validation_alias=r.USAGE_KEY_PREFIX_ENV)


class StoreSettings(_Settings):
    """What every function that reads or writes messages needs: the stores, and the schedules of
    deferred and scheduled messages (the API creates and cancels them, the worker creates them)."""

    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    messages_table: str = Field(validation_alias=r.MESSAGES.env_var)
    suppressions_table: str = Field(validation_alias=r.SUPPRESSIONS.env_var)
    bodies_bucket: str = Field(validation_alias=r.BODIES_BUCKET_ENV)
    message_retention_days: int = Field(default=30, ge=1, validation_alias=r.MESSAGE_RETENTION_DAYS_ENV)
    schedule_group: str = Field(validation_alias=r.SCHEDULES.group_env_var)
    scheduler_role_arn: str = Field(validation_alias=r.SCHEDULES.role_env_var)
    scheduler_dlq_arn: str = Field(validation_alias=r.SCHEDULES.dlq_arn_env_var)
    send_transactional_queue_arn: str = Field(validation_alias=r.SEND_TRANSACTIONAL.arn_env_var)
    send_bulk_queue_arn: str = Field(validation_alias=r.SEND_BULK.arn_env_var)

    def queue_arns(self) -> dict[str, str]:
        return {"transactional": self.send_transactional_queue_arn, "bulk": self.send_bulk_queue_arn}


class QueueSettings(StoreSettings, _SendQueueUrls):
    """The stores and the send queues' URLs: for functions that put jobs on them (the API; the worker,
    which releases scheduled emails and hands back the jobs it has no time left for)."""


class SweeperSettings(_SendQueueUrls):
    """The sweeper: the messages table (its due index and its tenants' listing), the tenants (whose
    listings it walks), the send queues, and its own knobs."""

    messages_table: str = Field(validation_alias=r.MESSAGES.env_var)
    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    # How long past its due time a message's way forward is given before the sweeper repairs it:
    # longer than a queue's normal backlog and a worker's recording time, or it adds needless jobs.
    grace_seconds: int = Field(default=900, ge=0, validation_alias=r.SWEEP_GRACE_ENV)
    max_messages: int = Field(default=5_000, ge=1, validation_alias=r.SWEEP_MAX_MESSAGES_ENV)
    # A backlog is not a lost job: while a pool's queue holds more jobs than this, the jobs of its
    # waiting messages may still be in it, and the sweeper leaves them alone (the oldest-message alarm
    # reports the backlog). Repairing them would add a job per waiting message every grace period and
    # feed the backlog it is waiting behind.
    backlog_limit: int = Field(default=1_000, ge=0, validation_alias=r.SWEEP_BACKLOG_LIMIT_ENV)


class ApiSettings(QueueSettings):
    idempotency_table: str = Field(validation_alias=r.IDEMPOTENCY.env_var)
    secrets_prefix: str = Field(validation_alias=r.SECRETS_PREFIX_ENV)
    inline_body_limit: int = Field(default=96 * 1024, ge=1024, validation_alias=r.INLINE_BODY_LIMIT_ENV)
    # POST /v1/inbound/raw stores the raw message and queues it; GET /v1/inbound reads the records.
    inbound_table: str = Field(validation_alias=r.INBOUND.env_var)
    ingest_queue_url: str = Field(validation_alias=r.INGEST.env_var)
    inbound_retention_days: int = Field(default=30, ge=1, validation_alias=r.INBOUND_RETENTION_DAYS_ENV)
    # How long an attachment's pre-signed link (GET /v1/inbound/{id}) is valid.
    link_seconds: int = Field(default=900, ge=60, le=604_800, validation_alias=r.LINK_SECONDS_ENV)
    # POST /v1/domains and /verify look up the domain's records (empty resolvers: the system's).
    dns_resolvers: str = Field(default="", validation_alias=r.DNS_RESOLVERS_ENV)
    dns_timeout_seconds: float = Field(default=5.0, gt=0, validation_alias=r.DNS_TIMEOUT_ENV)
    # How long a warm API container keeps the sending domain and server list an email is checked against
    # (a read and a query per request: three quarters of POST /v1/emails' DynamoDB read units), and only while
    # they let mail through (adapters.caching.CachingTenantStore, usable_only). A change for the worse
    # made elsewhere (a domain's failed check, a server disabled) reaches the send routes that late; the
    # worker checks again before relaying. The tenant (its suspension) and every other route read afresh.
    sender_cache_seconds: float = Field(default=5.0, ge=0, validation_alias=r.SENDER_CACHE_ENV)
    # Whether the function writes an access line per request (petrel.api.app). Deployed it does not: the
    # API stage's access log (infra/access_log.py) is the access log there, and a second line repeating it
    # was a third of the single send's log ingestion. Locally (no API Gateway) it does.
    access_log: bool = Field(default=True, validation_alias=r.API_ACCESS_LOG_ENV)


class SendWorkerSettings(QueueSettings):
    secrets_prefix: str = Field(validation_alias=r.SECRETS_PREFIX_ENV)
    retry_delays: tuple[int, ...] = Field(default=DEFAULT_DELAYS, validation_alias=r.RETRY_DELAYS_ENV)
    retry_jitter: float = Field(default=DEFAULT_JITTER, ge=0, lt=1, validation_alias=r.RETRY_JITTER_ENV)
    lease_seconds: int = Field(default=120, ge=5, validation_alias=r.LEASE_SECONDS_ENV)
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias=r.SMTP_TIMEOUT_ENV)
    # The whole of one SMTP transaction, connect to the reply to DATA (the caller may ask for less).
    smtp_transaction_seconds: float = Field(default=45.0, gt=0, validation_alias=r.SMTP_TRANSACTION_ENV)
    config_cache_seconds: float = Field(default=60.0, ge=0, validation_alias=r.CONFIG_CACHE_ENV)
    # The send queues' maxReceiveCount (infra: dlq_max_receive_count): on a job's last receive an
    # unexpected error ends its message `failed`/`worker-error` before SQS dead-letters the job, and a
    # message whose attempt was taken over this many times (its workers keep dying) ends the same way.
    max_receive_count: int = Field(default=3, ge=1, validation_alias=r.MAX_RECEIVE_COUNT_ENV)
    # The per-invocation budget: a record starts only while at least `smtp_transaction_seconds` plus
    # `invocation_margin_seconds` remain; the others go back to their queue after
    # `handback_delay_seconds`, without counting as a failed receive. The margin is also kept between
    # the relay's deadline and the end of the invocation, for recording the outcome.
    invocation_margin_seconds: float = Field(default=5.0, ge=0, validation_alias=r.INVOCATION_MARGIN_ENV)
    handback_delay_seconds: int = Field(default=5, ge=0, le=900, validation_alias=r.HANDBACK_DELAY_ENV)
    # Local delivery: a recipient on a domain one of the tenant's mailboxes receives for is stored raw
    # and queued for ingest instead of relayed.
    ingest_queue_url: str = Field(validation_alias=r.INGEST.env_var)
    # Traffic shaping's shared state (petrel.adapters.buckets): rate buckets, warm-up counters, outcomes.
    buckets_table: str = Field(validation_alias=r.BUCKETS.env_var)
    # Jobs of one batch relayed at once (threads; the relay keeps up to each server's `concurrency`
    # sessions open to it).
    relay_concurrency: int = Field(default=8, ge=1, le=64, validation_alias=r.RELAY_CONCURRENCY_ENV)
    # One log line per relayed attempt too, not only per batch and per attempt that did not relay.
    log_each_attempt: bool = Field(default=False, validation_alias=r.LOG_EACH_ATTEMPT_ENV)
    # Keep SMTP sessions open for the next invocation of a warm container (up to the relay's idle limit);
    # false: every session is closed at the end of each invocation.
    keep_smtp_sessions: bool = Field(default=True, validation_alias=r.KEEP_SESSIONS_ENV)
    # Recipient domains' MX hosts (their provider group, for the provider buckets) are looked up here.
    dns_resolvers: str = Field(default="", validation_alias=r.DNS_RESOLVERS_ENV)
    dns_timeout_seconds: float = Field(default=2.0, gt=0, validation_alias=r.DNS_TIMEOUT_ENV)

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _delays(cls, value: object) -> object:
        return parse_delays(value) if isinstance(value, str) else value

    def ladder(self) -> RetryLadder:
        return RetryLadder(delays=self.retry_delays, jitter=self.retry_jitter)


class PollerSettings(_Settings):
    """The IMAP poller: every tenant's mailboxes (tenants table), their passwords, where raw mail goes."""

    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    bodies_bucket: str = Field(validation_alias=r.BODIES_BUCKET_ENV)
    ingest_queue_url: str = Field(validation_alias=r.INGEST.env_var)
    # Mailboxes read at once (threads, one IMAP connection each).
    concurrency: int = Field(default=8, ge=1, le=64, validation_alias=r.POLL_CONCURRENCY_ENV)
    imap_timeout_seconds: float = Field(default=20.0, gt=0, validation_alias=r.IMAP_TIMEOUT_ENV)
    # UIDs fetched per FETCH; the folder's cursor is saved after each batch is queued.
    batch: int = Field(default=50, ge=1, le=1000, validation_alias=r.POLL_BATCH_ENV)
    # Time kept at the end of an invocation: no new batch starts within it.
    invocation_margin_seconds: float = Field(default=10.0, ge=0, validation_alias=r.INVOCATION_MARGIN_ENV)


class IngestWorkerSettings(_Settings):
    """The ingest worker: raw mail in the bucket to inbound records, statuses, events, suppressions."""

    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    messages_table: str = Field(validation_alias=r.MESSAGES.env_var)
    suppressions_table: str = Field(validation_alias=r.SUPPRESSIONS.env_var)
    inbound_table: str = Field(validation_alias=r.INBOUND.env_var)
    bodies_bucket: str = Field(validation_alias=r.BODIES_BUCKET_ENV)
    inbound_retention_days: int = Field(default=30, ge=1, validation_alias=r.INBOUND_RETENTION_DAYS_ENV)
    # The ingest queue's maxReceiveCount: a job failing on its last receive is logged before its DLQ.
    max_receive_count: int = Field(default=3, ge=1, validation_alias=r.MAX_RECEIVE_COUNT_ENV)


class DomainCheckerSettings(_Settings):
    """The scheduled drift re-check of every sending domain's DNS records, and the end of retired DKIM
    keys: their secrets are deleted once their grace has passed (hence the secrets prefix)."""

    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    secrets_prefix: str = Field(validation_alias=r.SECRETS_PREFIX_ENV)
    dns_resolvers: str = Field(default="", validation_alias=r.DNS_RESOLVERS_ENV)
    dns_timeout_seconds: float = Field(default=5.0, gt=0, validation_alias=r.DNS_TIMEOUT_ENV)


class AdminApiSettings(_SendQueueUrls):
    """The admin API (IAM-authorized): tenants, keys, servers, mailboxes and domains (the tenants table
    and the tenants' secrets). Resuming a suspended tenant reads its held messages (the messages table)
    and puts their jobs back on the send queues; it touches no body, suppression or schedule."""

    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    messages_table: str = Field(validation_alias=r.MESSAGES.env_var)
    secrets_prefix: str = Field(validation_alias=r.SECRETS_PREFIX_ENV)
    dns_resolvers: str = Field(default="", validation_alias=r.DNS_RESOLVERS_ENV)
    dns_timeout_seconds: float = Field(default=5.0, gt=0, validation_alias=r.DNS_TIMEOUT_ENV)
    # The environment's max_message_age_hours (cdk.json): the longest max_age_hours a tenant may have.
    max_message_age_hours: int = Field(
        default=Tenant.model_fields["max_age_hours"].default, ge=1, validation_alias=r.MAX_MESSAGE_AGE_HOURS_ENV
    )

    # The tenants' API plans: name -> its API Gateway usage plan's name ("" where there is no API Gateway, as in
    # the local stack, whose front throttles by the plan itself). A tenant's plan must be one of these.
    api_plans: dict[str, str] = Field(
        default_factory=lambda: {DEFAULT_API_PLAN: ""}, min_length=1, validation_alias=r.API_PLANS_ENV
    )
    usage_key_prefix: str = Field(default="petrel-local", min_length=1, validation_alias=r.USAGE_KEY_PREFIX_ENV)

    @field_validator("api_plans", mode="before")
    @classmethod
    def _plans_from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value
