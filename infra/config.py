"""Per-environment settings, read from the `environments` object of the cdk.json context.

Each environment (`dev`, `staging`, `prod`) is validated into a frozen `EnvironmentConfig`; a bad
value fails synthesis with a message that names the exact key, e.g.
`cdk.json context environments.dev.batch_size: Input should be greater than or equal to 1`.

This module imports no CDK code, so it is cheap to test on its own.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from petrel import resources
from petrel.adapters.dns import parse_resolvers
from petrel.models.api import MAX_SCHEDULE_DAYS
from petrel.models.records import Tenant
from petrel.models.retry import parse_delays
from petrel.settings import ApiSettings, DomainCheckerSettings, PollerSettings, SweeperSettings

CONTEXT_KEY = "environments"

# The retention periods CloudWatch Logs accepts (days).
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

# An SQS event source without a batching window takes at most 10 records per batch.
_MAX_BATCH_WITHOUT_WINDOW = 10


class ConfigError(ValueError):
    """The cdk.json context does not describe a valid environment."""


class ApiPlan(BaseModel):
    """One API Gateway usage plan: the throttle (and optional daily quota) of each tenant on it, per API
    key, i.e. per tenant (the authorizer names the tenant's key). A tenant over it gets 429 from API
    Gateway before any Petrel Lambda function runs; the local front applies the same numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    rate_per_second: float = Field(gt=0, le=10_000)  # steady requests per second
    burst: int = Field(ge=1, le=5_000)  # requests at once
    # Requests per UTC day (API Gateway's plan quota); None: no quota, only the rate.
    requests_per_day: int | None = Field(default=None, ge=1)

    @field_validator("rate_per_second", mode="before")
    @classmethod
    def _whole_numbers_too(cls, value: Any) -> Any:
        # cdk.json's 50 is an int; strict mode would refuse it for a float.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


# The plans of an environment that names none (Tenant.api_plan's default is "standard").
DEFAULT_API_PLANS: dict[str, ApiPlan] = {
    Tenant.model_fields["api_plan"].default: ApiPlan(rate_per_second=50, burst=100),
    "bulk": ApiPlan(rate_per_second=500, burst=1000),
}
# AWS WAF's bounds on a rate-based rule's limit (requests per 5 minutes per IP).
WAF_RATE_LIMIT_MIN = 10
WAF_RATE_LIMIT_MAX = 2_000_000_000


class EnvironmentConfig(BaseModel):
    """Everything that differs between `dev`, `staging` and `prod`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,19}$")
    name_prefix: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
    log_retention_days: int
    message_retention_days: int = Field(ge=1, le=3650)
    body_retention_days: int = Field(ge=1, le=3650)
    batch_size: int = Field(ge=1, le=10_000)
    max_batching_window_seconds: int = Field(ge=0, le=300)
    max_concurrency: dict[str, int]
    dlq_max_receive_count: int = Field(ge=1, le=1000)
    alarm_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    worker_timeout_seconds: int = Field(ge=10, le=900)
    worker_memory_mb: int = Field(ge=128, le=10_240)
    api_memory_mb: int = Field(ge=128, le=10_240)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    tracing: StrictBool
    removal_policy: Literal["destroy", "retain"]
    # Optional tuning, with defaults that suit every environment.
    smtp_timeout_seconds: int = Field(default=30, ge=1, le=300)  # each socket operation of a transaction
    smtp_transaction_seconds: int = Field(default=45, ge=1, le=900)  # the whole transaction, connect to DATA
    # Jobs of one worker batch relayed at once (threads; each server keeps up to its own session limit).
    worker_relay_concurrency: int = Field(default=8, ge=1, le=64)
    api_timeout_seconds: int = Field(default=29, ge=1, le=29)
    # Requests/s for the whole stage (every tenant and every unauthenticated request together): at least
    # each plan's per-tenant throttle, which is checked against it.
    api_throttle_rate_limit: int = Field(default=1_000, ge=1, le=10_000)
    api_throttle_burst_limit: int = Field(default=2_000, ge=1, le=5_000)
    # The tenants' API plans (name -> per-tenant throttle), each an API Gateway usage plan on the stage;
    # a tenant's `api_plan` must name one of them (the admin API checks it).
    api_plans: dict[str, ApiPlan] = Field(default_factory=lambda: dict(DEFAULT_API_PLANS), min_length=1)
    # The web ACL's rate-based rule: requests per 5 minutes from one IP address above which that address
    # gets 429 (the API's problem document) until it slows down; None: no rate rule. Needs `waf: true`.
    waf_rate_limit: int | None = Field(default=None, ge=WAF_RATE_LIMIT_MIN, le=WAF_RATE_LIMIT_MAX)
    authorizer_memory_mb: int = Field(default=256, ge=128, le=10_240)
    authorizer_timeout_seconds: int = Field(default=10, ge=1, le=30)
    # Age of the oldest message in a send queue that raises an alarm. A deferred or scheduled
    # message waits in EventBridge Scheduler, not in the queue: age there means the workers lag.
    oldest_message_alarm_seconds: int = Field(default=900, ge=60, le=1_209_600)
    # The send worker's retry ladder (seconds after each failed attempt, the last repeats);
    # absent: PETREL_RETRY_DELAYS is not set and the code's default ladder (DESIGN.md section 1) applies.
    retry_delays: tuple[int, ...] | None = None
    # The sweeper (EventBridge rule): how often it runs, and how long past its due time a message's
    # way forward is given before it is put back on its queue (longer than a normal queue backlog).
    sweep_interval_minutes: int = Field(default=5, ge=1, le=60)
    sweep_grace_seconds: int = Field(default=SweeperSettings.model_fields["grace_seconds"].default, ge=60, le=86_400)
    # Jobs on a send queue above which the sweeper leaves that pool's waiting messages alone: a backlog
    # is not a lost job (petrel.services.sweep). About what the workers drain within the grace.
    sweep_backlog_limit: int = Field(default=SweeperSettings.model_fields["backlog_limit"].default, ge=0)
    # The longest time a message may be retried (a tenant's `max_age_hours`; Tenant's default unless
    # some tenant has more): message and body retention must outlast `send_at`'s horizon plus this.
    max_message_age_hours: int = Field(default=Tenant.model_fields["max_age_hours"].default, ge=1, le=24 * 30)
    # A WAFv2 web ACL on the API stage (infra/constructs/waf.py): refuses a body declared over the
    # API's limit with its 413 problem before Lambda's payload limit turns it into a 5xx.
    waf: StrictBool = True
    # -- the ingest side (DESIGN.md section 1): the IMAP poller, the ingest queue and its worker.
    # How often the poller's EventBridge rule runs it, and its sizing. One run reads every mailbox (in
    # threads), so by default at most one runs at a time (reserved concurrency 1; false: no reservation,
    # for accounts whose concurrency limit leaves none to reserve: overlapping runs are safe, as cursor
    # writes are conditional and ingest is idempotent, only wasteful).
    poll_interval_minutes: int = Field(default=1, ge=1, le=60)
    poller_memory_mb: int = Field(default=512, ge=128, le=10_240)
    poller_timeout_seconds: int = Field(default=300, ge=30, le=900)
    poller_one_at_a_time: StrictBool = True
    poll_concurrency: int = Field(default=PollerSettings.model_fields["concurrency"].default, ge=1, le=64)
    imap_timeout_seconds: int = Field(default=20, ge=1, le=300)  # each IMAP socket operation
    poll_batch: int = Field(default=PollerSettings.model_fields["batch"].default, ge=1, le=1000)  # UIDs per FETCH
    # The ingest worker (SQS event source on the ingest queue, whose visibility is 6x its timeout).
    ingest_memory_mb: int = Field(default=1024, ge=128, le=10_240)  # a 25 MB attachment is parsed in memory
    ingest_timeout_seconds: int = Field(default=120, ge=10, le=900)
    ingest_batch_size: int = Field(default=10, ge=1, le=10_000)
    ingest_max_concurrency: int = Field(default=5, ge=2, le=1000)
    # How long raw incoming mail (bodies bucket, under resources.INBOUND_PREFIX) and inbound records
    # (TTL) are kept, and how long the pre-signed link to an incoming attachment is valid.
    inbound_retention_days: int = Field(default=30, ge=1, le=3650)
    inbound_link_seconds: int = Field(default=ApiSettings.model_fields["link_seconds"].default, ge=60, le=604_800)
    # -- sending domains (issue 10). The resolvers the API, the admin API and the domain checker ask for
    # a domain's records: "ip" or "ip:port" ("[ipv6]:port"), comma-separated; empty: the Lambda
    # environment's own resolver; and the timeout of one lookup (a verification looks several records up
    # within API Gateway's 29 s). How often the domain checker re-checks
    # every domain's records (drift: a DKIM record removed stops the domain's mail before receivers
    # start failing it), one run at a time (reserved concurrency 1) unless the account has no
    # concurrency to reserve.
    dns_resolvers: str = ""
    dns_timeout_seconds: float = Field(
        default=DomainCheckerSettings.model_fields["dns_timeout_seconds"].default, gt=0, le=10
    )
    domain_check_minutes: int = Field(default=360, ge=5, le=1440)
    domain_checker_memory_mb: int = Field(default=256, ge=128, le=10_240)
    domain_checker_timeout_seconds: int = Field(default=300, ge=30, le=900)
    domain_checker_one_at_a_time: StrictBool = True
    # The admin API function (IAM-authorized /v1/admin/...): its own sizing, within API Gateway's 29 s.
    admin_api_memory_mb: int = Field(default=512, ge=128, le=10_240)
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")

    @field_validator("log_retention_days")
    @classmethod
    def _known_retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            allowed = ", ".join(str(days) for days in LOG_RETENTION_DAYS)
            raise ValueError(f"CloudWatch Logs accepts only these retention periods (days): {allowed}")
        return value

    @field_validator("api_plans", mode="before")
    @classmethod
    def _plans_from_json(cls, value: Any) -> Any:
        # strict mode takes a model instance only: build each plan from cdk.json's object here.
        if isinstance(value, dict):
            return {
                name: ApiPlan.model_validate(plan) if isinstance(plan, dict) else plan for name, plan in value.items()
            }
        return value

    @field_validator("api_plans")
    @classmethod
    def _plan_names(cls, value: dict[str, ApiPlan]) -> dict[str, ApiPlan]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", name):
                raise ValueError(f"plan name {name!r}: lower-case letters, digits and '-', starting with a letter")
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _delays_from_json(cls, value: Any) -> Any:
        # cdk.json gives a JSON array; strict mode accepts only a tuple.
        return tuple(value) if isinstance(value, list) else value

    @field_validator("retry_delays")
    @classmethod
    def _delays_the_worker_accepts(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return value
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("needs at least one delay, each a positive number of seconds")
        # The parser the worker applies to PETREL_RETRY_DELAYS must read back the same ladder.
        if parse_delays(",".join(str(delay) for delay in value)) != value:
            raise ValueError(f"the worker would not read {list(value)} back unchanged")
        return value

    @field_validator("dns_resolvers")
    @classmethod
    def _resolver_addresses(cls, value: str) -> str:
        _check_resolvers(value)
        return value

    @field_validator("max_concurrency")
    @classmethod
    def _one_per_send_queue(cls, value: dict[str, int]) -> dict[str, int]:
        expected = {spec.name for spec in resources.SEND_QUEUES}
        if set(value) != expected:
            raise ValueError(f"needs exactly one entry per send queue: {sorted(expected)}, got {sorted(value)}")
        for queue, concurrency in value.items():
            if not 2 <= concurrency <= 1000:
                raise ValueError(f"{queue}: maximum concurrency must be between 2 and 1000, got {concurrency}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentConfig:
        if self.batch_size > _MAX_BATCH_WITHOUT_WINDOW and self.max_batching_window_seconds == 0:
            raise ValueError(
                f"batch_size {self.batch_size} > {_MAX_BATCH_WITHOUT_WINDOW} needs max_batching_window_seconds >= 1"
            )
        if self.smtp_timeout_seconds >= self.worker_timeout_seconds:
            raise ValueError("smtp_timeout_seconds must be shorter than worker_timeout_seconds")
        if not self.smtp_timeout_seconds <= self.smtp_transaction_seconds < self.worker_timeout_seconds:
            raise ValueError(
                "smtp_transaction_seconds must be at least smtp_timeout_seconds and shorter than worker_timeout_seconds"
            )
        # A worker that dies holding a lease is SQS's to redeliver (after the visibility timeout, the
        # lease long over); the sweeper steps in only if that way forward is gone too.
        redelivery = max(self.queue_visibility_seconds(q) for q in resources.SEND_QUEUES) - self.worker_timeout_seconds
        if self.sweep_grace_seconds <= redelivery:
            raise ValueError(
                f"sweep_grace_seconds {self.sweep_grace_seconds} must be longer than the send queues' "
                f"visibility timeout less the lease ({redelivery} s), or the sweeper races SQS's redelivery"
            )
        longest = self.longest_message_life_hours
        for key in ("message_retention_days", "body_retention_days"):
            days: int = getattr(self, key)
            if days * 24 < longest:
                raise ValueError(
                    f"{key} {days} is shorter than a message can wait: send_at up to {MAX_SCHEDULE_DAYS} days "
                    f"ahead plus max_message_age_hours {self.max_message_age_hours} of retries need at least "
                    f"{math.ceil(longest / 24)} days"
                )
        self._consistent_ingest()
        self._consistent_edge()
        if (self.account is None) != (self.region is None):
            raise ValueError("account and region must be given together (or both left out)")
        return self

    def _consistent_edge(self) -> None:
        # A tenant's throttle above the stage's would never be reached: the stage refuses first.
        for name, plan in self.api_plans.items():
            if plan.rate_per_second > self.api_throttle_rate_limit or plan.burst > self.api_throttle_burst_limit:
                raise ValueError(
                    f"api_plans.{name}: rate {plan.rate_per_second:g}/s burst {plan.burst} is over the stage's "
                    f"api_throttle_rate_limit {self.api_throttle_rate_limit} / api_throttle_burst_limit "
                    f"{self.api_throttle_burst_limit}"
                )
        if self.waf_rate_limit is not None and not self.waf:
            raise ValueError("waf_rate_limit needs waf: true (the rate rule is a rule of the web ACL)")

    def _consistent_ingest(self) -> None:
        if self.ingest_batch_size > _MAX_BATCH_WITHOUT_WINDOW and self.max_batching_window_seconds == 0:
            raise ValueError(
                f"ingest_batch_size {self.ingest_batch_size} > {_MAX_BATCH_WITHOUT_WINDOW} needs "
                "max_batching_window_seconds >= 1"
            )
        # A run must have time for at least one IMAP exchange beyond the margin it keeps at its end.
        margin = PollerSettings.model_fields["invocation_margin_seconds"].default
        if self.imap_timeout_seconds + margin >= self.poller_timeout_seconds:
            raise ValueError(
                f"imap_timeout_seconds plus the poller's {margin:g} s margin must be shorter than "
                "poller_timeout_seconds"
            )
        # An ingest job points at raw mail in the bucket: the mail must outlive the job, even one that
        # waited in the dead-letter queue for as long as it keeps anything (counted from the first send).
        if self.inbound_retention_days <= resources.INGEST.dlq_retention_days:
            raise ValueError(
                f"inbound_retention_days {self.inbound_retention_days} must be longer than the ingest "
                f"dead-letter queue's {resources.INGEST.dlq_retention_days} days, or a redriven job finds "
                "its raw mail expired"
            )

    @property
    def longest_message_life_hours(self) -> int:
        """From acceptance to the last retry of a message scheduled as far ahead as allowed."""
        return MAX_SCHEDULE_DAYS * 24 + self.max_message_age_hours

    @property
    def destroy_on_delete(self) -> bool:
        return self.removal_policy == "destroy"

    @property
    def secrets_prefix(self) -> str:
        return resources.secrets_prefix(self.name_prefix)

    def physical_name(self, name: str) -> str:
        return resources.physical_name(self.name_prefix, name)

    @property
    def retry_delays_env(self) -> str | None:
        """The value of PETREL_RETRY_DELAYS ("60,300,..."), or None to keep the code's default ladder."""
        return None if self.retry_delays is None else ",".join(str(delay) for delay in self.retry_delays)

    def consumer_timeout_seconds(self, queue: resources.QueueSpec) -> int:
        """The timeout of the function that consumes `queue`: the ingest worker's, or the send worker's."""
        return self.ingest_timeout_seconds if queue == resources.INGEST else self.worker_timeout_seconds

    def queue_visibility_seconds(self, queue: resources.QueueSpec) -> int:
        return queue.visibility_factor * self.consumer_timeout_seconds(queue)


def _check_resolvers(value: str) -> None:
    """Each resolver of `dns_resolvers`, read by the functions' own parser, must be an IP address and
    port: a Lambda function asks resolvers by address (a name would need a resolver of its own)."""
    try:
        servers = parse_resolvers(value)
    except ValueError:
        raise ValueError(f"{value!r}: expected ip, ip:port or [ipv6]:port, separated by commas") from None
    for host, port in servers:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r}: a resolver is an IP address, optionally with :port") from None
        if not 1 <= port <= 65_535:
            raise ValueError(f"{host}:{port}: the port must be between 1 and 65535")


def _describe(error: ValidationError, where: str) -> str:
    lines = []
    for problem in error.errors():
        location = ".".join([where, *(str(part) for part in problem["loc"])])
        message = re.sub(r"^Value error, ", "", problem["msg"])
        lines.append(f"cdk.json context {location}: {message}")
    return "\n".join(lines)


def parse_environment(name: str, raw: Any) -> EnvironmentConfig:
    """Validate one entry of the `environments` context object."""
    where = f"{CONTEXT_KEY}.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"cdk.json context {where}: expected an object, got {type(raw).__name__}")
    if "name" in raw:
        raise ConfigError(f"cdk.json context {where}.name: not allowed, the environment is named by its key")
    try:
        return EnvironmentConfig.model_validate({"name": name, **raw})
    except ValidationError as error:
        raise ConfigError(_describe(error, where)) from None


def parse_environments(raw: Any) -> dict[str, EnvironmentConfig]:
    """Validate the whole `environments` context object, in the order it is written."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"cdk.json context {CONTEXT_KEY}: expected a non-empty object of environments")
    configs = {name: parse_environment(name, value) for name, value in raw.items()}
    prefixes = [config.name_prefix for config in configs.values()]
    duplicates = sorted({prefix for prefix in prefixes if prefixes.count(prefix) > 1})
    if duplicates:
        raise ConfigError(f"cdk.json context {CONTEXT_KEY}: name_prefix must be unique, repeated: {duplicates}")
    return configs


def select_environments(raw: Any, env_name: str | None) -> list[EnvironmentConfig]:
    """The environment named by `-c env=<name>`, or every environment when none is named."""
    configs = parse_environments(raw)
    if env_name is None:
        return list(configs.values())
    if env_name not in configs:
        raise ConfigError(f"cdk.json context env={env_name!r} is not one of {sorted(configs)}")
    return [configs[env_name]]
